from handshake_shared.migrations import run_env
from handshake_webhook_ingest.db import metadata

run_env(metadata)
