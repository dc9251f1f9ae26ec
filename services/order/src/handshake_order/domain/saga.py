"""What the order does when a fact arrives: a pure function of the order's view and the event.

Handlers load the view under a row lock, call react(), and apply the Decision (transitions with
their audit rows, column updates, outbox events) in the consumer's transaction. Because this is
pure, the lifecycle property test drives it with random, duplicated and reordered event streams.

A transition exists only through Decision.move, which also makes the one order.<state> event that
announces it (carrying it as `transition`), so order.events.v1 is the order's complete history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from handshake_order.domain.states import ORDER_LIFECYCLE
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay

# states from which money arriving late is still applied (money is truth)
LATE_PAYMENT_STATES = {S.PAYMENT_FAILED, S.EXPIRED, S.CANCELLED}
CUSTOMER_CANCELLABLE = {S.DRAFT, S.PAYMENT_PENDING, S.PAYMENT_FAILED}
# a flagged order keeps whatever money it holds refundable: giving it back is the usual repair
REFUNDABLE = {S.PAID, S.FULFILLMENT_PENDING, S.PARTIALLY_FULFILLED, S.FULFILLED, S.PARTIALLY_REFUNDED, S.NEEDS_REVIEW}
EXPIRABLE = {S.DRAFT, S.PAYMENT_PENDING, S.PAYMENT_FAILED}


@dataclass(frozen=True)
class OrderView:
    # ids as the order's row holds them, text; payloads carry them as UUIDs (`attempt` converts)
    id: str
    state: S
    total: int
    currency: str
    payment_attempt_id: str | None = None
    payment_intent_id: str | None = None
    payment_requested: bool = False
    payment_attempts: int = 0
    captured_amount: int = 0
    stock_committed: bool = False
    refunded_amount: int = 0
    refund_pending_amount: int = 0
    # a guest's order holds its stock briefly until the customer opens the payment session
    short_hold: bool = False
    payment_session_opened: bool = False

    @property
    def refundable_amount(self) -> int:
        return self.captured_amount - self.refunded_amount - self.refund_pending_amount


@dataclass
class Decision:
    view: OrderView
    transitions: list[tuple[S, S, str]] = field(default_factory=list)
    refused: list[tuple[S, S, str]] = field(default_factory=list)
    # in the order they happen; a transition's announcement carries it in `transition`
    emits: list[o.OrderEvent] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)

    def move(self, target: S, reason: str, announce: o.OrderEvent | None = None) -> bool:
        """Apply a transition of the lifecycle table and announce it with one order.<target> event: `announce`
        is that event's payload; without it, the plain state-change payload of the target's type."""
        current = self.view.state
        event_type = f"order.{target.value}"
        if announce is None:
            if event_type not in o.STATE_CHANGE_EVENTS:
                raise TypeError(f"a move to {target} is announced by an {event_type} payload the caller builds")
            announce = o.state_change(target.value, order_id=self.view.id, from_state=current.value, reason=reason)
        if announce.event_type != event_type or announce.transition is not None:
            raise TypeError(f"a move to {target} is announced by a fresh {event_type} payload, not {announce!r}")
        if not ORDER_LIFECYCLE.can(current, target):
            self.refused.append((current, target, reason))
            return False
        self.transitions.append((current, target, reason))
        self.emits.append(
            announce.model_copy(
                update={"transition": o.Transition(from_state=current.value, to_state=target.value, reason=reason)}
            )
        )
        self.view = replace(self.view, state=target)
        if target == S.CANCELLED and self.view.stock_committed:
            # order.cancelled makes inventory put sold units back on the shelf: from here on the order
            # holds no stock, and money arriving late must wait for inventory to commit it again
            self.set(stock_committed=False)
        return True

    def set(self, **columns: Any) -> None:
        self.updates.update(columns)
        self.view = replace(self.view, **columns)

    def emit(self, data: o.OrderEvent) -> None:
        """An event that changes no state (a request to another service, a refund confirmed under review)."""
        if not data.event_type or data.transition is not None:
            raise TypeError(f"transitions are announced by move(), not emit(): {data!r}")
        self.emits.append(data)

    def note(self, kind: str, detail: str) -> None:
        self.notes.append((kind, detail))

    @property
    def changed(self) -> bool:
        return bool(self.transitions or self.emits or self.notes or self.updates)


def payment_request(view: OrderView, seed: str) -> o.OrderPaymentRequested:
    # derived from what caused it, so a replay asks for the same attempt, never a second one
    request_id = uuid.uuid5(uuid.NAMESPACE_URL, f"payment-request:{view.id}:{seed}")
    return o.OrderPaymentRequested(order_id=view.id, request_id=request_id, amount=view.total, currency=view.currency)


def open_payment_session(view: OrderView, full_hold_seconds: int) -> Decision:
    """The customer received the client secret: somebody is about to pay, so an order placed with a short
    hold asks inventory to hold its stock for the full checkout time. Once; an order that no longer holds
    stock (paid, expired, cancelled) asks nothing."""
    d = Decision(view)
    if view.short_hold and not view.payment_session_opened and view.state in EXPIRABLE:
        d.set(payment_session_opened=True)
        d.emit(o.OrderPaymentSessionOpened(order_id=view.id, hold_seconds=full_hold_seconds))
    return d


def payment_session_coming(state: str, payment_intent_id: str | None) -> bool:
    """Whether an order without a payment session will get one without anybody doing anything: it is still
    on its way to payment (stock being reserved, the intent being created). Only then is it worth a customer's
    while to wait for it; otherwise "not ready" is the answer until somebody acts."""
    return payment_intent_id is None and state in (S.DRAFT, S.PAYMENT_PENDING)


# -- inventory facts ---------------------------------------------------------------------------


def on_reserved(view: OrderView, p: inv.InventoryReserved, event_id: str) -> Decision:
    d = Decision(view)
    if view.state == S.DRAFT and not view.payment_requested:
        d.set(payment_requested=True, payment_attempts=view.payment_attempts + 1)
        d.emit(payment_request(view, event_id))
    return d


def on_rejected(view: OrderView, p: inv.InventoryRejected) -> Decision:
    d = Decision(view)
    # The transition's reason is the customer's timeline and goes on the public topic: it names the short
    # products and what was asked for, never how many are left (a shop's stock is not a competitor's or
    # a hoarder's business). Staff see the numbers in a note.
    skus = ", ".join(f"{line.sku} (wanted {line.requested})" for line in p.lines)
    if view.state == S.DRAFT:
        d.move(S.CANCELLED, f"out of stock: {skus}")
        d.note(
            "stock",
            "short: "
            + ", ".join(f"{line.sku} wanted {line.requested}, {line.available} available" for line in p.lines),
        )
    return d


def on_reservation_expired(view: OrderView, p: inv.InventoryReservationExpired) -> Decision:
    d = Decision(view)
    if view.state in EXPIRABLE:
        d.move(S.EXPIRED, "reservation expired before payment")
    return d


def on_committed(view: OrderView, p: inv.InventoryCommitted) -> Decision:
    d = Decision(view)
    if view.stock_committed:
        return d
    d.set(stock_committed=True)
    if p.rereserved:
        d.note("stock", "stock reserved again and committed after the hold had lapsed")
    if view.state == S.PAID:
        d.move(S.FULFILLMENT_PENDING, "stock committed", o.OrderFulfillmentPending(order_id=view.id))
    elif view.state == S.PAYMENT_AUTHORIZED:
        assert view.payment_attempt_id and view.payment_intent_id
        d.emit(
            o.OrderCaptureRequested(
                order_id=view.id,
                attempt_id=view.payment_attempt_id,
                payment_intent_id=view.payment_intent_id,
                amount=view.total,
                currency=view.currency,
            )
        )
    return d


def on_commit_failed(view: OrderView, p: inv.InventoryCommitFailed) -> Decision:
    d = Decision(view)
    reason = f"stock could not be committed: {p.reason}"
    if view.state == S.PAID:
        # money is truth, stock is not there: give the money back
        amount = view.refundable_amount
        if d.move(S.CANCELLED_WITH_REFUND, reason) and amount > 0:
            refund_id = uuid.uuid5(uuid.NAMESPACE_URL, f"auto-refund:{view.id}")
            _ask_for_refund(
                d, refund_id=refund_id, amount=amount, reason=reason, restock=False, requested_by="order-service"
            )
    elif view.state == S.PAYMENT_AUTHORIZED:
        d.move(S.CANCELLED, reason)
    elif view.state in (S.FULFILLMENT_PENDING, S.PARTIALLY_FULFILLED):
        # inventory says the stock of an order being fulfilled is not there: a person decides
        _needs_review(d, reason)
    return d


# -- payment facts -----------------------------------------------------------------------------


def _mismatch(view: OrderView, amount: int, currency: str) -> str | None:
    if amount != view.total or currency.upper() != view.currency:
        return f"provider reports {amount} {currency.upper()} but the order total is {view.total} {view.currency}"
    return None


def attempt(p: pay.PaymentIntentCreated | pay.PaymentMoneyHeld | pay.PaymentAttemptEnded | pay.PaymentMismatch) -> str:
    """The payment attempt a fact names, as the order's row and view hold it."""
    return str(p.attempt_id)


def _needs_review(d: Decision, reason: str) -> None:
    d.move(S.NEEDS_REVIEW, reason)


def _ask_for_refund(
    d: Decision, *, refund_id: uuid.UUID | str, amount: int, reason: str, restock: bool, requested_by: str
) -> None:
    """Ask payment for a refund: the amount counts as pending, and so is no longer refundable, until payment
    confirms or refuses it."""
    d.set(refund_pending_amount=d.view.refund_pending_amount + amount)
    d.emit(
        o.OrderRefundRequested(
            order_id=d.view.id,
            refund_id=refund_id,
            amount=amount,
            currency=d.view.currency,
            reason=reason,
            restock=restock,
            requested_by=requested_by,
        )
    )


def on_intent_created(view: OrderView, p: pay.PaymentIntentCreated) -> Decision:
    d = Decision(view)
    if view.state in (S.DRAFT, S.PAYMENT_FAILED) and d.move(
        S.PAYMENT_PENDING,
        "payment intent created",
        o.OrderPaymentPending(order_id=view.id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id),
    ):
        d.set(payment_attempt_id=attempt(p), payment_intent_id=p.payment_intent_id)
    return d


def on_authorized(view: OrderView, p: pay.PaymentAuthorized) -> Decision:
    d = Decision(view)
    mismatch = _mismatch(view, p.amount, p.currency)
    if mismatch:
        _needs_review(d, mismatch)
        return d
    if view.state in (S.PAYMENT_PENDING, S.PAYMENT_FAILED) and d.move(
        S.PAYMENT_AUTHORIZED,
        "payment authorized",
        o.OrderPaymentAuthorized(
            order_id=view.id,
            attempt_id=p.attempt_id,
            payment_intent_id=p.payment_intent_id,
            amount=p.amount,
            currency=p.currency.upper(),
        ),
    ):
        d.set(payment_attempt_id=attempt(p), payment_intent_id=p.payment_intent_id)
    return d


def on_succeeded(view: OrderView, p: pay.PaymentSucceeded) -> Decision:
    d = Decision(view)
    if view.captured_amount:
        d.note("payment", f"second success for attempt {p.attempt_id} ignored; payment refunds extra captures")
        return d
    mismatch = _mismatch(view, p.amount, p.currency)
    if mismatch:
        # money was taken but does not match: record it, never fulfil
        d.set(captured_amount=p.amount, payment_attempt_id=attempt(p), payment_intent_id=p.payment_intent_id)
        _needs_review(d, mismatch)
        return d
    before = view.state
    if view.state not in (S.PAYMENT_PENDING, S.PAYMENT_AUTHORIZED, *LATE_PAYMENT_STATES):
        d.note("payment", f"payment succeeded while {view.state}; flagged")
        _needs_review(d, f"payment succeeded while the order was {view.state}")
        d.set(captured_amount=p.amount)
        return d
    reason = (
        "payment succeeded" if before not in LATE_PAYMENT_STATES else f"payment succeeded after the order was {before}"
    )
    paid = o.OrderPaid(
        order_id=view.id,
        attempt_id=p.attempt_id,
        payment_intent_id=p.payment_intent_id,
        amount=p.amount,
        currency=p.currency.upper(),
    )
    if d.move(S.PAID, reason, paid):
        d.set(captured_amount=p.amount, payment_attempt_id=attempt(p), payment_intent_id=p.payment_intent_id)
        if d.view.stock_committed:
            d.move(S.FULFILLMENT_PENDING, "stock committed", o.OrderFulfillmentPending(order_id=view.id))
    return d


def on_failed(view: OrderView, p: pay.PaymentFailed) -> Decision:
    d = Decision(view)
    if view.state == S.PAYMENT_PENDING and view.payment_attempt_id in (None, attempt(p)):
        d.move(S.PAYMENT_FAILED, f"payment failed: {p.failure_code or 'unknown'}")
    else:
        d.note("payment", f"failure of attempt {p.attempt_id} ignored while {view.state}")
    return d


def on_canceled(view: OrderView, p: pay.PaymentCanceled) -> Decision:
    d = Decision(view)
    d.note("payment", f"payment intent of attempt {p.attempt_id} cancelled at the provider")
    return d


def on_capture_failed(view: OrderView, p: pay.PaymentCaptureFailed) -> Decision:
    d = Decision(view)
    if view.state == S.PAYMENT_AUTHORIZED:
        reason = f"capture failed: {p.failure_code or 'unknown'}"
        if d.move(S.CAPTURE_FAILED, reason):
            d.move(S.CANCELLED, "authorization cancelled after capture failure")
    return d


def on_refunded(view: OrderView, p: pay.PaymentRefunded, *, requested_here: bool, restock: bool) -> Decision:
    d = Decision(view)
    if p.automatic and not requested_here:
        d.note("refund", f"payment refunded {p.amount} {p.currency} on its own ({p.reason}), attempt {p.attempt_id}")
        return d
    refunded = view.refunded_amount + p.amount
    d.set(refunded_amount=refunded, refund_pending_amount=max(0, view.refund_pending_amount - p.amount))
    full = refunded >= view.captured_amount or view.state == S.CANCELLED_WITH_REFUND
    kind = o.OrderRefunded if full else o.OrderPartiallyRefunded
    payload = kind(
        order_id=view.id,
        refund_id=p.refund_id,
        amount=p.amount,
        currency=p.currency.upper(),
        refunded_total=refunded,
        restock=restock,
    )
    if view.state == S.CANCELLED_WITH_REFUND:
        d.emit(payload)
        return d
    if view.state == S.NEEDS_REVIEW:
        # counted and announced; the order stays where a person put it, who closes the review
        d.emit(payload)
        d.note("refund", f"refund {p.refund_id} of {p.amount} confirmed while under review")
        return d
    target = S.REFUNDED if full else S.PARTIALLY_REFUNDED
    if not (view.state in REFUNDABLE and d.move(target, f"refund {p.refund_id} of {p.amount} confirmed", payload)):
        d.note("refund", f"refund {p.refund_id} confirmed while {view.state}")
    return d


def on_refund_failed(view: OrderView, p: pay.PaymentRefundFailed) -> Decision:
    d = Decision(view)
    d.set(refund_pending_amount=max(0, view.refund_pending_amount - p.amount))
    d.note("refund", f"refund {p.refund_id} of {p.amount} failed: {p.reason}")
    if view.state == S.CANCELLED_WITH_REFUND:
        # nobody asked for this refund but the order itself: without a flag the money would stay held
        _needs_review(d, f"automatic refund {p.refund_id} of {p.amount} failed ({p.reason}); the money is still held")
    return d


def on_refund_reversed(view: OrderView, p: pay.PaymentRefundReversed) -> Decision:
    """A confirmed refund failed at the provider afterwards: the customer did not get that money back. It no
    longer counts as refunded (so it can be refunded again) and a person looks at the order."""
    d = Decision(view)
    d.set(refunded_amount=max(0, view.refunded_amount - p.amount))
    reason = (
        f"refund {p.refund_id} of {p.amount} {p.currency.upper()} failed at the provider after it was "
        f"confirmed ({p.reason}); the customer did not get it"
    )
    _needs_review(d, reason)
    if d.view.state != S.NEEDS_REVIEW:
        d.note("refund", reason)
    return d


def on_mismatch(view: OrderView, p: pay.PaymentMismatch) -> Decision:
    d = Decision(view)
    reason = (
        f"provider holds {p.provider_amount} {p.provider_currency.upper()} for attempt {p.attempt_id}, "
        f"expected {p.expected_amount} {p.expected_currency.upper()} (found by {p.detected_by})"
    )
    if p.captured and not view.captured_amount and p.provider_currency.upper() == view.currency:
        # money was taken, just not the right amount: it is held for this order (a manual cancel is refused,
        # and finance can refund it from review)
        d.set(captured_amount=p.provider_amount, payment_attempt_id=attempt(p), payment_intent_id=p.payment_intent_id)
    elif p.captured and not view.captured_amount:
        d.note(
            "payment",
            f"{p.provider_amount} {p.provider_currency.upper()} taken in another currency than the "
            f"order's: refund it at the provider",
        )
    _needs_review(d, reason)
    if d.view.state != S.NEEDS_REVIEW:
        d.note("payment", reason)
    return d


def on_disputed(view: OrderView, p: pay.PaymentDisputed) -> Decision:
    d = Decision(view)
    reason = f"dispute {p.dispute_id} opened for {p.amount} {p.currency.upper()}: {p.reason or 'no reason given'}"
    _needs_review(d, reason)
    if d.view.state != S.NEEDS_REVIEW:
        d.note("dispute", reason)
    return d


# -- commands ------------------------------------------------------------------------------------


class CommandRefused(Exception):
    def __init__(self, code: str, detail: str, *, status: int = 409) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


def cancel_by_customer(view: OrderView) -> Decision:
    if view.state not in CUSTOMER_CANCELLABLE:
        raise CommandRefused("order-not-cancellable", f"an order that is {view.state} cannot be cancelled")
    d = Decision(view)
    d.move(S.CANCELLED, "cancelled by the customer")
    return d


def retry_payment(view: OrderView, seed: str, max_attempts: int) -> Decision:
    if view.state != S.PAYMENT_FAILED:
        raise CommandRefused(
            "payment-attempt-not-allowed", f"a new payment attempt needs a failed payment, not {view.state}"
        )
    # every attempt is a new PaymentIntent: without a cap, one order is a free card-testing machine
    if view.payment_attempts >= max_attempts:
        raise CommandRefused(
            "payment-attempts-exhausted",
            f"this order has had {view.payment_attempts} payment attempts; start a new checkout",
            status=429,
        )
    d = Decision(view)
    d.set(payment_attempts=view.payment_attempts + 1)
    d.emit(payment_request(view, seed))
    d.note("payment", "customer started a new payment attempt")
    return d


def check_refund(view: OrderView, *, amount: int, restock: bool) -> None:
    """CommandRefused when the order cannot be refunded `amount` now, as request_refund would refuse it."""
    if view.state not in REFUNDABLE:
        raise CommandRefused("order-not-refundable", f"an order that is {view.state} cannot be refunded")
    if amount <= 0 or amount > view.refundable_amount:
        raise CommandRefused(
            "refund-exceeds-capture",
            f"{amount} exceeds what can still be refunded ({view.refundable_amount} of {view.captured_amount} captured)",
        )
    if restock and amount != view.refundable_amount:
        raise CommandRefused(
            "restock-needs-full-refund", "restocking is only possible with a refund of everything left"
        )


def request_refund(
    view: OrderView, *, refund_id: uuid.UUID | str, amount: int, reason: str, restock: bool, actor: str
) -> Decision:
    check_refund(view, amount=amount, restock=restock)
    d = Decision(view)
    _ask_for_refund(d, refund_id=refund_id, amount=amount, reason=reason, restock=restock, requested_by=actor)
    return d


def manual_transition(view: OrderView, target: S, reason: str) -> Decision:
    d = Decision(view)
    if not d.move(target, reason):
        raise CommandRefused("transition-not-allowed", f"{view.state} -> {target} is not in the lifecycle table")
    return d
