"""A lifecycle's writer: the declared table checked, the state compared-and-set, the audit row written and the
metric counted, the same way in every service.

Each service keeps its own tables (the row with the state, an audit table of from/to/reason plus whatever the
service records: actor, causing event, provider event) and its own metric names; this is the one code that
moves a state and leaves its trace. Everything happens on the caller's connection, so the move, its audit row
and the events the caller emits commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar

import structlog
from prometheus_client import Counter
from sqlalchemy import Table, bindparam, func, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared.statemachine import InvalidTransition, TransitionTable

S = TypeVar("S", bound=StrEnum)

log = structlog.get_logger("transitions")


class TransitionLost(Exception):
    """The row was no longer in the state the move started from: someone else moved it first."""

    def __init__(self, lifecycle: str, key: Any, current: str, target: str) -> None:
        super().__init__(f"{lifecycle} {key} left {current} before it could move to {target}")
        self.key = key


class AuditedLifecycle(Generic[S]):
    """`rows` holds the state (`state` column, primary key `key_column`, an `updated_at` column); `audit` gets one
    row per applied transition: `subject` (the row's key), from_state, to_state, reason and any extra columns the
    caller passes. `applied` and `refused` are the service's counters, labelled (from_state, to_state)."""

    def __init__(
        self,
        lifecycle: TransitionTable[S],
        *,
        rows: Table,
        audit: Table,
        subject: str,
        key_column: str = "id",
        applied: Counter | None = None,
        refused: Counter | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.name = lifecycle.name
        self.rows = rows
        self.audit = audit
        self.subject = subject
        self.applied = applied
        self.refused_counter = refused
        key = rows.c[key_column]
        # built once: the same statements for every move (handshake_shared.db.built_once says why)
        self._move = (
            update(rows)
            .where(key == bindparam("b_key"), rows.c.state == bindparam("b_from"))
            .values(state=bindparam("b_to"), updated_at=func.now())
            .returning(key)
        )
        self._audit = insert(audit)

    def allows(self, current: S, target: S, *, reason: str = "", **log_fields: Any) -> bool:
        """Whether the table allows the step; a refusal is counted and logged, never applied."""
        if self.lifecycle.can(current, target):
            return True
        self.refused(current, target, reason=reason, **log_fields)
        return False

    def refused(self, current: S | str, target: S | str, *, reason: str = "", **log_fields: Any) -> None:
        """Count and log a step the table refused (for a writer whose pure domain checked the table already)."""
        if self.refused_counter is not None:
            self.refused_counter.labels(str(current), str(target)).inc()
        log.warning(
            f"{self.name} transition refused",
            lifecycle=self.name,
            current=str(current),
            target=str(target),
            reason=reason,
            **log_fields,
        )

    async def move(
        self,
        conn: AsyncConnection,
        key: Any,
        current: S,
        target: S,
        *,
        reason: str,
        strict: bool = False,
        columns: Mapping[str, Any] | None = None,
        audit: Mapping[str, Any] | None = None,
        log_fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move the row `key` from `current` to `target` if the table allows it and the row is still in
        `current` (compare-and-set), with `columns` set alongside; then its audit row and the count. False when
        refused or lost; `strict` raises instead (InvalidTransition, TransitionLost): for a caller holding the
        row's lock, where either means a bug and the transaction must not commit."""
        fields = dict(log_fields or {})
        if not self.lifecycle.can(current, target):
            self.refused(current, target, reason=reason, **fields)
            if strict:
                raise InvalidTransition(self.name, current, target)
            return False
        if columns:
            stmt = self._move.values(**columns)
            moved = (await conn.execute(stmt, {"b_key": key, "b_from": current, "b_to": target})).first()
        else:
            moved = (await conn.execute(self._move, {"b_key": key, "b_from": current, "b_to": target})).first()
        if moved is None:
            if strict:
                raise TransitionLost(self.name, key, current, target)
            log.warning(f"{self.name} changed under us, transition skipped", target=str(target), **fields)
            return False
        await self.record(conn, key, current, target, reason=reason, audit=audit, log_fields=fields)
        return True

    async def record(
        self,
        conn: AsyncConnection,
        key: Any,
        current: S | None,
        target: S,
        *,
        reason: str,
        audit: Mapping[str, Any] | None = None,
        log_fields: Mapping[str, Any] | None = None,
    ) -> None:
        """The audit row (and count) of a step whose state the caller has written itself, e.g. in one update with
        other columns, under the row's lock. `current` None: the row's creation. The table is checked again
        here, so no writer can leave an audit trail the lifecycle does not allow."""
        if current is not None:
            self.lifecycle.check(current, target)
        await conn.execute(
            self._audit,
            {self.subject: key, "from_state": current, "to_state": target, "reason": reason, **(audit or {})},
        )
        if self.applied is not None and current is not None:
            self.applied.labels(str(current), str(target)).inc()
        if current is not None:
            log.info(
                f"{self.name} transition",
                from_state=str(current),
                to_state=str(target),
                reason=reason,
                **(log_fields or {}),
            )
