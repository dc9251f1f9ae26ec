from handshake_payment.app import create_app
from handshake_payment.settings import get_settings
from handshake_shared.entrypoint import main

if __name__ == "__main__":
    main("handshake_payment.migrations", get_settings, create_app)  # type: ignore[arg-type]
