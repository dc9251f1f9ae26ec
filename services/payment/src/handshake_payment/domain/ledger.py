"""The payment ledger of one order: what payment does when a fact arrives. Pure: no I/O, no clock.

Handlers load the order's view (its attempts and refunds) under the order lock, ask one function here for
a Decision and execute it (attempt_store.apply writes it: transitions with their audit rows, refund rows,
outbox events); provider calls are made by the caller with the idempotency key the Decision names, outside
any transaction. Because this is pure, the ledger property test drives it with random, duplicated and
reordered facts and checks the money rules:

  * at most one attempt of an order holds its money (authorized or captured, not a duplicate); a second
    one is a duplicate whose money goes back (an automatic refund, or its authorization released);
  * refunds of a capture that have not failed never sum above what it captured;
  * every provider call carries a key derived from the ids it is about, so a redelivered fact asks the
    provider the same question with the same key;
  * a fact delivered twice announces nothing the first delivery did not already announce."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from handshake_payment.domain.attempts import ATTEMPT_LIFECYCLE, HOLDS_PAYMENT, AttemptState
from handshake_payment.domain.recovery import (
    AttemptPoint,
    CancelPoint,
    CapturePoint,
    GiveBackPoint,
    RefundPoint,
    advances,
    unfinished,
)
from handshake_payment.domain.refunds import (
    CURRENCY_MISMATCH,
    DUPLICATE_CAPTURE,
    EXCEEDS_CAPTURED,
    REFUND_LIFECYCLE,
    RefundState,
    automatic_refund_id,
    refusal_reason,
)
from handshake_shared.events import payment as pay
from handshake_shared.events.base import Payload

A = AttemptState
R = RefundState

DUPLICATE_AUTHORIZATION = "duplicate_authorization"
AUTHORIZATION_GONE = "authorization_canceled"
CAPTURE_REFUSED = "capture_refused"  # a refused capture whose provider error carries no code
REFUNDED_AT_PROVIDER = "refunded at the provider"
# an attempt in these states has nothing left open at the provider
CLOSED_STATES = (A.SUCCEEDED, A.CANCELED, A.CAPTURE_FAILED)


# -- provider idempotency keys: the one place they are built ---------------------------------------------
# Their values are what rows in flight were created with; changing one would let a redelivery ask the
# provider a second time under another key.


def create_intent_key(attempt_id: uuid.UUID) -> str:
    return f"handshake-attempt-{attempt_id}-create-intent"


def cancel_key(attempt_id: uuid.UUID) -> str:
    return f"handshake-attempt-{attempt_id}-cancel"


def capture_key(attempt_id: uuid.UUID) -> str:
    return f"handshake-attempt-{attempt_id}-capture"


def refund_key(refund_id: uuid.UUID) -> str:
    return f"refund-{refund_id}"


# -- the view ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    id: uuid.UUID
    order_id: uuid.UUID
    state: AttemptState
    amount: int
    currency: str
    intent_id: str | None = None
    amount_captured: int | None = None
    duplicate_of: uuid.UUID | None = None
    # where capture, cancel and giving back a duplicate stand (domain/recovery.py), and what they were asked
    capture_point: CapturePoint | None = None
    capture_amount: int | None = None
    cancel_point: CancelPoint | None = None
    cancel_code: str | None = None
    cancel_reason: str | None = None
    give_back_point: GiveBackPoint | None = None
    # why the attempt ended; a refused capture keeps the provider's answer here while it releases the intent
    failure_code: str | None = None
    failure_message: str | None = None

    @property
    def holds_payment(self) -> bool:
        return self.state in HOLDS_PAYMENT and self.duplicate_of is None

    @property
    def captured(self) -> int:
        """What a captured attempt took: a partial capture takes less than was asked."""
        return self.amount_captured if self.amount_captured is not None else self.amount


@dataclass(frozen=True)
class Refund:
    id: uuid.UUID
    order_id: uuid.UUID
    attempt_id: uuid.UUID | None
    amount: int
    currency: str
    state: RefundState
    reason: str
    automatic: bool = False
    requested_by: str | None = None
    provider_refund_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    @property
    def counts(self) -> bool:
        """Counts against its capture: refunded, or may be being refunded at the provider."""
        return self.state in (R.REQUESTED, R.SUCCEEDED)


@dataclass(frozen=True)
class Ledger:
    """One order's attempts and refunds, as read under the order lock."""

    order_id: uuid.UUID
    attempts: tuple[Attempt, ...] = ()
    refunds: tuple[Refund, ...] = ()
    disputes: frozenset[str] = frozenset()

    def attempt(self, attempt_id: uuid.UUID) -> Attempt:
        return next(a for a in self.attempts if a.id == attempt_id)

    def refund(self, refund_id: uuid.UUID) -> Refund | None:
        return next((r for r in self.refunds if r.id == refund_id), None)

    def by_provider_refund(self, provider_refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.provider_refund_id == provider_refund_id), None)

    def holder(self, *, other_than: uuid.UUID | None = None) -> Attempt | None:
        """The attempt that holds the order's money, if any."""
        return next((a for a in self.attempts if a.holds_payment and a.id != other_than), None)

    def committed(self, attempt_id: uuid.UUID) -> int:
        return sum(r.amount for r in self.refunds if r.attempt_id == attempt_id and r.counts)


# -- the decision --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """An attempt transition with the columns it sets."""

    attempt_id: uuid.UUID
    source: AttemptState
    target: AttemptState
    reason: str
    provider_event_id: str | None = None
    columns: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Mark:
    """A recovery point an attempt reaches without a transition, with what the operation was asked."""

    attempt_id: uuid.UUID
    column: str  # capture_point, cancel_point, give_back_point
    point: str
    carried: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RefundMove:
    refund_id: uuid.UUID
    source: RefundState
    target: RefundState
    reason: str
    failure_code: str | None = None
    failure_message: str | None = None
    recovery_point: RefundPoint | None = None


@dataclass(frozen=True)
class ProviderCall:
    """A call the caller makes at the provider, outside any transaction, with this key."""

    kind: Literal["create_intent", "cancel_intent", "capture_intent", "create_refund"]
    subject: uuid.UUID  # the attempt or refund the call is about
    idempotency_key: str
    amount: int | None = None


Outcome = Literal[
    "applied",
    "refused",
    "duplicate",
    "mismatch",
    "race",
    "pending",
    "poison",
    "nothing",
    "not_capturable",
    "known",
    "not_order_payment",
    "currency_mismatch",
    "exceeds_capture",
    "before_capture",
    "closing",
]


@dataclass
class Decision:
    outcome: Outcome = "nothing"
    moves: list[Move] = field(default_factory=list)
    refused: list[Move] = field(default_factory=list)
    new_refunds: list[Refund] = field(default_factory=list)
    refund_moves: list[RefundMove] = field(default_factory=list)
    new_disputes: list[tuple[str, uuid.UUID]] = field(default_factory=list)  # (dispute id, attempt id)
    marks: list[Mark] = field(default_factory=list)
    calls: list[ProviderCall] = field(default_factory=list)
    emits: list[Payload] = field(default_factory=list)
    detail: str = ""

    def move(
        self,
        attempt: Attempt,
        target: AttemptState,
        reason: str,
        *,
        provider_event_id: str | None = None,
        announce: Payload | None = None,
        **columns: Any,
    ) -> bool:
        """A transition of the lifecycle table, announced by `announce` when it is made."""
        if attempt.state == A.CREATING:
            # leaving `creating` ends intent creation: announced, refused, or cancelled before it was paid
            columns.setdefault("recovery_point", AttemptPoint.FINISHED)
        if attempt.state == A.AUTHORIZED and unfinished(attempt.capture_point):
            # leaving `authorized` ends a capture: captured, refused, or the authorization gone
            columns.setdefault("capture_point", CapturePoint.FINISHED)
        if target in CLOSED_STATES and unfinished(attempt.cancel_point):
            # an attempt with nothing open at the provider is all the order's close asked for
            columns.setdefault("cancel_point", CancelPoint.FINISHED)
        if target == A.CANCELED and unfinished(attempt.give_back_point):
            # a duplicate's authorization released (by us, or expired at the provider): nothing more to give back
            columns.setdefault("give_back_point", GiveBackPoint.FINISHED)
        step = Move(attempt.id, attempt.state, target, reason, provider_event_id, tuple(sorted(columns.items())))
        if not ATTEMPT_LIFECYCLE.can(attempt.state, target):
            self.refused.append(step)
            return False
        self.moves.append(step)
        if announce is not None:
            self.emits.append(announce)
        return True

    def mark(self, attempt: Attempt, column: str, point: str, **carried: Any) -> None:
        self.marks.append(Mark(attempt.id, column, point, tuple(sorted(carried.items()))))

    def move_refund(self, refund: Refund, target: RefundState, reason: str, announce: Payload, **failure: Any) -> bool:
        if not REFUND_LIFECYCLE.can(refund.state, target):
            return False
        # a requested refund's outcome ends its phases
        point = RefundPoint.FINISHED if refund.state == R.REQUESTED else None
        self.refund_moves.append(RefundMove(refund.id, refund.state, target, reason, recovery_point=point, **failure))
        self.emits.append(announce)
        return True


def _ended(
    kind: type[pay.PaymentAttemptEnded], a: Attempt, intent_id: str | None, code: str | None, msg: str | None
) -> pay.PaymentAttemptEnded:
    return kind(
        order_id=str(a.order_id),
        attempt_id=str(a.id),
        payment_intent_id=intent_id,
        failure_code=code,
        failure_message=msg,
    )


# -- intent creation -----------------------------------------------------------------------------------


def create_intent(attempt: Attempt) -> Decision:
    """Phase 2 of a payment request: the provider call that makes the attempt's PaymentIntent."""
    d = Decision()
    if attempt.state == A.CREATING and attempt.intent_id is None:
        d.calls.append(ProviderCall("create_intent", attempt.id, create_intent_key(attempt.id), attempt.amount))
    return d


def announce_intent(attempt: Attempt, refusal: tuple[str | None, str | None] | None) -> Decision:
    """Phase 3: requires_payment + payment.intent_created, or failed when the provider refused to make the
    intent. An attempt already past `creating` was announced before."""
    d = Decision()
    if attempt.state != A.CREATING:
        return d
    if refusal is not None:
        code, message = refusal
        d.outcome = "applied"
        d.move(
            attempt,
            A.FAILED,
            f"provider refused the payment intent: {code or 'unknown'}",
            announce=_ended(pay.PaymentFailed, attempt, None, code, message),
            failure_code=code,
            failure_message=message,
        )
        return d
    if attempt.intent_id is None:
        d.outcome = "pending"
        return d
    if unfinished(attempt.cancel_point):
        # the order closed while the intent was being made: the cancel under way closes the intent and ends the
        # attempt, and announcing it now would offer a closed order's customer a payable session meanwhile
        d.outcome = "closing"
        return d
    announce = pay.PaymentIntentCreated(
        order_id=str(attempt.order_id),
        attempt_id=str(attempt.id),
        payment_intent_id=attempt.intent_id,
        amount=attempt.amount,
        currency=attempt.currency,
    )
    d.outcome = (
        "applied" if d.move(attempt, A.REQUIRES_PAYMENT, "payment intent created", announce=announce) else "refused"
    )
    return d


# -- provider facts about an intent --------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """A provider fact that an attempt's money is held (authorized) or taken (succeeded)."""

    target: AttemptState
    amount: int
    currency: str
    intent_id: str
    reason: str
    provider_event_id: str | None = None
    # set (webhook, reconciliation) when the provider holds another amount or currency than the attempt
    # asked for: the money is recorded as held, payment.mismatch is announced, never payment.succeeded
    mismatch_detected_by: str | None = None


def is_mismatch(attempt: Attempt, target: AttemptState, amount: int, currency: str, *, manual: bool) -> bool:
    """The provider holds other money than the attempt asked for. A manual capture may take less than
    was authorized (the order asks for a partial capture), never more."""
    if currency.upper() != attempt.currency.upper():
        return True
    if target == A.SUCCEEDED and manual:
        return amount > attempt.amount
    return amount != attempt.amount


def mark_duplicate(ledger: Ledger, attempt_id: uuid.UUID, fact: Settled) -> Decision:
    """Step 1 of a success or authorization: when another attempt already holds the order's money (or this
    one is known to be a duplicate), this one takes the state the provider reports, is marked a duplicate
    and, when money was taken, gets an automatic refund row; then the money goes back (calls). Nothing when
    this attempt is the order's only payment: settle() applies it. The mark is the give-back's first recovery
    point, written with it (finished at once when nothing was taken)."""
    d = Decision()
    attempt = ledger.attempt(attempt_id)
    holder = ledger.holder(other_than=attempt.id)
    if attempt.duplicate_of is None and holder is None:
        return d
    holder_id = attempt.duplicate_of or (holder.id if holder else None)
    marked = replace(
        attempt,
        state=fact.target,
        duplicate_of=holder_id,
        amount_captured=fact.amount if fact.target == A.SUCCEEDED else attempt.amount_captured,
    )
    columns: dict[str, Any] = {}
    if attempt.duplicate_of is None:
        columns["duplicate_of"] = holder_id
    if fact.target == A.SUCCEEDED:
        columns["amount_captured"] = fact.amount
    if attempt.give_back_point is None:
        owed = give_back(ledger, marked).calls
        columns["give_back_point"] = GiveBackPoint.MARKED_DUPLICATE if owed else GiveBackPoint.FINISHED
    moved = d.move(
        attempt,
        fact.target,
        f"{fact.reason}; the order's payment is held by attempt {holder_id}",
        provider_event_id=fact.provider_event_id,
        **columns,
    )
    if moved:
        d.outcome = "duplicate"
        attempt = replace(marked, give_back_point=columns.get("give_back_point", attempt.give_back_point))
    elif attempt.duplicate_of is None:
        d.outcome = "refused"  # money on an attempt whose lifecycle cannot take it: logged by the caller
        return d
    d.outcome = "duplicate"
    d.calls.extend(give_back(ledger, attempt, new_refund=d.new_refunds).calls)
    return d


def give_back(ledger: Ledger, attempt: Attempt, *, new_refund: list[Refund] | None = None) -> Decision:
    """Step 2 for a duplicate: the provider call that returns its money. A captured duplicate is refunded in
    full by payment's own refund (its row is written in the same transaction as the duplicate mark, so a
    crash right after still knows the money must go back); an authorized one is released."""
    d = Decision()
    if attempt.duplicate_of is None:
        return d
    if attempt.state == A.SUCCEEDED:
        refund_id = automatic_refund_id(attempt.id)
        refund = ledger.refund(refund_id)
        if refund is None and attempt.captured:
            refund = Refund(
                refund_id,
                attempt.order_id,
                attempt.id,
                attempt.captured,
                attempt.currency,
                R.REQUESTED,
                DUPLICATE_CAPTURE,
                automatic=True,
                requested_by="payment-service",
            )
            if new_refund is not None:
                new_refund.append(refund)
        if refund is not None and refund.state == R.REQUESTED and refund.provider_refund_id is None:
            d.calls.append(ProviderCall("create_refund", refund_id, refund_key(refund_id), refund.amount))
    elif attempt.state == A.AUTHORIZED:
        d.calls.append(ProviderCall("cancel_intent", attempt.id, cancel_key(attempt.id)))
    return d


def settle(
    ledger: Ledger,
    attempt_id: uuid.UUID,
    fact: Settled,
    *,
    refund_refusal: tuple[str | None, str | None] | None = None,
) -> Decision:
    """Step 3, in the consumer's transaction: the usual transition + payment.succeeded / payment.authorized
    (payment.mismatch when the provider holds other money), or for a duplicate the outcome of giving its
    money back. `race` when another attempt took the payment since step 1 looked: the consumer retries."""
    attempt = ledger.attempt(attempt_id)
    if attempt.duplicate_of is not None:
        d = finish_duplicate(ledger, attempt, refund_refusal=refund_refusal)
        d.outcome = d.outcome if d.outcome in ("race", "pending") else "duplicate"
        return d
    d = Decision()
    holder = ledger.holder(other_than=attempt.id)
    if holder is not None and ATTEMPT_LIFECYCLE.can(attempt.state, fact.target):
        d.outcome = "race"
        d.detail = f"attempt {holder.id} took the payment of order {attempt.order_id} first"
        return d
    columns: dict[str, Any] = {"amount_captured": fact.amount} if fact.target == A.SUCCEEDED else {}
    order_id, key = str(attempt.order_id), str(attempt.id)
    if fact.mismatch_detected_by is not None:
        columns["provider_mismatch"] = {
            "amount": fact.amount,
            "currency": fact.currency,
            "state": fact.target.value,
            "detected_by": fact.mismatch_detected_by,
        }
        reason = (
            f"{fact.reason}; amount mismatch: the provider holds {fact.amount} {fact.currency}, "
            f"the attempt asked {attempt.amount} {attempt.currency}"
        )
        announce: Payload = pay.PaymentMismatch(
            order_id=order_id,
            attempt_id=key,
            payment_intent_id=fact.intent_id,
            expected_amount=attempt.amount,
            expected_currency=attempt.currency,
            provider_amount=fact.amount,
            provider_currency=fact.currency,
            detected_by=fact.mismatch_detected_by,
            captured=fact.target == A.SUCCEEDED,
        )
    else:
        reason = fact.reason
        kind = pay.PaymentSucceeded if fact.target == A.SUCCEEDED else pay.PaymentAuthorized
        announce = kind(
            order_id=order_id,
            attempt_id=key,
            payment_intent_id=fact.intent_id,
            amount=fact.amount,
            currency=fact.currency,
        )
    if not d.move(attempt, fact.target, reason, provider_event_id=fact.provider_event_id, announce=announce, **columns):
        d.outcome = "refused"
    else:
        d.outcome = "mismatch" if fact.mismatch_detected_by is not None else "applied"
    return d


def finish_duplicate(
    ledger: Ledger, attempt: Attempt, *, refund_refusal: tuple[str | None, str | None] | None
) -> Decision:
    """A duplicate's money is back: its automatic refund's outcome (which finishes the give-back), or its
    authorization released (the give-back's point says so: the release wrote it). A give-back with nothing
    left to record is finished."""
    refund = ledger.refund(automatic_refund_id(attempt.id))
    if attempt.state == A.SUCCEEDED and refund is not None and refund.state == R.REQUESTED:
        return finish_refund(ledger, refund.id, refund_refusal)
    d = Decision()
    if attempt.state == A.AUTHORIZED:
        held_by = f"the order's payment is held by attempt {attempt.duplicate_of}"
        if attempt.give_back_point != GiveBackPoint.GIVEN_BACK:
            d.outcome = "race"
            d.detail = f"authorization of duplicate attempt {attempt.id} not released yet"
            return d
        d.move(
            attempt,
            A.CANCELED,
            "authorization of a second attempt released",
            announce=_ended(pay.PaymentCanceled, attempt, attempt.intent_id, DUPLICATE_AUTHORIZATION, held_by),
            failure_code=DUPLICATE_AUTHORIZATION,
            failure_message=held_by,
        )
    elif unfinished(attempt.give_back_point):
        d.mark(attempt, "give_back_point", GiveBackPoint.FINISHED)
    return d


def end_attempt(
    ledger: Ledger,
    attempt_id: uuid.UUID,
    target: AttemptState,
    reason: str,
    *,
    intent_id: str | None,
    code: str | None = None,
    message: str | None = None,
    provider_event_id: str | None = None,
) -> Decision:
    """A provider fact that moves an attempt without money (processing, failed, canceled); failed and
    canceled are announced with their reason."""
    d = Decision()
    attempt = ledger.attempt(attempt_id)
    if target == A.CANCELED and attempt.state == A.AUTHORIZED and unfinished(attempt.capture_point):
        # The order asked for this authorization's capture and the authorization is gone: the provider refused
        # the capture and our release cancelled the intent (its answer kept on the row), or it expired
        # meanwhile. Whichever of the capture and this fact comes first, the order hears that its capture
        # failed, never a bare cancellation it would only note while it waits for the capture.
        code = attempt.failure_code or AUTHORIZATION_GONE
        message = attempt.failure_message or message
        moved = d.move(
            attempt,
            A.CAPTURE_FAILED,
            f"authorization gone while its capture was under way: {code}",
            provider_event_id=provider_event_id,
            announce=_ended(pay.PaymentCaptureFailed, attempt, intent_id, code, message),
            failure_code=code,
            failure_message=message,
        )
        d.outcome = "applied" if moved else "refused"
        return d
    if target in (A.FAILED, A.CANCELED):
        kind = pay.PaymentFailed if target == A.FAILED else pay.PaymentCanceled
        moved = d.move(
            attempt,
            target,
            reason,
            provider_event_id=provider_event_id,
            announce=_ended(kind, attempt, intent_id, code, message),
            failure_code=code,
            failure_message=message,
        )
    else:
        moved = d.move(attempt, target, reason, provider_event_id=provider_event_id)
    d.outcome = "applied" if moved else "refused"
    return d


# -- capture and cancel --------------------------------------------------------------------------------


def capture(ledger: Ledger, attempt_id: uuid.UUID, amount: int) -> Decision:
    """order.capture_requested: capture an authorized attempt (a call; the request and its amount recorded
    as the capture's first recovery point), answer a request for one whose authorization is gone
    (payment.capture_failed, no move), or nothing when it was answered before. The capture under way is the
    one the order asked for first: another amount for it now is poison."""
    d = Decision()
    attempt = ledger.attempt(attempt_id)
    if attempt.state in (A.SUCCEEDED, A.CAPTURE_FAILED):
        return d
    if attempt.state == A.CANCELED or attempt.duplicate_of is not None:
        d.outcome = "not_capturable"
        message = f"the attempt is {attempt.state}; nothing to capture"
        d.emits.append(_ended(pay.PaymentCaptureFailed, attempt, attempt.intent_id, AUTHORIZATION_GONE, message))
        return d
    if attempt.state != A.AUTHORIZED:
        d.outcome = "poison"
        d.detail = f"capture requested for attempt {attempt.id} which is {attempt.state}, not authorized"
        return d
    if attempt.capture_point is None:
        d.mark(attempt, "capture_point", CapturePoint.REQUESTED, capture_amount=amount)
    elif attempt.capture_amount != amount:
        d.outcome = "poison"
        d.detail = f"capture of {amount} for attempt {attempt.id} while its capture of {attempt.capture_amount} is open"
        return d
    d.calls.append(capture_call(replace(attempt, capture_amount=amount)))
    return d


def capture_call(attempt: Attempt) -> ProviderCall:
    """The provider call of the capture the order asked for (capture_amount), under its one key."""
    return ProviderCall("capture_intent", attempt.id, capture_key(attempt.id), attempt.capture_amount)


def release_authorization(attempt: Attempt) -> Decision:
    """A refused capture: what is still held is released."""
    d = Decision()
    d.calls.append(ProviderCall("cancel_intent", attempt.id, cancel_key(attempt.id)))
    return d


def capture_refused(ledger: Ledger, attempt_id: uuid.UUID, code: str | None, message: str | None) -> Decision:
    attempt = ledger.attempt(attempt_id)
    code = code or CAPTURE_REFUSED
    d = Decision()
    moved = d.move(
        attempt,
        A.CAPTURE_FAILED,
        f"provider refused the capture: {code}",
        announce=_ended(pay.PaymentCaptureFailed, attempt, attempt.intent_id, code, message),
        failure_code=code,
        failure_message=message,
    )
    d.outcome = "applied" if moved else "refused"
    return d


def close_order(ledger: Ledger, why: str, reason: str) -> Decision:
    """order.cancelled / order.expired, step 1: attempts still `creating` without an intent are cancelled
    (so no handler creates one later), and every intent that may still be open is cancelled at the
    provider (calls), each attempt's cancel recorded first (its recovery point, with why the order closed:
    whoever finishes it announces that)."""
    d = Decision()
    for attempt in ledger.attempts:
        if attempt.state == A.CREATING and attempt.intent_id is None:
            d.move(
                attempt,
                A.CANCELED,
                f"{why} before its payment intent existed",
                announce=_ended(pay.PaymentCanceled, attempt, None, why, reason),
                failure_code=why,
                failure_message=reason,
                cancel_point=CancelPoint.FINISHED,
            )
        elif attempt.intent_id is not None and attempt.state not in CLOSED_STATES:
            if attempt.cancel_point is None:
                d.mark(attempt, "cancel_point", CancelPoint.REQUESTED, cancel_code=why, cancel_reason=reason)
            d.calls.append(ProviderCall("cancel_intent", attempt.id, cancel_key(attempt.id)))
    return d


def intent_cancelled(ledger: Ledger, attempt_id: uuid.UUID, why: str, reason: str) -> Decision:
    """order.cancelled / order.expired, step 3: the provider cancelled the intent."""
    attempt = ledger.attempt(attempt_id)
    return end_attempt(
        ledger,
        attempt_id,
        A.CANCELED,
        f"{why}: payment intent cancelled",
        intent_id=attempt.intent_id,
        code=why,
        message=reason,
    )


# -- refunds -------------------------------------------------------------------------------------------


def request_refund(
    ledger: Ledger,
    refund_id: uuid.UUID,
    *,
    amount: int,
    currency: str,
    reason: str,
    requested_by: str | None,
) -> Decision:
    """order.refund_requested, phase 1: the refund row (requested, with the provider call to make) when the
    refunds of the capture that have not failed, plus this one, stay within what was captured; else the row
    failed and payment.refund_failed. A request seen before changes nothing (poison when it now says
    something else)."""
    d = Decision()
    existing = ledger.refund(refund_id)
    if existing is not None:
        if (existing.order_id, existing.amount, existing.currency) != (ledger.order_id, amount, currency):
            d.outcome = "poison"
            d.detail = (
                f"refund {refund_id} was {existing.amount} {existing.currency} for order {existing.order_id}, "
                f"now {amount} {currency} for order {ledger.order_id}"
            )
            return d
        d.calls.extend(execute_refund(ledger, refund_id).calls)
        return d
    holder = ledger.holder()
    captured = holder if holder is not None and holder.state == A.SUCCEEDED else None
    refused = refusal_reason(
        captured=captured.captured if captured else None,
        captured_currency=captured.currency if captured else None,
        already_refunded=ledger.committed(captured.id) if captured else 0,
        amount=amount,
        currency=currency,
    )
    refund = Refund(
        refund_id,
        ledger.order_id,
        captured.id if captured else None,
        amount,
        currency,
        R.FAILED if refused else R.REQUESTED,
        reason,
        requested_by=requested_by,
        failure_code=refused[0] if refused else None,
        failure_message=refused[1] if refused else None,
    )
    d.new_refunds.append(refund)
    if refused:
        d.outcome = "refused"
        d.detail = f"{refused[0]}: {refused[1]}"
        d.emits.append(
            pay.PaymentRefundFailed(
                order_id=str(ledger.order_id),
                refund_id=str(refund_id),
                amount=amount,
                currency=currency,
                reason=d.detail,
            )
        )
        return d
    d.outcome = "applied"
    d.calls.append(ProviderCall("create_refund", refund_id, refund_key(refund_id), amount))
    return d


def execute_refund(ledger: Ledger, refund_id: uuid.UUID) -> Decision:
    """Phase 2: the provider refund to make, unless it was made (or the refund ended) before."""
    d = Decision()
    refund = ledger.refund(refund_id)
    if refund is not None and refund.state == R.REQUESTED and refund.provider_refund_id is None:
        d.calls.append(ProviderCall("create_refund", refund_id, refund_key(refund_id), refund.amount))
    return d


def finish_refund(
    ledger: Ledger, refund_id: uuid.UUID, refusal: tuple[str | None, str | None] | None, *, via: str | None = None
) -> Decision:
    """Phase 3: the refund's outcome and the fact that announces it, once. `pending` while the provider
    refund is not stored yet (another handler holds its call). `via` names who finished it in the audit."""
    d = Decision()

    def said(reason: str) -> str:
        return f"{via}: {reason}" if via else reason

    refund = ledger.refund(refund_id)
    if refund is None or refund.state != R.REQUESTED:
        return d
    order_id = str(refund.order_id)
    if refusal is not None:
        code = refusal[0] or "refund_refused"
        announce = pay.PaymentRefundFailed(
            order_id=order_id,
            refund_id=str(refund.id),
            amount=refund.amount,
            currency=refund.currency,
            reason=f"{code}: {refusal[1] or ''}",
        )
        moved = d.move_refund(
            refund, R.FAILED, said(f"provider refused: {code}"), announce, failure_code=code, failure_message=refusal[1]
        )
        d.outcome = "refused" if moved else "nothing"
        _give_back_ends(ledger, d, refund)
        return d
    if refund.provider_refund_id is None:
        d.outcome = "pending"
        d.detail = f"refund {refund_id} has no provider refund yet"
        return d
    assert refund.attempt_id is not None
    attempt = ledger.attempt(refund.attempt_id)
    assert attempt.intent_id is not None
    succeeded: Payload = pay.PaymentRefunded(
        order_id=order_id,
        refund_id=str(refund.id),
        attempt_id=str(attempt.id),
        payment_intent_id=attempt.intent_id,
        provider_refund_id=refund.provider_refund_id,
        amount=refund.amount,
        currency=refund.currency,
        reason=refund.reason,
        automatic=refund.automatic,
    )
    if d.move_refund(refund, R.SUCCEEDED, said(f"provider refund {refund.provider_refund_id}"), succeeded):
        d.outcome = "applied"
    _give_back_ends(ledger, d, refund)
    return d


def _give_back_ends(ledger: Ledger, d: Decision, refund: Refund) -> None:
    """A duplicate's automatic refund that ends (refunded, or refused and said so) ends its give-back."""
    if refund.automatic and refund.attempt_id is not None and d.refund_moves:
        attempt = ledger.attempt(refund.attempt_id)
        if unfinished(attempt.give_back_point):
            d.mark(attempt, "give_back_point", GiveBackPoint.FINISHED)


def refund_at_provider(
    ledger: Ledger,
    attempt_id: uuid.UUID,
    refund_id: uuid.UUID,
    *,
    provider_refund_id: str,
    amount: int,
    currency: str,
) -> Decision:
    """A succeeded refund made at the provider outside Handshake: recorded (succeeded) and announced when
    it fits the capture by the same rule as a requested refund; else nothing, with the reason."""
    d = Decision()
    attempt = ledger.attempt(attempt_id)
    if attempt.state != A.SUCCEEDED:
        d.outcome = "before_capture"
        d.detail = f"provider refund of attempt {attempt.id} in state {attempt.state}"
        return d
    if ledger.by_provider_refund(provider_refund_id) is not None or ledger.refund(refund_id) is not None:
        d.outcome = "known"
        return d
    if attempt.duplicate_of is not None:
        d.outcome = "not_order_payment"
        return d
    refused = refusal_reason(
        captured=attempt.captured,
        captured_currency=attempt.currency,
        already_refunded=ledger.committed(attempt.id),
        amount=amount,
        currency=currency,
    )
    if refused is not None:
        d.outcome = "currency_mismatch" if refused[0] == CURRENCY_MISMATCH else "exceeds_capture"
        assert refused[0] in (CURRENCY_MISMATCH, EXCEEDS_CAPTURED)
        d.detail = refused[1]
        return d
    assert attempt.intent_id is not None
    d.new_refunds.append(
        Refund(
            refund_id,
            attempt.order_id,
            attempt.id,
            amount,
            attempt.currency,
            R.SUCCEEDED,
            REFUNDED_AT_PROVIDER,
            requested_by="provider",
            provider_refund_id=provider_refund_id,
        )
    )
    d.emits.append(
        pay.PaymentRefunded(
            order_id=str(attempt.order_id),
            refund_id=str(refund_id),
            attempt_id=str(attempt.id),
            payment_intent_id=attempt.intent_id,
            provider_refund_id=provider_refund_id,
            amount=amount,
            currency=attempt.currency,
            reason=REFUNDED_AT_PROVIDER,
            automatic=False,
        )
    )
    d.outcome = "applied"
    return d


def refund_reversed(ledger: Ledger, provider_refund_id: str, *, status: str, why: str, intent_id: str) -> Decision:
    """A refund the provider accepted failed afterwards: the row that counted it succeeded is reversed and
    the order told, once. One never counted (still requested) is left to the refund path."""
    d = Decision()
    refund = ledger.by_provider_refund(provider_refund_id)
    if refund is None or refund.state != R.SUCCEEDED:
        return d
    announce = pay.PaymentRefundReversed(
        order_id=str(refund.order_id),
        refund_id=str(refund.id),
        attempt_id=str(refund.attempt_id),
        payment_intent_id=intent_id,
        provider_refund_id=provider_refund_id,
        amount=refund.amount,
        currency=refund.currency,
        reason=why,
    )
    reason = f"the provider reports the refund {status}: {why}"
    if d.move_refund(refund, R.REVERSED, reason, announce, failure_code=why):
        d.outcome = "applied"
    return d


def dispute(
    ledger: Ledger,
    attempt_id: uuid.UUID,
    *,
    dispute_id: str,
    intent_id: str,
    amount: int | None,
    currency: str | None,
    reason: str | None,
    status: str | None,
) -> Decision:
    """charge.dispute.created: payment.disputed, once per dispute id."""
    d = Decision()
    attempt = ledger.attempt(attempt_id)
    if dispute_id and dispute_id in ledger.disputes:
        d.outcome = "refused"
        return d
    if dispute_id:
        d.new_disputes.append((dispute_id, attempt.id))
    d.emits.append(
        pay.PaymentDisputed(
            order_id=str(attempt.order_id),
            attempt_id=str(attempt.id),
            payment_intent_id=intent_id,
            dispute_id=dispute_id,
            amount=amount if amount is not None else attempt.amount,
            currency=(currency or attempt.currency).upper(),
            reason=reason,
            status=status,
        )
    )
    d.outcome = "applied"
    return d


# -- the view after a decision (what the store writes, for the property test and in-memory callers) --------


# the view's fields a decision writes (a move's columns, a mark): the rest are the row's identity and state
_WRITTEN_VIEW = {f.name for f in fields(Attempt)} - {"id", "order_id", "state", "amount", "currency", "intent_id"}


def evolve(ledger: Ledger, decision: Decision) -> Ledger:
    """The ledger once the decision is written: what attempt_store.apply does to the rows."""
    attempts = {a.id: a for a in ledger.attempts}
    for m in decision.moves:
        current = attempts[m.attempt_id]
        assert current.state == m.source, (current.state, m)
        seen = {k: v for k, v in m.columns if k in _WRITTEN_VIEW}
        attempts[m.attempt_id] = replace(current, state=m.target, **seen)
    for mark in decision.marks:
        current = attempts[mark.attempt_id]
        if advances(mark.column, getattr(current, mark.column), mark.point):
            attempts[mark.attempt_id] = replace(current, **{mark.column: mark.point, **dict(mark.carried)})
    refunds = {r.id: r for r in ledger.refunds}
    for r in decision.new_refunds:
        refunds.setdefault(r.id, r)
    for rm in decision.refund_moves:
        refund = refunds[rm.refund_id]
        assert refund.state == rm.source, (refund.state, rm)
        refunds[rm.refund_id] = replace(refund, state=rm.target, failure_code=rm.failure_code or refund.failure_code)
    disputes = ledger.disputes | {dispute_id for dispute_id, _ in decision.new_disputes}
    return replace(ledger, attempts=tuple(attempts.values()), refunds=tuple(refunds.values()), disputes=disputes)


def with_attempts(ledger: Ledger, attempts: Iterable[Attempt]) -> Ledger:
    known = {a.id: a for a in ledger.attempts}
    known.update({a.id: a for a in attempts})
    return replace(ledger, attempts=tuple(known.values()))
