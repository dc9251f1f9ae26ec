"""Staff operations on an order, as pure rules: the customer-facing reference and its id range, the contact
email, which orders count as in progress (stuck search), marking and closing a review, and the four-eyes
rule of refund approvals. The admin API and its queries call these; nothing here touches a database."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from handshake_order.domain.saga import CommandRefused, Decision, OrderView
from handshake_order.domain.states import ORDER_LIFECYCLE
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import order as o
from handshake_shared.events.base import Line

# -- reference -----------------------------------------------------------------------------------

REFERENCE_PREFIX = "HS-"
REFERENCE_PATTERN = r"^[Hh][Ss]-[0-9A-Fa-f]{8}$"
_REFERENCE = re.compile(REFERENCE_PATTERN)


def reference_of(order_id: uuid.UUID | str) -> str:
    """What a customer reads out on the phone: short, derived from the id, so it needs no column and no lookup
    table. Not unique on its own (32 bits): a search by reference lists every order that has it."""
    return REFERENCE_PREFIX + uuid.UUID(str(order_id)).hex[:8].upper()


def reference_range(reference: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The ids whose reference this is, as an inclusive primary-key range; None for something that is not a
    reference. A UUID compares byte by byte, so the first 8 hex digits fix a contiguous range."""
    if not _REFERENCE.fullmatch(reference):
        return None
    prefix = reference[len(REFERENCE_PREFIX) :].lower()
    return uuid.UUID(prefix + "0" * 24), uuid.UUID(prefix + "f" * 24)


# -- contact email -------------------------------------------------------------------------------

MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
# deliberately loose: one @, a dot in the domain, nothing that is space or control. Whether a mailbox exists
# is learnt by writing to it; what matters here is that staff can search by what the customer typed.
_EMAIL = re.compile(r"^[^\s@\x00-\x1f\x7f]{1,64}@[^\s@\x00-\x1f\x7f.]+(\.[^\s@\x00-\x1f\x7f.]+)+$")


def normalize_email(value: str) -> str:
    """Lowercased and trimmed, so "Ann@Example.com " and "ann@example.com" find the same orders; ValueError for
    anything that is not an address."""
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise ValueError("not an email address")
    return email


# -- stuck search --------------------------------------------------------------------------------

# states an order may rest in for good: nothing is expected to happen to it any more (a cancelled order could
# still be paid late, but nobody is waiting for that). Every other state waits for someone, so an order that
# stays in one too long is worth a look.
RESTING = frozenset(
    {S.CLOSED, S.CANCELLED, S.EXPIRED, S.FULFILLED, S.REFUNDED, S.PARTIALLY_REFUNDED, S.CANCELLED_WITH_REFUND}
)
IN_PROGRESS = frozenset(S) - RESTING


# -- review ----------------------------------------------------------------------------------------

# The staff member's own words stay in a private note (staff can write anything there, a phone number
# included); the transition's reason goes on the public topic and says only what happened.
REVIEW_OPENED = "marked for review by staff"
REVIEW_CLOSED = "review closed by staff"
# their announcement carries the refund the provider confirmed: only that confirmation moves an order there
CLOSE_NOT_MANUAL = frozenset({S.REFUNDED, S.PARTIALLY_REFUNDED})


def mark_for_review(view: OrderView, note: str) -> Decision:
    """Into needs_review with the note; an order already there only gets the note."""
    d = Decision(view)
    if view.state != S.NEEDS_REVIEW and not d.move(S.NEEDS_REVIEW, REVIEW_OPENED):
        raise CommandRefused("review-not-allowed", f"an order that is {view.state} cannot be put under review")
    d.note("review", note)
    return d


def close_review(view: OrderView, target: S, reason: str) -> Decision:
    """Out of needs_review to where the person decided, if the money allows it: no cancel while money is held,
    no `paid`/`fulfillment_pending` unless exactly the total was taken and nothing given back, nothing that
    would let a refund in flight land on a closed order."""
    if view.state != S.NEEDS_REVIEW:
        raise CommandRefused("not-under-review", f"the order is {view.state}, not under review")
    if not ORDER_LIFECYCLE.can(S.NEEDS_REVIEW, target):
        raise CommandRefused("transition-not-allowed", f"a review cannot be closed to {target}")
    if target in CLOSE_NOT_MANUAL:
        raise CommandRefused("transition-not-manual", f"{target} is reached when the provider confirms a refund")
    held = view.captured_amount - view.refunded_amount
    if view.refund_pending_amount and target in (S.CLOSED, S.CANCELLED):
        raise CommandRefused("refund-pending", f"{view.refund_pending_amount} is being refunded; wait for the provider")
    if target == S.CANCELLED and held > 0:
        raise CommandRefused("money-held", "refund the captured money before cancelling")
    if target == S.CANCELLED_WITH_REFUND and (view.captured_amount == 0 or view.refundable_amount > 0):
        raise CommandRefused(
            "refund-first", "cancelled_with_refund needs everything captured refunded or being refunded"
        )
    if target in (S.PAID, S.FULFILLMENT_PENDING):
        if view.captured_amount != view.total or view.refunded_amount or view.refund_pending_amount:
            raise CommandRefused(
                "money-disagrees",
                f"{view.captured_amount} captured and {view.refunded_amount + view.refund_pending_amount}"
                f" refunded against a total of {view.total}: refund or close instead",
            )
        if target == S.FULFILLMENT_PENDING and not view.stock_committed:
            raise CommandRefused(
                "stock-not-committed", "the stock is not committed: close to paid, inventory commits it"
            )
        if target == S.PAID and (view.payment_attempt_id is None or view.payment_intent_id is None):
            raise CommandRefused("payment-unknown", "the order does not know the payment that took the money")
        if target == S.PAID and view.stock_committed:
            raise CommandRefused("stock-committed", "the stock is committed: close to fulfillment_pending")
    d = Decision(view)
    d.move(target, REVIEW_CLOSED, _announcement(view, target))
    d.note("review", f"closed to {target}: {reason}")
    return d


def _announcement(view: OrderView, target: S) -> o.OrderEvent | None:
    if target == S.PAID:
        # inventory commits the stock on order.paid; the saga then moves on to fulfillment_pending
        assert view.payment_attempt_id and view.payment_intent_id
        return o.OrderPaid(
            order_id=view.id,
            attempt_id=view.payment_attempt_id,
            amount=view.captured_amount,
            payment_intent_id=view.payment_intent_id,
            currency=view.currency,
        )
    if target == S.FULFILLMENT_PENDING:
        return o.OrderFulfillmentPending(order_id=view.id)
    return None


# -- four eyes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalView:
    state: str
    requested_by: str


class ApprovalRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def may_decide(approval: ApprovalView, decider: str, *, approving: bool, finance: bool) -> None:
    """Once, by someone who may: finance approves, never a refund they asked for themselves (four eyes); finance
    rejects, and the person who asked may withdraw their own request whatever their role (a rejection moves no
    money). Nobody else decides someone's request for them."""
    if approving and not finance:
        raise ApprovalRefused(403, "forbidden", "a refund above the support limit is approved by finance")
    if not approving and not finance and decider != approval.requested_by:
        raise ApprovalRefused(403, "forbidden", "only finance, or the person who asked for it, may reject a request")
    if approval.state != "pending":
        raise ApprovalRefused(409, "approval-already-decided", f"this request was already {approval.state}")
    if approving and decider == approval.requested_by:
        raise ApprovalRefused(
            403, "four-eyes", "a refund is approved by someone other than the person who asked for it"
        )


def withdrawn(state: str, requested_by: str, decided_by: str | None) -> bool:
    """A rejection by the person who asked is their withdrawal, not finance's refusal: both are stored as
    `rejected`, told apart by who decided."""
    return state == "rejected" and decided_by == requested_by


# -- announcements sent again ------------------------------------------------------------------------


@dataclass(frozen=True)
class LastTransition:
    from_state: str | None
    to_state: str
    reason: str


@dataclass(frozen=True)
class ConfirmedRefund:
    refund_id: str
    amount: int
    currency: str
    restock: bool


def rebuild_announcement(
    view: OrderView,
    last: LastTransition,
    *,
    lines: list[Line],
    hold_seconds: int | None,
    refund: ConfirmedRefund | None,
) -> o.OrderEvent:
    """The event that announced the order's current state, built again from what the order keeps, for when the
    outbox row itself is gone (retention): the same type, the fields the order has, and the transition as the
    audit trail recorded it. ValueError when the order lacks what the payload needs."""
    state = view.state
    transition = o.Transition(from_state=last.from_state, to_state=state.value, reason=last.reason)
    data: o.OrderEvent
    if state == S.DRAFT:
        data = o.OrderPlaced(
            order_id=view.id, currency=view.currency, total=view.total, lines=lines, hold_seconds=hold_seconds
        )
    elif f"order.{state.value}" in o.STATE_CHANGE_EVENTS:
        data = o.state_change(state.value, order_id=view.id, from_state=last.from_state or "", reason=last.reason)
    elif state == S.FULFILLMENT_PENDING:
        data = o.OrderFulfillmentPending(order_id=view.id)
    elif state in (S.PAYMENT_PENDING, S.PAID, S.PAYMENT_AUTHORIZED):
        if not view.payment_attempt_id or not view.payment_intent_id:
            raise ValueError(f"a {state} order without its payment attempt")
        if state == S.PAYMENT_PENDING:
            data = o.OrderPaymentPending(
                order_id=view.id, attempt_id=view.payment_attempt_id, payment_intent_id=view.payment_intent_id
            )
        else:
            kind = o.OrderPaid if state == S.PAID else o.OrderPaymentAuthorized
            data = kind(
                order_id=view.id,
                attempt_id=view.payment_attempt_id,
                payment_intent_id=view.payment_intent_id,
                amount=view.captured_amount or view.total,
                currency=view.currency,
            )
    elif state in (S.REFUNDED, S.PARTIALLY_REFUNDED):
        if refund is None:
            raise ValueError(f"a {state} order without a confirmed refund")
        refund_kind = o.OrderRefunded if state == S.REFUNDED else o.OrderPartiallyRefunded
        data = refund_kind(
            order_id=view.id,
            refund_id=refund.refund_id,
            amount=refund.amount,
            currency=refund.currency,
            refunded_total=view.refunded_amount,
            restock=refund.restock,
        )
    else:  # pragma: no cover - every state is one of the above
        raise ValueError(f"no announcement known for {state}")
    return data.model_copy(update={"transition": transition})
