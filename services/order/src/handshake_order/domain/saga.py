"""What the order does when a fact arrives: a pure function of the order's view and the event.

Handlers load the view under a row lock, call react(), and apply the Decision (transitions with
their audit rows, column updates, outbox events) in the consumer's transaction. Because this is
pure, the lifecycle property test drives it with random, duplicated and reordered event streams."""

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
    id: str
    state: S
    total: int
    currency: str
    payment_attempt_id: str | None = None
    payment_intent_id: str | None = None
    payment_requested: bool = False
    captured_amount: int = 0
    stock_committed: bool = False
    refunded_amount: int = 0
    refund_pending_amount: int = 0

    @property
    def refundable_amount(self) -> int:
        return self.captured_amount - self.refunded_amount - self.refund_pending_amount


@dataclass
class Decision:
    view: OrderView
    transitions: list[tuple[S, S, str]] = field(default_factory=list)
    refused: list[tuple[S, S, str]] = field(default_factory=list)
    emits: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)

    def move(self, target: S, reason: str) -> bool:
        current = self.view.state
        if not ORDER_LIFECYCLE.can(current, target):
            self.refused.append((current, target, reason))
            return False
        self.transitions.append((current, target, reason))
        self.view = replace(self.view, state=target)
        if target == S.CANCELLED and self.view.stock_committed:
            # order.cancelled makes inventory put sold units back on the shelf: from here on the order
            # holds no stock, and money arriving late must wait for inventory to commit it again
            self.set(stock_committed=False)
        return True

    def set(self, **columns: Any) -> None:
        self.updates.update(columns)
        self.view = replace(self.view, **columns)

    def emit(self, type: str, data: Any) -> None:
        self.emits.append((type, data))

    def announce(self, type: str, reason: str, from_state: S) -> None:
        self.emit(type, o.OrderStateChanged(order_id=self.view.id, from_state=from_state, to_state=self.view.state,
                                            reason=reason))  # fmt: skip

    def note(self, kind: str, detail: str) -> None:
        self.notes.append((kind, detail))

    @property
    def changed(self) -> bool:
        return bool(self.transitions or self.emits or self.notes or self.updates)


def payment_request(view: OrderView, seed: str) -> o.OrderPaymentRequested:
    # derived from what caused it, so a replay asks for the same attempt, never a second one
    request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"payment-request:{view.id}:{seed}"))
    return o.OrderPaymentRequested(order_id=view.id, request_id=request_id, amount=view.total, currency=view.currency)


# -- inventory facts ---------------------------------------------------------------------------


def on_reserved(view: OrderView, p: inv.InventoryReserved, event_id: str) -> Decision:
    d = Decision(view)
    if view.state == S.DRAFT and not view.payment_requested:
        d.set(payment_requested=True)
        d.emit("order.payment_requested", payment_request(view, event_id))
    return d


def on_rejected(view: OrderView, p: inv.InventoryRejected) -> Decision:
    d = Decision(view)
    skus = ", ".join(f"{line.sku} (wanted {line.requested}, {line.available} available)" for line in p.lines)
    reason = f"out of stock: {skus}"
    if view.state == S.DRAFT and d.move(S.CANCELLED, reason):
        d.announce("order.cancelled", reason, S.DRAFT)
    return d


def on_reservation_expired(view: OrderView, p: inv.InventoryReleased) -> Decision:
    d = Decision(view)
    if view.state in EXPIRABLE:
        before = view.state
        if d.move(S.EXPIRED, "reservation expired before payment"):
            d.announce("order.expired", "reservation expired before payment", before)
    return d


def on_committed(view: OrderView, p: inv.InventoryCommitted) -> Decision:
    d = Decision(view)
    if view.stock_committed:
        return d
    d.set(stock_committed=True)
    if p.rereserved:
        d.note("stock", "stock reserved again and committed after the hold had lapsed")
    if view.state == S.PAID:
        if d.move(S.FULFILLMENT_PENDING, "stock committed"):
            d.emit("order.fulfillment_pending", o.OrderFulfillmentPending(order_id=view.id))
    elif view.state == S.PAYMENT_AUTHORIZED:
        assert view.payment_attempt_id and view.payment_intent_id
        d.emit("order.capture_requested", o.OrderCaptureRequested(
            order_id=view.id, attempt_id=view.payment_attempt_id, payment_intent_id=view.payment_intent_id,
            amount=view.total, currency=view.currency))  # fmt: skip
    return d


def on_commit_failed(view: OrderView, p: inv.InventoryCommitFailed) -> Decision:
    d = Decision(view)
    reason = f"stock could not be committed: {p.reason}"
    if view.state == S.PAID:
        # money is truth, stock is not there: give the money back
        amount = view.refundable_amount
        if d.move(S.CANCELLED_WITH_REFUND, reason) and amount > 0:
            refund_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"auto-refund:{view.id}"))
            d.set(refund_pending_amount=view.refund_pending_amount + amount)
            d.emit("order.refund_requested", o.OrderRefundRequested(
                order_id=view.id, refund_id=refund_id, amount=amount, currency=view.currency, reason=reason,
                restock=False, requested_by="order-service"))  # fmt: skip
    elif view.state == S.PAYMENT_AUTHORIZED:
        if d.move(S.CANCELLED, reason):
            d.announce("order.cancelled", reason, S.PAYMENT_AUTHORIZED)
    elif view.state in (S.FULFILLMENT_PENDING, S.PARTIALLY_FULFILLED):
        # inventory says the stock of an order being fulfilled is not there: a person decides
        _needs_review(d, reason)
    return d


# -- payment facts -----------------------------------------------------------------------------


def _mismatch(view: OrderView, amount: int, currency: str) -> str | None:
    if amount != view.total or currency.upper() != view.currency:
        return f"provider reports {amount} {currency.upper()} but the order total is {view.total} {view.currency}"
    return None


def _needs_review(d: Decision, reason: str) -> None:
    before = d.view.state
    if d.move(S.NEEDS_REVIEW, reason):
        d.announce("order.needs_review", reason, before)


def on_intent_created(view: OrderView, p: pay.PaymentIntentCreated) -> Decision:
    d = Decision(view)
    if view.state in (S.DRAFT, S.PAYMENT_FAILED):
        if d.move(S.PAYMENT_PENDING, "payment intent created"):
            d.set(payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id)
            d.emit("order.payment_pending", o.OrderPaymentPending(
                order_id=view.id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id))  # fmt: skip
    return d


def on_authorized(view: OrderView, p: pay.PaymentSucceeded) -> Decision:
    d = Decision(view)
    mismatch = _mismatch(view, p.amount, p.currency)
    if mismatch:
        _needs_review(d, mismatch)
        return d
    if view.state in (S.PAYMENT_PENDING, S.PAYMENT_FAILED):
        if d.move(S.PAYMENT_AUTHORIZED, "payment authorized"):
            d.set(payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id)
            d.emit("order.payment_authorized", o.OrderPaymentAuthorized(
                order_id=view.id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id,
                amount=p.amount, currency=p.currency.upper()))  # fmt: skip
    return d


def on_succeeded(view: OrderView, p: pay.PaymentSucceeded) -> Decision:
    d = Decision(view)
    if view.captured_amount:
        d.note("payment", f"second success for attempt {p.attempt_id} ignored; payment refunds extra captures")
        return d
    mismatch = _mismatch(view, p.amount, p.currency)
    if mismatch:
        # money was taken but does not match: record it, never fulfil
        d.set(captured_amount=p.amount, payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id)
        _needs_review(d, mismatch)
        return d
    before = view.state
    if view.state not in (S.PAYMENT_PENDING, S.PAYMENT_AUTHORIZED, *LATE_PAYMENT_STATES):
        d.note("payment", f"payment succeeded while {view.state}; flagged")
        _needs_review(d, f"payment succeeded while the order was {view.state}")
        d.set(captured_amount=p.amount)
        return d
    reason = "payment succeeded" if before not in LATE_PAYMENT_STATES else f"payment succeeded after the order was {before}"
    if d.move(S.PAID, reason):
        d.set(captured_amount=p.amount, payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id)
        d.emit("order.paid", o.OrderPaid(order_id=view.id, attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id,
                                         amount=p.amount, currency=p.currency.upper()))  # fmt: skip
        if d.view.stock_committed and d.move(S.FULFILLMENT_PENDING, "stock committed"):
            d.emit("order.fulfillment_pending", o.OrderFulfillmentPending(order_id=view.id))
    return d


def on_failed(view: OrderView, p: pay.PaymentFailed) -> Decision:
    d = Decision(view)
    if view.state == S.PAYMENT_PENDING and view.payment_attempt_id in (None, p.attempt_id):
        d.move(S.PAYMENT_FAILED, f"payment failed: {p.failure_code or 'unknown'}")
    else:
        d.note("payment", f"failure of attempt {p.attempt_id} ignored while {view.state}")
    return d


def on_canceled(view: OrderView, p: pay.PaymentFailed) -> Decision:
    d = Decision(view)
    d.note("payment", f"payment intent of attempt {p.attempt_id} cancelled at the provider")
    return d


def on_capture_failed(view: OrderView, p: pay.PaymentFailed) -> Decision:
    d = Decision(view)
    if view.state == S.PAYMENT_AUTHORIZED:
        reason = f"capture failed: {p.failure_code or 'unknown'}"
        if d.move(S.CAPTURE_FAILED, reason) and d.move(S.CANCELLED, "authorization cancelled after capture failure"):
            d.announce("order.cancelled", "authorization cancelled after capture failure", S.CAPTURE_FAILED)
    return d


def on_refunded(view: OrderView, p: pay.PaymentRefunded, *, requested_here: bool, restock: bool) -> Decision:
    d = Decision(view)
    if p.automatic and not requested_here:
        d.note("refund", f"payment refunded {p.amount} {p.currency} on its own ({p.reason}), attempt {p.attempt_id}")
        return d
    refunded = view.refunded_amount + p.amount
    d.set(refunded_amount=refunded, refund_pending_amount=max(0, view.refund_pending_amount - p.amount))
    payload = o.OrderRefunded(order_id=view.id, refund_id=p.refund_id, amount=p.amount, currency=p.currency.upper(),
                              refunded_total=refunded, restock=restock)  # fmt: skip
    if view.state == S.CANCELLED_WITH_REFUND:
        d.emit("order.refunded", payload)
        return d
    full = refunded >= view.captured_amount
    if view.state == S.NEEDS_REVIEW:
        # counted and announced; the order stays where a person put it, who closes the review
        d.emit("order.refunded" if full else "order.partially_refunded", payload)
        d.note("refund", f"refund {p.refund_id} of {p.amount} confirmed while under review")
        return d
    target = S.REFUNDED if full else S.PARTIALLY_REFUNDED
    if view.state in REFUNDABLE and d.move(target, f"refund {p.refund_id} of {p.amount} confirmed"):
        d.emit("order.refunded" if full else "order.partially_refunded", payload)
    else:
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
    reason = (f"refund {p.refund_id} of {p.amount} {p.currency.upper()} failed at the provider after it was "
              f"confirmed ({p.reason}); the customer did not get it")  # fmt: skip
    _needs_review(d, reason)
    if d.view.state != S.NEEDS_REVIEW:
        d.note("refund", reason)
    return d


def on_mismatch(view: OrderView, p: pay.PaymentMismatch) -> Decision:
    d = Decision(view)
    reason = (f"provider holds {p.provider_amount} {p.provider_currency.upper()} for attempt {p.attempt_id}, "
              f"expected {p.expected_amount} {p.expected_currency.upper()} (found by {p.detected_by})")  # fmt: skip
    if p.captured and not view.captured_amount and p.provider_currency.upper() == view.currency:
        # money was taken, just not the right amount: it is held for this order (a manual cancel is refused,
        # and finance can refund it from review)
        d.set(captured_amount=p.provider_amount, payment_attempt_id=p.attempt_id, payment_intent_id=p.payment_intent_id)
    elif p.captured and not view.captured_amount:
        d.note("payment", f"{p.provider_amount} {p.provider_currency.upper()} taken in another currency than the "
                          f"order's: refund it at the provider")  # fmt: skip
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
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def cancel_by_customer(view: OrderView) -> Decision:
    if view.state not in CUSTOMER_CANCELLABLE:
        raise CommandRefused("order-not-cancellable", f"an order that is {view.state} cannot be cancelled")
    d = Decision(view)
    d.move(S.CANCELLED, "cancelled by the customer")
    d.announce("order.cancelled", "cancelled by the customer", view.state)
    return d


def retry_payment(view: OrderView, seed: str) -> Decision:
    if view.state != S.PAYMENT_FAILED:
        raise CommandRefused("payment-attempt-not-allowed", f"a new payment attempt needs a failed payment, not {view.state}")
    d = Decision(view)
    d.emit("order.payment_requested", payment_request(view, seed))
    d.note("payment", "customer started a new payment attempt")
    return d


def request_refund(view: OrderView, *, refund_id: str, amount: int, reason: str, restock: bool, actor: str) -> Decision:
    if view.state not in REFUNDABLE:
        raise CommandRefused("order-not-refundable", f"an order that is {view.state} cannot be refunded")
    if amount <= 0 or amount > view.refundable_amount:
        raise CommandRefused(
            "refund-exceeds-capture",
            f"{amount} exceeds what can still be refunded ({view.refundable_amount} of {view.captured_amount} captured)",
        )
    if restock and amount != view.refundable_amount:
        raise CommandRefused("restock-needs-full-refund", "restocking is only possible with a refund of everything left")
    d = Decision(view)
    d.set(refund_pending_amount=view.refund_pending_amount + amount)
    d.emit("order.refund_requested", o.OrderRefundRequested(
        order_id=view.id, refund_id=refund_id, amount=amount, currency=view.currency, reason=reason, restock=restock,
        requested_by=actor))  # fmt: skip
    return d


def manual_transition(view: OrderView, target: S, reason: str) -> Decision:
    d = Decision(view)
    if not d.move(target, reason):
        raise CommandRefused("transition-not-allowed", f"{view.state} -> {target} is not in the lifecycle table")
    return d
