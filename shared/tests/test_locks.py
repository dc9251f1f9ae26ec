"""The advisory-lock registry: one place for every lock number, none shared by two features, and the numbers
the running system already uses kept (an old replica and a new one must take the same lock during a deploy)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from handshake_shared.db import Database
from handshake_shared.locks import AdvisoryLock, lock_for_transaction

# the numbers shipped before the registry existed, as written in each service: never to change
SHIPPED = {
    "OUTB": 0x4F555442,
    "INVR": 0x494E5652,
    "HOLD": 0x484F4C44,
    "PAYO": 0x5041594F,
    "PRKD": 0x50524B44,
    "GAPS": 0x47415053,
    "RECO": 0x5245434F,
}


@pytest.mark.unit  # pure: runs in `make test-unit`
def test_no_two_locks_share_a_number_or_a_tag() -> None:
    values = [lock.value for lock in AdvisoryLock]
    tags = [lock.tag for lock in AdvisoryLock]
    assert len(set(values)) == len(values) == len(AdvisoryLock.__members__)
    assert len(set(tags)) == len(tags)


@pytest.mark.unit  # pure: runs in `make test-unit`
def test_every_lock_is_the_ascii_of_its_four_letter_tag_and_keeps_its_shipped_number() -> None:
    for lock in AdvisoryLock:
        assert len(lock.tag) == 4 and lock.tag.isascii() and lock.tag.isupper(), lock
        assert lock.value == int.from_bytes(lock.tag.encode(), "big")
    assert {lock.tag: lock.value for lock in AdvisoryLock} == SHIPPED


@pytest.fixture
async def db(stack):
    database = Database(str(stack.postgres.create_database(f"t_locks_{uuid.uuid4().hex[:10]}")), pool_size=2)
    yield database
    await database.dispose()


async def test_the_helper_takes_the_very_lock_an_older_replica_takes_with_its_own_sql(db: Database) -> None:
    """During a rolling deploy an old replica still runs `pg_advisory_xact_lock(<literal>, hashtext(key))`:
    while the new helper holds an order's lock, the old form cannot have it, and another order's is free."""
    async with db.transaction() as new_replica:
        await lock_for_transaction(new_replica, AdvisoryLock.INVENTORY_ORDER, "order-1")
        async with db.transaction() as old_replica:
            taken = "SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))"
            same = (await old_replica.execute(text(taken), {"ns": 0x494E5652, "key": "order-1"})).scalar()
            other = (await old_replica.execute(text(taken), {"ns": 0x494E5652, "key": "order-2"})).scalar()
            assert (same, other) == (False, True)


async def test_a_namespace_lock_is_released_when_its_transaction_ends(db: Database) -> None:
    async with db.transaction() as first:
        await lock_for_transaction(first, AdvisoryLock.ORDER_HOLDER, "customer:c-1")
    async with db.transaction() as second:
        taken = "SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))"
        assert (
            await second.execute(text(taken), {"ns": AdvisoryLock.ORDER_HOLDER.value, "key": "customer:c-1"})
        ).scalar()


async def test_a_number_outside_the_registry_or_the_wrong_form_is_refused(db: Database) -> None:
    with pytest.raises(ValueError):
        async with db.held_by_one_replica(0x12345678):
            pass
    with pytest.raises(ValueError):
        async with db.held_by_one_replica(AdvisoryLock.OUTBOX_BUCKET):
            pass
    async with db.transaction() as conn:
        with pytest.raises(ValueError):
            await lock_for_transaction(conn, AdvisoryLock.GAP_SCAN, "x")
