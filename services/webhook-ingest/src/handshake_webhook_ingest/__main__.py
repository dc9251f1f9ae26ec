from handshake_shared.entrypoint import main
from handshake_webhook_ingest.app import create_app
from handshake_webhook_ingest.settings import get_settings

if __name__ == "__main__":
    main("handshake_webhook_ingest.migrations", get_settings, create_app)  # type: ignore[arg-type]
