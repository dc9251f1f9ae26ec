import os
from pathlib import Path

from handshake_payment.app import create_app
from handshake_payment.settings import get_settings
from handshake_shared.entrypoint import main

SERVICE_DIR = Path(os.environ.get("HANDSHAKE_SERVICE_DIR") or Path(__file__).resolve().parents[2])

if __name__ == "__main__":
    main(SERVICE_DIR, get_settings(), create_app)  # type: ignore[arg-type]
