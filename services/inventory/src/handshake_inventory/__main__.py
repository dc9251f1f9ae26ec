from handshake_inventory.app import create_app
from handshake_inventory.settings import get_settings
from handshake_shared.entrypoint import main

if __name__ == "__main__":
    main("handshake_inventory.migrations", get_settings, create_app)  # type: ignore[arg-type]
