"""Every transition the order makes is announced by one order.<state> event carrying it, whoever makes it:
the saga, staff by hand, the dead-letter flag. Pure: the Decision is what repository.apply writes."""

from __future__ import annotations

import pytest

from handshake_order.api import MANUAL_TARGETS
from handshake_order.domain import saga
from handshake_order.domain.states import ORDER_LIFECYCLE, OrderState
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import inventory as inv
from handshake_shared.events import order as o
from handshake_shared.events import payment as pay

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ORDER = "00000000-0000-4000-8000-000000000002"
# ids as payment and inventory make them: UUIDs
A1 = "00000000-0000-4000-8000-0000000000a1"
R1 = "00000000-0000-4000-8000-0000000000b1"
R2 = "00000000-0000-4000-8000-0000000000b2"


def view(state: S, **kw) -> saga.OrderView:
    return saga.OrderView(id=ORDER, state=state, total=1000, currency="EUR", **kw)


def announced(decision: saga.Decision) -> list[tuple[str, str | None, str]]:
    return [(e.event_type, e.transition.from_state, e.transition.to_state) for e in decision.emits if e.transition]


def test_the_published_state_names_are_the_lifecycle_states():
    assert list(o.ORDER_STATES) == [s.value for s in OrderState]


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c in S for t in sorted(MANUAL_TARGETS) if ORDER_LIFECYCLE.can(c, t)],
)
def test_a_manual_transition_is_announced(current: S, target: S) -> None:
    d = saga.manual_transition(view(current), target, "shipped by DHL (manual)")
    (event,) = d.emits
    assert event.event_type == f"order.{target.value}"
    assert event.transition == o.Transition(
        from_state=current.value, to_state=target.value, reason="shipped by DHL (manual)"
    )
    assert (event.from_state, event.to_state, event.reason) == (current, target, "shipped by DHL (manual)")


def test_a_declined_payment_is_announced():
    d = saga.on_failed(
        view(S.PAYMENT_PENDING, payment_attempt_id=A1),
        pay.PaymentFailed(order_id=ORDER, attempt_id=A1, failure_code="card_declined"),
    )
    assert announced(d) == [("order.payment_failed", "payment_pending", "payment_failed")]
    assert d.emits[0].transition.reason == "payment failed: card_declined"


def test_a_failed_capture_announces_both_steps_in_order():
    d = saga.on_capture_failed(view(S.PAYMENT_AUTHORIZED), pay.PaymentCaptureFailed(order_id=ORDER, attempt_id=A1))
    assert announced(d) == [
        ("order.capture_failed", "payment_authorized", "capture_failed"),
        ("order.cancelled", "capture_failed", "cancelled"),
    ]


def test_stock_lost_after_payment_announces_the_state_then_asks_for_the_refund():
    d = saga.on_commit_failed(
        view(S.PAID, captured_amount=1000), inv.InventoryCommitFailed(order_id=ORDER, reason="gone")
    )
    assert [e.event_type for e in d.emits] == ["order.cancelled_with_refund", "order.refund_requested"]
    assert announced(d) == [("order.cancelled_with_refund", "paid", "cancelled_with_refund")]


def test_payment_then_committed_stock_announces_paid_then_fulfillment_pending():
    d = saga.on_succeeded(
        view(S.PAYMENT_PENDING, stock_committed=True),
        pay.PaymentSucceeded(order_id=ORDER, attempt_id=A1, payment_intent_id="pi", amount=1000, currency="eur"),
    )
    assert announced(d) == [
        ("order.paid", "payment_pending", "paid"),
        ("order.fulfillment_pending", "paid", "fulfillment_pending"),
    ]
    assert isinstance(d.emits[0], o.OrderPaid) and d.emits[0].amount == 1000


def test_a_refund_confirmed_under_review_is_announced_without_a_transition():
    d = saga.on_refunded(
        view(S.NEEDS_REVIEW, captured_amount=1000),
        pay.PaymentRefunded(
            order_id=ORDER,
            refund_id=R1,
            attempt_id=A1,
            payment_intent_id="pi",
            provider_refund_id="re",
            amount=400,
            currency="eur",
            reason="x",
        ),
        requested_here=True,
        restock=False,
    )
    assert [e.event_type for e in d.emits] == ["order.partially_refunded"]
    assert announced(d) == [] and d.transitions == []


def test_a_partial_refund_after_a_partial_refund_is_a_transition_announced_again():
    d = saga.on_refunded(
        view(S.PARTIALLY_REFUNDED, captured_amount=1000, refunded_amount=300),
        pay.PaymentRefunded(
            order_id=ORDER,
            refund_id=R2,
            attempt_id=A1,
            payment_intent_id="pi",
            provider_refund_id="re",
            amount=300,
            currency="eur",
            reason="x",
        ),
        requested_here=True,
        restock=False,
    )
    assert announced(d) == [("order.partially_refunded", "partially_refunded", "partially_refunded")]


def test_a_move_cannot_be_announced_by_another_type_nor_happen_unannounced():
    d = saga.Decision(view(S.PAID))
    with pytest.raises(TypeError):
        d.move(
            S.FULFILLMENT_PENDING,
            "stock committed",
            o.OrderPaid(order_id=ORDER, attempt_id=A1, payment_intent_id="pi", amount=1, currency="EUR"),
        )
    with pytest.raises(TypeError):  # order.fulfillment_pending has a payload of its own, which the caller builds
        d.move(S.FULFILLMENT_PENDING, "stock committed")
    with pytest.raises(TypeError):  # a transition is never a plain emit
        d.emit(
            o.OrderFulfillmentPending(
                order_id=ORDER, transition=o.Transition(from_state="paid", to_state="fulfillment_pending", reason="x")
            )
        )
    assert d.transitions == [] and d.emits == [] and d.view.state == S.PAID
