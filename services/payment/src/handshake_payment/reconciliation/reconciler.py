"""Reconciliation with the provider: what Stripe holds is the truth, our rows catch up with it.

A run (scheduled every reconciliation_interval_seconds, or asked for by finance/admin) looks at:

  * attempts with an operation whose recovery point is not `finished` longer than
    reconciliation_pending_after_seconds (the request was dead-lettered half-way, the process died, the
    provider was still settling): finished by the operation's own phases (phases.py) from that point, then
    its outcome in a transaction of its own, one operation after the other:
      - intent creation: the intent looked for by metadata.attempt_id before any is created, then
        payment.intent_created (or payment.failed when the provider refuses it), or, for an attempt the order
        cancelled meanwhile, its intent cancelled at the provider;
      - capture: captured under its key with the amount the order asked (or found captured), then
        payment.succeeded; or its refusal recorded (payment.capture_failed);
      - cancel: the intent cancelled at the provider (or found paid), then payment.canceled (or the success);
      - giving back a duplicate: its automatic refund made (or found) or its authorization released, then
        payment.refunded (automatic) or payment.canceled;
  * attempts left waiting (requires_payment, processing, authorized; failed ones for a day, as Stripe lets
    the customer retry a declined intent) longer than reconciliation_pending_after_seconds: the PaymentIntent is retrieved and what it says is applied through
    the very path a webhook takes (ProviderEventIntake.apply_intent_fact): a success we never heard of (the
    browser paid, the webhook never came) becomes succeeded + payment.succeeded, a cancel or decline
    likewise, an amount or currency other than asked becomes payment.mismatch (never payment.succeeded);
  * refunds whose recovery point is not `finished` that long: looked up at the provider by
    metadata.refund_id and, when none exists, created through the usual refund phases (same lease and
    guards), then succeeded + payment.refunded.

Each repair is its own transaction, with the run id as the causing event id in the audit rows (reason
`reconciliation: ...`); whatever a second run finds was already applied is refused by the lifecycle tables,
so runs are idempotent and two replicas running at once announce nothing twice. Every run is a row in
reconciliation_runs and a sample in the handshake_reconciliation_* metrics."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Column, Table, and_, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_payment import SERVICE, metrics
from handshake_payment.db import payment_attempts, reconciliation_runs, refunds
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.attempts import provider_target
from handshake_payment.domain.recovery import FINISHED
from handshake_payment.payments.cancel import Cancel
from handshake_payment.payments.capture import Capture
from handshake_payment.payments.holding import Holding
from handshake_payment.payments.intents import IntentCreation
from handshake_payment.provider_events.intake import ProviderEventIntake
from handshake_payment.refunds.requests import Refunds
from handshake_payment.settings import PaymentSettings
from handshake_payment.store import attempts as repo
from handshake_payment.store import refunds as refund_repo
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.db import Database
from handshake_shared.envelope import CloudEvent, build_event
from handshake_shared.locks import AdvisoryLock
from handshake_shared.loops import BackgroundLoop
from handshake_shared.retention import RetentionJob, purge

log = structlog.get_logger("payment")


KIND = "provider"
PENDING_STATES = (A.REQUIRES_PAYMENT, A.PROCESSING, A.AUTHORIZED)
# Stripe hands a declined intent back to requires_payment_method: the customer may still pay it with
# another card, so a failed attempt is looked at too while its checkout can still be going on
FAILED_WATCH = timedelta(hours=24)

# PaymentIntent status -> the provider event type that reports it (a webhook we may never have received)
_STATUS_EVENTS = {
    "succeeded": "payment_intent.succeeded",
    "canceled": "payment_intent.canceled",
    "processing": "payment_intent.processing",
    "requires_capture": "payment_intent.amount_capturable_updated",
}


def _event_type_for(intent: dict[str, Any]) -> str | None:
    status = intent.get("status")
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return "payment_intent.payment_failed"
    return _STATUS_EVENTS.get(str(status))


@dataclass(frozen=True)
class _Operation:
    """An operation of an attempt with a recovery point of its own (domain/recovery.py), and the feature's
    finish: its phases from the row's point, then its outcome in a transaction of its own."""

    kind: str  # names its repairs when the attempt's state does not change
    point: Column[Any]
    finish: Callable[[repo.AttemptRow, CloudEvent], Awaitable[None]]


@dataclass
class _Tally:
    checked: int = 0
    repaired: int = 0
    flagged: int = 0
    errors: int = 0
    detail: dict[str, Any] = field(default_factory=lambda: {"repairs": [], "flagged": [], "errors": []})


# called in the transaction that records a run's start (with its id) and in the one that records its end (with
# its record): what a caller keeps about the run commits or rolls back with the run's own row
RunHook = Callable[[AsyncConnection, Any], Awaitable[None]]


def run_record(row: Any) -> dict[str, Any]:
    return {
        "run_id": str(row.id),
        "kind": row.kind,
        "trigger": row.trigger,
        "requested_by": row.requested_by,
        "order_id": str(row.order_id) if row.order_id else None,
        "note": (row.detail or {}).get("note"),
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "checked": row.checked,
        "repaired": row.repaired,
        "flagged": row.flagged,
        "errors": row.errors,
        "detail": row.detail,
    }


def run_retention(settings: PaymentSettings) -> RetentionJob | None:
    """Deletes finished runs older than the retention; a run still in progress is kept."""
    return purge(
        "reconciliation_runs",
        reconciliation_runs,
        age_column=reconciliation_runs.c.started_at,
        keep=timedelta(days=settings.reconciliation_retention_days),
        where=[reconciliation_runs.c.finished_at.is_not(None)],
    )


class Reconciler:
    def __init__(
        self,
        db: Database,
        *,
        intents: IntentCreation,
        capture: Capture,
        cancel: Cancel,
        holding: Holding,
        intake: ProviderEventIntake,
        refunds: Refunds,
        gateway: StripeGateway,
        settings: PaymentSettings,
    ) -> None:
        self.db = db
        self.operations = (
            _Operation("intent", payment_attempts.c.recovery_point, intents.finish),
            _Operation("capture", payment_attempts.c.capture_point, capture.finish),
            _Operation("cancel", payment_attempts.c.cancel_point, cancel.finish),
            _Operation("give_back", payment_attempts.c.give_back_point, holding.finish),
        )
        self.intake = intake
        self.refunds = refunds
        self.gateway = gateway
        self.interval = settings.reconciliation_interval_seconds
        self.pending_after = settings.reconciliation_pending_after_seconds
        self.lease_seconds = settings.provider_call_lease_seconds
        self._lock = asyncio.Lock()  # one run at a time per process; across replicas see _scheduled_run
        # The first run comes one interval after start: a replica restarting in a loop should not ask the
        # provider about everything waiting on every start. A run calls the provider item by item, so a stop
        # gives it longer than a database batch to finish the item at hand and record itself.
        self.loop = BackgroundLoop(
            "reconciliation",
            self._scheduled_run,
            interval_seconds=self.interval,
            run_at_start=False,
            stop_grace_seconds=20.0,
        )

    async def _scheduled_run(self) -> None:
        """The loop's iteration. Stopping the service sets the loop's `stopping`, and the run in progress ends
        after the item at hand and records what it did: a cancel landing between a repair's commit and the
        run's own record (or on the commit itself) would leave repairs made with nothing saying so, and the
        run's row claiming zero. Only a run still going after the loop's grace is cancelled, and even then it
        records what it had counted."""
        # one replica's run per interval: another replica's would ask Stripe the same questions again (safe by
        # the tables, but twice the provider calls and a second run record)
        async with self.db.held_by_one_replica(AdvisoryLock.RECONCILIATION) as mine:
            if not mine:
                metrics.RECONCILIATION_RUNS.labels("skipped").inc()
                return
            await self.run_once(trigger="scheduled", stop=self.loop.stopping)

    async def run_once(
        self,
        trigger: str = "manual",
        *,
        requested_by: str | None = None,
        note: str | None = None,
        stop: asyncio.Event | None = None,
        order_id: uuid.UUID | None = None,
        on_start: RunHook | None = None,
        on_finish: RunHook | None = None,
        raise_failure: bool = True,
    ) -> dict[str, Any]:
        """One run over everything due, or, with order_id, over that order's attempts and refunds whatever their
        age (staff asked about this order now; the leases still keep it off a provider call in progress). With
        stop set it ends after the item at hand and says so in its detail; cancelled outright, it still records
        the repairs it had counted before the cancel goes on. raise_failure=False answers a run that broke off
        with its record (errors counted) instead of raising."""
        stop = stop if stop is not None else asyncio.Event()
        # a run over one order touches only its rows, which the lifecycle tables keep safe from a concurrent
        # run (as between replicas): it need not wait for a full run in progress
        async with self._lock if order_id is None else contextlib.nullcontext():
            run_id = uuid.uuid4()
            async with self.db.transaction() as tx:
                await tx.execute(
                    insert(reconciliation_runs).values(
                        id=run_id,
                        kind=KIND,
                        trigger=trigger,
                        requested_by=requested_by,
                        order_id=order_id,
                        detail={"note": note} if note else {},
                    )
                )
                if on_start is not None:
                    await on_start(tx, run_id)
            tally = _Tally()
            if note:
                tally.detail["note"] = note
            failure: BaseException | None = None
            try:
                for sweep in (self._sweep_unfinished_attempts, self._sweep_attempts, self._sweep_refunds):
                    if stop.is_set():
                        break
                    await sweep(run_id, tally, stop, order_id)
            except asyncio.CancelledError as exc:  # broken off: what it counted so far is still recorded
                failure = exc
            except Exception as exc:
                failure = exc
                tally.errors += 1
                tally.detail["errors"].append({"error": repr(exc)[:500]})
            if isinstance(failure, asyncio.CancelledError):
                tally.detail["stopped"] = "cancelled"
            elif stop.is_set():
                tally.detail["stopped"] = "asked to stop: what it did not reach waits for the next run"
            async with self.db.transaction() as tx:
                await tx.execute(
                    update(reconciliation_runs)
                    .where(reconciliation_runs.c.id == run_id)
                    .values(
                        finished_at=func.now(),
                        checked=tally.checked,
                        repaired=tally.repaired,
                        flagged=tally.flagged,
                        errors=tally.errors,
                        detail=tally.detail,
                    )
                )
                row = (await tx.execute(select(reconciliation_runs).where(reconciliation_runs.c.id == run_id))).one()
                if on_finish is not None:
                    await on_finish(tx, run_record(row))
            outcome = (
                "failed"
                if failure
                else "errors"
                if tally.errors
                else "flagged"
                if tally.flagged
                else "repaired"
                if tally.repaired
                else "clean"
            )
            metrics.RECONCILIATION_RUNS.labels(outcome).inc()
            log.info(
                "reconciliation run",
                run_id=str(run_id),
                trigger=trigger,
                outcome=outcome,
                checked=tally.checked,
                repaired=tally.repaired,
                flagged=tally.flagged,
                errors=tally.errors,
            )
            if failure is not None and (raise_failure or isinstance(failure, asyncio.CancelledError)):
                raise failure
            return run_record(row)

    def _cause(self, run_id: uuid.UUID, order_id: uuid.UUID, data: dict[str, Any]) -> CloudEvent:
        """The run, as the causing event of what it applies: its id is the audit rows' event_id and the
        causationid of the facts it emits, so each repair points at its reconciliation_runs row."""
        return build_event(
            service=SERVICE,
            type="payment.reconciliation_run",
            order_id=str(order_id),
            sequence=1,
            data={"run_id": str(run_id), **data},
            event_id=run_id,
        )

    # -- attempts and refunds an operation left half-way -----------------------------------------

    def _unfinished(self, table: Table, point: Column[Any], order_id: uuid.UUID | None) -> list[Any]:
        """The rows whose recovery point is not finished (phases.py), waiting long enough: attempts with an
        operation stopped half-way, refunds the provider call or its outcome never reached. One a handler is
        calling the provider for right now, under its lease, is that handler's business."""
        return [
            point != FINISHED,  # NULL (never asked) is not selected either
            self._due(table.c.updated_at, order_id),
            *self._of_order(table, order_id),
            or_(table.c.locked_at.is_(None), table.c.locked_at < func.now() - timedelta(seconds=self.lease_seconds)),
        ]

    def _due(self, column: Any, order_id: uuid.UUID | None) -> Any:
        """Waiting long enough to be looked at: everything of the one order asked about, else after pending_after."""
        if order_id is not None:
            return true()
        return column <= func.now() - timedelta(seconds=self.pending_after)

    async def _sweep_unfinished_attempts(
        self, run_id: uuid.UUID, tally: _Tally, stop: asyncio.Event, order_id: uuid.UUID | None = None
    ) -> None:
        """Attempts with an operation stopped half-way (its request was dead-lettered, the process died, the
        order closed while the intent was being made): the operation's own phases finish it."""
        for operation in self.operations:
            if stop.is_set():
                return
            finish = self._finishing(operation)
            await self._sweep_unfinished(
                payment_attempts, operation.point, "attempt_id", finish, run_id, tally, stop, order_id
            )

    async def _sweep_refunds(
        self, run_id: uuid.UUID, tally: _Tally, stop: asyncio.Event, order_id: uuid.UUID | None = None
    ) -> None:
        """Refunds whose provider call or outcome never came: the refund's own phases finish them."""
        await self._sweep_unfinished(
            refunds, refunds.c.recovery_point, "refund_id", self._settle_refund, run_id, tally, stop, order_id
        )

    async def _sweep_unfinished(
        self,
        table: Table,
        point: Column[Any],
        key: str,
        finish: Callable[[uuid.UUID, Any, _Tally], Awaitable[None]],
        run_id: uuid.UUID,
        tally: _Tally,
        stop: asyncio.Event,
        order_id: uuid.UUID | None,
    ) -> None:
        """The one sweep over rows whose recovery point is not finished."""
        async with self.db.read() as c:
            rows = (
                await c.execute(
                    select(table).where(*self._unfinished(table, point, order_id)).order_by(table.c.updated_at)
                )
            ).all()
        await self._each(rows, key, finish, run_id, tally, stop)

    @staticmethod
    async def _each(
        rows: Sequence[Any],
        key: str,
        handle: Callable[[uuid.UUID, Any, _Tally], Awaitable[None]],
        run_id: uuid.UUID,
        tally: _Tally,
        stop: asyncio.Event,
    ) -> None:
        """Every row looked at, each on its own: one that cannot be is counted and the run goes on."""
        for row in rows:
            if stop.is_set():
                return
            tally.checked += 1
            try:
                await handle(run_id, row, tally)
            except Exception as exc:
                tally.errors += 1
                tally.detail["errors"].append(
                    {key: str(row.id), "order_id": str(row.order_id), "error": repr(exc)[:500]}
                )
                log.warning("reconciliation could not bring a row in line", **{key: str(row.id)}, error=repr(exc))

    def _finishing(self, operation: _Operation) -> Callable[[uuid.UUID, Any, _Tally], Awaitable[None]]:
        """Finish one attempt's operation; a repair when the attempt's state changed or the operation ended."""

        async def finish(run_id: uuid.UUID, attempt: Any, tally: _Tally) -> None:
            cause = self._cause(run_id, attempt.order_id, {"attempt_id": str(attempt.id), "provider_status": None})
            await operation.finish(attempt, cause)
            async with self.db.read() as conn:
                current = await self._attempt(conn, attempt.id)
            reached = getattr(current, operation.point.name)
            if current.state == attempt.state and reached != FINISHED:
                return
            tally.repaired += 1
            kind = f"payment_{current.state}" if current.state != attempt.state else f"{operation.kind}_finished"
            metrics.RECONCILIATION_REPAIRS.labels(kind).inc()
            tally.detail["repairs"].append(
                {
                    "attempt_id": str(attempt.id),
                    "order_id": str(attempt.order_id),
                    "payment_intent_id": current.provider_intent_id,
                    "from": attempt.state,
                    "to": current.state,
                    "operation": operation.kind,
                    "outcome": reached,
                }
            )

        return finish

    # -- attempts waiting for the provider ------------------------------------------------------

    async def _sweep_attempts(
        self, run_id: uuid.UUID, tally: _Tally, stop: asyncio.Event, order_id: uuid.UUID | None = None
    ) -> None:
        async with self.db.read() as c:
            waiting = (
                await c.execute(
                    select(payment_attempts)
                    .where(
                        or_(
                            payment_attempts.c.state.in_([s.value for s in PENDING_STATES]),
                            and_(
                                payment_attempts.c.state == A.FAILED,
                                # asked about one order, its failed attempts are looked at whatever their age
                                payment_attempts.c.updated_at > func.now() - FAILED_WATCH
                                if order_id is None
                                else true(),
                            ),
                        ),
                        payment_attempts.c.provider_intent_id.is_not(None),
                        self._due(payment_attempts.c.updated_at, order_id),
                        *self._of_order(payment_attempts, order_id),
                    )
                    .order_by(payment_attempts.c.updated_at)
                )
            ).all()
        await self._each(waiting, "attempt_id", self._check_attempt, run_id, tally, stop)

    async def _check_attempt(self, run_id: uuid.UUID, attempt: Any, tally: _Tally) -> None:
        intent = (await self.gateway.retrieve_intent(attempt.provider_intent_id)).to_dict()
        provider_type = _event_type_for(intent)
        if provider_type is None:
            return  # still waiting for the customer at the provider too
        status = str(intent.get("status"))
        if provider_target(provider_type, status) == attempt.state:
            return  # what we already know
        cause = self._cause(run_id, attempt.order_id, {"attempt_id": str(attempt.id), "provider_status": status})
        async with self.db.transaction() as conn:
            outcome = await self.intake.apply_intent_fact(
                conn,
                cause,
                provider_type=provider_type,
                obj=intent,
                status=status,
                intent_id=intent["id"],
                attempt_hint=str(attempt.id),
                amount_hint=None,
                currency_hint=None,
                provider_event_id=None,
                reason=f"reconciliation: the provider reports the payment intent {status}",
                detected_by="reconciliation",
            )
            current = await self._attempt(conn, attempt.id)
        item = {
            "attempt_id": str(attempt.id),
            "order_id": str(attempt.order_id),
            "payment_intent_id": intent["id"],
            "from": attempt.state,
            "to": current.state,
            "provider_status": status,
        }
        if outcome == "mismatch":
            tally.flagged += 1
            metrics.RECONCILIATION_MISMATCHES.inc()
            tally.detail["flagged"].append({**item, **(current.provider_mismatch or {})})
        elif current.state != attempt.state:
            tally.repaired += 1
            metrics.RECONCILIATION_REPAIRS.labels(f"payment_{current.state}").inc()
            tally.detail["repairs"].append({**item, "outcome": outcome})

    @staticmethod
    async def _attempt(conn: AsyncConnection, attempt_id: uuid.UUID) -> Any:
        return (await conn.execute(select(payment_attempts).where(payment_attempts.c.id == attempt_id))).one()

    # -- refunds waiting for the provider -------------------------------------------------------

    @staticmethod
    def _of_order(table: Any, order_id: uuid.UUID | None) -> list[Any]:
        return [] if order_id is None else [table.c.order_id == order_id]

    async def _settle_refund(self, run_id: uuid.UUID, refund: Any, tally: _Tally) -> None:
        refunds_ = self.refunds
        refusal = await refunds_.execute(refund.id)  # finds it by metadata.refund_id, else creates it
        cause = self._cause(run_id, refund.order_id, {"refund_id": str(refund.id)})
        async with self.db.transaction() as conn:
            await refunds_.finish(conn, refund.id, refusal, cause, via="reconciliation")
            current = await refund_repo.get(conn, refund.id)
        assert current is not None
        if current.state != refund.state:
            tally.repaired += 1
            metrics.RECONCILIATION_REPAIRS.labels(f"refund_{current.state}").inc()
            tally.detail["repairs"].append(
                {
                    "refund_id": str(refund.id),
                    "order_id": str(refund.order_id),
                    "from": refund.state,
                    "to": current.state,
                    "provider_refund_id": current.provider_refund_id,
                }
            )


async def list_runs(
    conn: AsyncConnection, limit: int = 50, *, order_id: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Newest first; with order_id, the runs asked for that order and the runs that repaired, flagged or failed
    on one of its attempts or refunds."""
    query = select(reconciliation_runs)
    if order_id is not None:
        named = [{"order_id": str(order_id)}]
        query = query.where(
            or_(
                reconciliation_runs.c.order_id == order_id,
                *(reconciliation_runs.c.detail.contains({part: named}) for part in ("repairs", "flagged", "errors")),
            )
        )
    rows = await conn.execute(query.order_by(reconciliation_runs.c.started_at.desc()).limit(limit))
    return [run_record(r) for r in rows]
