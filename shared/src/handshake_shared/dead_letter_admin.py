"""Admin routes over a service's dead letters: list them, redrive one once its cause is fixed (a bug deployed
away, a missing row created), or discard one that must never be applied. A redrive re-applies the stored message
through its consumer's own handler, with the inbox's dedup, in one transaction with marking the dead letter
resolved and an audit row; a discard resolves and audits it the same way and runs nothing. Each dead letter is
resolved at most once, however many admins press a button at the same time.

The dead-letter transaction also records the event in the inbox (so a redelivery from the broker does not
apply it behind the admin's back); that row is told apart from a real application by its timestamp, which is
the dead letter's own (both are now() of the same transaction). Any other inbox row for the event means it
was applied already: the redrive then runs nothing and says so."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import StringConstraints, ValidationError
from sqlalchemy import LargeBinary, Select, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_shared import metrics
from handshake_shared.admin_api import Authorization, ReasonRequest, staff_with
from handshake_shared.auth import Principal, require_roles
from handshake_shared.consumer import EventConsumer, claim, is_infrastructure_error
from handshake_shared.db import MessagingTables, describe_error
from handshake_shared.envelope import EnvelopeError, parse_event
from handshake_shared.http import Problem
from handshake_shared.logging import event_context

if TYPE_CHECKING:
    from handshake_shared.runtime import Runtime

log = structlog.get_logger("dead-letter-admin")

# the audit outcome of a dead letter resolved without applying it (a redrive's are applied and already_applied)
DISCARDED = "discarded"

# given the locked open dead letter, do what resolving it means and name the outcome, or raise a Problem
Settle = Callable[[AsyncConnection, Row[Any]], Awaitable[str]]

FilterText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$")]


def dead_letter_view(row: Row[Any]) -> dict[str, Any]:
    # the payload stays out: it may hold what only the topic's readers are meant to see
    return {
        "id": row.id,
        "consumer": row.consumer,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.kafka_offset,
        "key": row.message_key,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "payload_bytes": row.payload_bytes,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": row.created_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
    }


class OpenDeadLetters:
    """Sets handshake_dead_letters_open from the table, for the relay's periodic gauge reading. A consumer whose
    dead letters are all resolved goes back to 0 instead of keeping its last count (its alert would never clear),
    and the service's own consumers show 0 before their first dead letter."""

    def __init__(self, tables: MessagingTables, consumers: Callable[[], Iterable[str]]) -> None:
        self.dl = tables.dead_letters
        self.consumers = consumers
        self._shown: set[str] = set()

    async def read(self, conn: AsyncConnection) -> None:
        dl = self.dl
        rows = await conn.execute(
            select(dl.c.consumer, func.count()).where(dl.c.resolved_at.is_(None)).group_by(dl.c.consumer)
        )
        counts = dict.fromkeys((*self._shown, *self.consumers()), 0) | dict(rows.tuples().all())
        for consumer, count in counts.items():
            metrics.DEAD_LETTERS_OPEN.labels(consumer).set(count)
        self._shown = set(counts)


def dead_letter_admin_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/dead-letters", tags=["operations"])
    dl = runtime.tables.dead_letters
    inbox = runtime.tables.inbox
    redrives = runtime.tables.dead_letter_redrives

    admin = staff_with(runtime.settings, "admin")
    # applying a message again is safe for any staff member to ask for (the inbox and the handlers' own guards
    # make a second application nothing); leaving one unapplied for good is an admin's decision
    staff = staff_with(runtime.settings, "support", "finance", "admin")

    def lister(request: Request, authorization: Authorization = None) -> Principal:
        # every dead letter is for admins; those of one order also for the staff who answer for that order
        # (payloads are never shown)
        roles = ("admin",) if request.query_params.get("order_id") is None else ("support", "finance", "admin")
        return require_roles(runtime.settings, authorization, *roles)

    # "payload names the order": the order id's bytes anywhere in the stored message (the envelope's subject and
    # correlation id, the data's order_id, a provider object's metadata), so a message that is not even an
    # event is found too. Dead letters are few (they alert, and retention removes resolved ones), so a scan of
    # those not keyed by the order costs little; most are found by their key, which is the order id.
    def names_order(order_id: str) -> Any:
        return text(f"position(CAST(:dl_order_id AS bytea) IN {dl.name}.payload) > 0").bindparams(
            bindparam("dl_order_id", order_id.encode(), type_=LargeBinary)
        )

    def listing() -> Select[Any]:
        return select(
            dl.c.id,
            dl.c.consumer,
            dl.c.topic,
            dl.c.partition,
            dl.c.kafka_offset,
            dl.c.message_key,
            dl.c.event_id,
            dl.c.event_type,
            dl.c.error,
            dl.c.attempts,
            dl.c.created_at,
            dl.c.resolved_at,
            func.octet_length(dl.c.payload).label("payload_bytes"),
        )

    @router.get("")
    async def list_dead_letters(
        _: Principal = Depends(lister),  # noqa: B008 - a local dependency
        status: Literal["open", "redriven", "discarded", "all"] = "open",
        order_id: Annotated[
            uuid.UUID | None, Query(description="those whose key, envelope or payload names the order")
        ] = None,
        consumer: Annotated[FilterText | None, Query()] = None,
        topic: Annotated[FilterText | None, Query()] = None,
        event_type: Annotated[FilterText | None, Query()] = None,
        # newest first; the next page starts below the last id of this one
        before_id: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        query = listing()
        discarded = select(redrives.c.id).where(redrives.c.dead_letter_id == dl.c.id, redrives.c.outcome == DISCARDED)
        if status == "open":
            query = query.where(dl.c.resolved_at.is_(None))
        elif status == "redriven":
            query = query.where(dl.c.resolved_at.is_not(None), ~discarded.exists())
        elif status == "discarded":
            query = query.where(discarded.exists())
        for column, value in ((dl.c.consumer, consumer), (dl.c.topic, topic), (dl.c.event_type, event_type)):
            if value is not None:
                query = query.where(column == value)
        if order_id is not None:
            query = query.where(or_(dl.c.message_key == str(order_id), names_order(str(order_id))))
        if before_id is not None:
            query = query.where(dl.c.id < before_id)
        async with runtime.db.read() as conn:
            rows = (await conn.execute(query.order_by(dl.c.id.desc()).limit(limit + 1))).all()
        items = [dead_letter_view(r) for r in rows[:limit]]
        return {
            "service": runtime.service,
            "items": items,
            "next_before_id": items[-1]["id"] if len(rows) > limit else None,
        }

    def consumer_named(name: str) -> EventConsumer | None:
        return next((c for c in runtime.consumers if c.name == name), None)

    def resolving(
        settle: Settle, *, noun: str, past: str, allowed: Callable[..., Principal]
    ) -> Callable[..., Awaitable[dict[str, Any]]]:
        """The route of one way to resolve a dead letter, and what redrive and discard share: the open dead letter
        locked, `settle` deciding the outcome (or refusing with a problem, which rolls everything back), then the
        dead letter resolved and audited in the same transaction. The row lock makes concurrent admins take
        turns; the later ones find it resolved."""

        async def route(
            dead_letter_id: Annotated[int, Path(ge=1)],
            body: ReasonRequest,
            principal: Principal = Depends(allowed),  # noqa: B008 - a local dependency
        ) -> dict[str, Any]:
            async with runtime.db.transaction() as conn:
                row = (
                    await conn.execute(
                        listing().add_columns(dl.c.payload).where(dl.c.id == dead_letter_id).with_for_update()
                    )
                ).first()
                if row is None:
                    raise Problem(404, "Dead letter not found", type="dead-letter-not-found")
                if row.resolved_at is not None:
                    earlier = await conn.scalar(select(redrives.c.outcome).where(redrives.c.dead_letter_id == row.id))
                    how = "discarded" if earlier == DISCARDED else "redriven"
                    raise Problem(
                        409,
                        f"Dead letter already {how}",
                        f"dead letter {dead_letter_id} was {how} at {row.resolved_at.isoformat()}",
                        type=f"dead-letter-already-{how}",
                    )
                outcome = await settle(conn, row)
                resolved_at = (
                    await conn.execute(
                        update(dl).where(dl.c.id == row.id).values(resolved_at=func.now()).returning(dl.c.resolved_at)
                    )
                ).scalar_one()
                audit_id = (
                    await conn.execute(
                        insert(redrives)
                        .values(
                            dead_letter_id=row.id,
                            consumer=row.consumer,
                            event_id=row.event_id,
                            event_type=row.event_type,
                            actor=principal.subject,
                            reason=body.reason,
                            outcome=outcome,
                        )
                        .returning(redrives.c.id)
                    )
                ).scalar_one()
            log.warning(
                f"dead letter {past}",
                dead_letter_id=row.id,
                consumer=row.consumer,
                event_id=row.event_id,
                outcome=outcome,
                actor=principal.subject,
                reason=body.reason,
            )
            view = dead_letter_view(row)
            view["resolved_at"] = resolved_at.isoformat()
            return {
                **view,
                "outcome": outcome,
                f"{noun}_id": audit_id,
                f"{past}_by": principal.subject,
                "reason": body.reason,
            }

        return route

    async def apply_again(conn: AsyncConnection, row: Row[Any]) -> str:
        consumer = consumer_named(row.consumer)
        if consumer is None:
            raise Problem(
                409,
                "Dead letter not redrivable",
                f"no consumer {row.consumer!r} runs in this service",
                type="dead-letter-not-redrivable",
            )
        try:
            event = parse_event(bytes(row.payload))
        except EnvelopeError as exc:
            raise Problem(
                409,
                "Dead letter not redrivable",
                f"the stored message is not an event: {exc}",
                type="dead-letter-not-redrivable",
            ) from None
        found = consumer.handler_for(event.type)
        if found is None:
            raise Problem(
                409,
                "Dead letter not redrivable",
                f"{consumer.name} has no handler for {event.type}",
                type="dead-letter-not-redrivable",
            )
        model, handler = found
        try:
            payload = model.model_validate(event.data)
        except ValidationError as exc:
            raise Problem(
                409, "Dead letter not redrivable", f"invalid payload: {exc}"[:1000], type="dead-letter-not-redrivable"
            ) from None
        with event_context(event):
            # the dead letter's own inbox row (same transaction, same now()) is not an application
            await conn.execute(
                delete(inbox).where(
                    inbox.c.consumer == consumer.name,
                    inbox.c.event_id == event.id,
                    inbox.c.processed_at == row.created_at,
                )
            )
            if not await claim(conn, runtime.tables, consumer.name, event):
                return "already_applied"
            try:
                await handler(conn, event, payload)
            except Exception as exc:
                # the transaction rolls back: the dead letter stays open, to be redriven again later
                described = describe_error(exc)
                log.warning("dead letter redrive failed", dead_letter_id=row.id, error=described)
                if is_infrastructure_error(exc):
                    raise Problem(503, "Redrive failed", described, type="dependency-unavailable") from None
                raise Problem(409, "Redrive failed", described[:1000], type="dead-letter-redrive-failed") from None
            return "applied"

    async def leave_unapplied(conn: AsyncConnection, row: Row[Any]) -> str:
        # the dead letter's own inbox row stays: the broker delivering the message again still does nothing
        return DISCARDED

    router.add_api_route(
        "/{dead_letter_id}/redrive",
        resolving(apply_again, noun="redrive", past="redriven", allowed=staff),
        methods=["POST"],
        name="redrive",
    )
    router.add_api_route(
        "/{dead_letter_id}/discard",
        resolving(leave_unapplied, noun="discard", past="discarded", allowed=admin),
        methods=["POST"],
        name="discard",
        description="For a dead letter that must never be applied (not an event, no handler for its "
        "type, an invalid payload, or an operator's decision): resolved and audited like a redrive, "
        "and nothing runs.",
    )

    return router
