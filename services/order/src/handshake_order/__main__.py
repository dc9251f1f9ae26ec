from handshake_order.app import create_app
from handshake_order.settings import get_settings
from handshake_shared.entrypoint import main

if __name__ == "__main__":
    main("handshake_order.migrations", get_settings, create_app)  # type: ignore[arg-type]
