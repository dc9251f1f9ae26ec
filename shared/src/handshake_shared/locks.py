"""Every PostgreSQL advisory lock the services take, in one registry.

Advisory locks are named by numbers, and a number two features picked alike would make unrelated work wait on
each other (or, for a try-lock, skip its turn). Each value is the ASCII of a four-letter tag, so a lock seen in
pg_locks says whose it is. The values are part of the running system: replicas of the old and the new version
hold them side by side during a rolling deploy, so a value never changes once shipped; a new lock gets a new
tag here.

Two forms are used. A namespace (`pg_advisory_xact_lock(namespace, key)`) serialises work on one thing (an
order, a holder, a bucket) until the transaction ends. A singleton (`pg_try_advisory_lock(key)`, a session
lock taken through Database.held_by_one_replica) lets one replica at a time do a round of background work.
"""

from __future__ import annotations

from enum import IntEnum, unique

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def _tag(tag: str) -> int:
    return int.from_bytes(tag.encode("ascii"), "big")


@unique
class AdvisoryLock(IntEnum):
    # namespaces: (namespace, key) transaction locks
    OUTBOX_BUCKET = _tag("OUTB")  # the outbox relay, per key-hash bucket: one replica publishes a bucket
    INVENTORY_ORDER = _tag("INVR")  # inventory, per order: one reservation step of an order at a time
    ORDER_HOLDER = _tag("HOLD")  # order, per holder: one holder's checkouts count held units in turn
    PAYMENT_ORDER = _tag("PAYO")  # payment, per order: decisions spanning an order's attempts and refunds
    PAYMENT_PARKING = _tag("PRKD")  # payment, per PaymentIntent: parking and re-applying its early events
    # singletons: session try-locks for one replica's round of background work
    GAP_SCAN = _tag("GAPS")  # webhook-ingest's listing of the provider's events
    RECONCILIATION = _tag("RECO")  # payment's scheduled reconciliation run

    @property
    def tag(self) -> str:
        return self.value.to_bytes(4, "big").decode("ascii")


SINGLETONS = frozenset({AdvisoryLock.GAP_SCAN, AdvisoryLock.RECONCILIATION})

_LOCK_KEY = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))")


async def lock_for_transaction(conn: AsyncConnection, namespace: AdvisoryLock, key: str) -> None:
    """Wait for the lock on `key` in `namespace`; held until the transaction ends (commit or rollback)."""
    if namespace in SINGLETONS:
        raise ValueError(f"{namespace.name} is a singleton lock, taken with Database.held_by_one_replica")
    await conn.execute(_LOCK_KEY, {"ns": int(namespace), "key": key})
