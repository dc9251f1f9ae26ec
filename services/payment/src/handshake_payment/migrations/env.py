from handshake_payment.db import metadata
from handshake_shared.migrations import run_env

run_env(metadata)
