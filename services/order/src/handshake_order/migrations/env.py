from handshake_order.db import metadata
from handshake_shared.migrations import run_env

run_env(metadata)
