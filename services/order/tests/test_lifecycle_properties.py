"""The order lifecycle under any stream of facts: random order, duplicates, late and unexpected events.

Drives the pure saga (domain/saga.py) the handlers use, so every property here holds for the service."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from handshake_order.domain import saga
from handshake_order.domain.states import ORDER_LIFECYCLE
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import ORDER_EVENTS, TOPIC_OF, payload_model
from handshake_shared.events import inventory as inv
from handshake_shared.events import payment as pay

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

TOTAL = 5000
# payment requests one order may make (the first and the retries)
MAX_ATTEMPTS = 3
ORDER = "00000000-0000-4000-8000-000000000001"
# ids as payment and inventory make them: UUIDs
A1 = "00000000-0000-4000-8000-0000000000a1"
A2 = "00000000-0000-4000-8000-0000000000a2"
R1 = "00000000-0000-4000-8000-0000000000b1"
RESERVATION = "00000000-0000-4000-8000-0000000000c1"
FULFILLED_LIKE = {S.FULFILLMENT_PENDING, S.PARTIALLY_FULFILLED, S.FULFILLED}


class OrderLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.view = saga.OrderView(id=ORDER, state=S.DRAFT, total=TOTAL, currency="EUR")
        self.captures = 0  # successes the order accepted as its payment
        self.requested_refunds: dict[str, int] = {}  # refund_id -> amount, asked of payment
        self.answered: set[str] = set()
        self.confirmed: set[str] = set()  # refunds the provider confirmed (and did not reverse yet)
        self.history: list[tuple[S, S]] = []
        self.flagged = False  # a mismatch or a dispute was reported
        # inventory's truth, not the order's belief: units are sold by inventory.committed and go back
        # to the shelf when the order announces order.cancelled (inventory restocks a committed reservation)
        self.sold = False
        self.n = 0
        # what a subscriber of order.events.v1 knows: the state rebuilt from the announced transitions alone
        self.topic_state = S.DRAFT.value

    def apply(self, decision: saga.Decision) -> None:
        for current, target, _ in decision.transitions:
            assert ORDER_LIFECYCLE.can(current, target), (current, target)
            self.history.append((current, target))
        announced = [e.transition for e in decision.emits if e.transition is not None]
        assert [(t.from_state, t.to_state, t.reason) for t in announced] == decision.transitions
        for data in decision.emits:
            # what goes on the topic is a registered order event whose payload survives the wire
            assert TOPIC_OF[data.event_type] == ORDER_EVENTS
            assert payload_model(data.event_type).model_validate(data.model_dump(mode="json")) == data
            if data.transition is not None:
                assert data.transition.from_state == self.topic_state
                assert data.event_type == f"order.{data.transition.to_state}"
                self.topic_state = data.transition.to_state
            if data.event_type == "order.refund_requested":
                self.requested_refunds[data.refund_id] = data.amount
            if data.event_type == "order.cancelled":
                self.sold = False
            if data.event_type == "order.fulfillment_pending":
                assert self.sold and decision.view.captured_amount == TOTAL
        if any(t == S.PAID for _, t, _ in decision.transitions):
            self.captures += 1
        self.view = decision.view

    def fresh(self) -> str:
        self.n += 1
        return f"evt-{self.n}"

    # -- inventory facts -------------------------------------------------------------------
    @rule()
    def reserved(self) -> None:
        p = inv.InventoryReserved(order_id=ORDER, reservation_id=RESERVATION, expires_at=datetime.now(UTC), lines=[])
        self.apply(saga.on_reserved(self.view, p, self.fresh()))

    @rule()
    def rejected(self) -> None:
        p = inv.InventoryRejected(
            order_id=ORDER, lines=[inv.RejectedLine(sku="A", requested=1, available=0, reason="x")]
        )
        self.apply(saga.on_rejected(self.view, p))

    @rule()
    def expired(self) -> None:
        self.apply(
            saga.on_reservation_expired(
                self.view, inv.InventoryReservationExpired(order_id=ORDER, reservation_id=RESERVATION, reason="expired")
            )
        )

    @rule(rereserved=st.booleans())
    def committed(self, rereserved: bool) -> None:
        self.sold = True
        self.apply(
            saga.on_committed(
                self.view, inv.InventoryCommitted(order_id=ORDER, reservation_id=RESERVATION, rereserved=rereserved)
            )
        )

    @rule()
    def commit_failed(self) -> None:
        self.apply(
            saga.on_commit_failed(self.view, inv.InventoryCommitFailed(order_id=ORDER, reason="insufficient_stock"))
        )

    # -- payment facts ---------------------------------------------------------------------
    @rule(attempt=st.sampled_from([A1, A2]))
    def intent_created(self, attempt: str) -> None:
        p = pay.PaymentIntentCreated(
            order_id=ORDER, attempt_id=attempt, payment_intent_id=f"pi_{attempt}", amount=TOTAL, currency="EUR"
        )
        self.apply(saga.on_intent_created(self.view, p))

    @rule(attempt=st.sampled_from([A1, A2]), amount=st.sampled_from([TOTAL, TOTAL, TOTAL - 1]))
    def authorized(self, attempt: str, amount: int) -> None:
        p = pay.PaymentAuthorized(
            order_id=ORDER, attempt_id=attempt, payment_intent_id=f"pi_{attempt}", amount=amount, currency="eur"
        )
        self.apply(saga.on_authorized(self.view, p))

    @rule(attempt=st.sampled_from([A1, A2]), amount=st.sampled_from([TOTAL, TOTAL, TOTAL, TOTAL + 100]))
    def succeeded(self, attempt: str, amount: int) -> None:
        p = pay.PaymentSucceeded(
            order_id=ORDER, attempt_id=attempt, payment_intent_id=f"pi_{attempt}", amount=amount, currency="eur"
        )
        self.apply(saga.on_succeeded(self.view, p))

    @rule(attempt=st.sampled_from([A1, A2]))
    def failed(self, attempt: str) -> None:
        self.apply(
            saga.on_failed(
                self.view, pay.PaymentFailed(order_id=ORDER, attempt_id=attempt, failure_code="card_declined")
            )
        )

    @rule(attempt=st.sampled_from([A1, A2]))
    def capture_failed(self, attempt: str) -> None:
        self.apply(saga.on_capture_failed(self.view, pay.PaymentCaptureFailed(order_id=ORDER, attempt_id=attempt)))

    @rule(captured=st.booleans())
    def mismatch_found(self, captured: bool) -> None:
        p = pay.PaymentMismatch(
            order_id=ORDER,
            attempt_id=A1,
            payment_intent_id="pi_1",
            expected_amount=TOTAL,
            expected_currency="EUR",
            provider_amount=TOTAL - 7,
            provider_currency="eur",
            detected_by="reconciliation",
            captured=captured,
        )
        before = self.view
        self.apply(saga.on_mismatch(self.view, p))
        if captured and not before.captured_amount:
            assert self.view.captured_amount == TOTAL - 7  # held for the order, refundable from review
        self.flagged = True

    @rule()
    def disputed(self) -> None:
        p = pay.PaymentDisputed(
            order_id=ORDER,
            attempt_id=A1,
            payment_intent_id="pi_1",
            dispute_id="dp_1",
            amount=TOTAL,
            currency="eur",
            reason="fraudulent",
        )
        self.apply(saga.on_disputed(self.view, p))
        self.flagged = True

    @precondition(lambda self: bool(set(self.requested_refunds) - self.answered))
    @rule(data=st.data(), ok=st.booleans())
    def refund_answered(self, data: st.DataObject, ok: bool) -> None:
        refund_id = data.draw(st.sampled_from(sorted(set(self.requested_refunds) - self.answered)))
        amount = self.requested_refunds[refund_id]
        self.answered.add(refund_id)
        if ok:
            p = pay.PaymentRefunded(
                order_id=ORDER,
                refund_id=refund_id,
                attempt_id=A1,
                payment_intent_id="pi_1",
                provider_refund_id=f"re_{refund_id}",
                amount=amount,
                currency="eur",
                reason="r",
            )
            self.apply(saga.on_refunded(self.view, p, requested_here=True, restock=False))
            self.confirmed.add(refund_id)
        else:
            p = pay.PaymentRefundFailed(order_id=ORDER, refund_id=refund_id, amount=amount, currency="EUR", reason="r")
            self.apply(saga.on_refund_failed(self.view, p))

    @precondition(lambda self: bool(self.confirmed))
    @rule(data=st.data())
    def refund_reversed_by_the_bank(self, data: st.DataObject) -> None:
        refund_id = data.draw(st.sampled_from(sorted(self.confirmed)))
        self.confirmed.discard(refund_id)
        p = pay.PaymentRefundReversed(
            order_id=ORDER,
            refund_id=refund_id,
            attempt_id=A1,
            payment_intent_id="pi_1",
            provider_refund_id=f"re_{refund_id}",
            amount=self.requested_refunds[refund_id],
            currency="EUR",
            reason="expired_or_canceled_card",
        )
        refunded_before = self.view.refunded_amount
        self.apply(saga.on_refund_reversed(self.view, p))
        assert self.view.refunded_amount == refunded_before - p.amount  # owed to the customer again
        assert self.view.state == S.NEEDS_REVIEW or not ORDER_LIFECYCLE.can(self.view.state, S.NEEDS_REVIEW)

    @rule()
    def automatic_refund_of_a_second_capture(self) -> None:
        p = pay.PaymentRefunded(
            order_id=ORDER,
            refund_id=R1,
            attempt_id=A2,
            payment_intent_id="pi_a2",
            provider_refund_id="re_auto",
            amount=TOTAL,
            currency="eur",
            reason="duplicate_capture",
            automatic=True,
        )
        before = self.view
        self.apply(saga.on_refunded(self.view, p, requested_here=False, restock=False))
        assert self.view == before  # recorded as a note, never counted against this order's capture

    # -- commands --------------------------------------------------------------------------
    @rule()
    def customer_cancels(self) -> None:
        try:
            self.apply(saga.cancel_by_customer(self.view))
        except saga.CommandRefused:
            assert self.view.state not in saga.CUSTOMER_CANCELLABLE

    @rule()
    def customer_retries_payment(self) -> None:
        try:
            self.apply(saga.retry_payment(self.view, seed=self.fresh(), max_attempts=MAX_ATTEMPTS))
        except saga.CommandRefused as refused:
            assert self.view.state != S.PAYMENT_FAILED or (
                refused.code == "payment-attempts-exhausted" and self.view.payment_attempts >= MAX_ATTEMPTS
            )
        # the cap holds whatever else happened to the order
        assert self.view.payment_attempts <= MAX_ATTEMPTS

    @rule(amount=st.integers(min_value=1, max_value=TOTAL + 10))
    def staff_refunds(self, amount: int) -> None:
        with contextlib.suppress(saga.CommandRefused):
            self.apply(
                saga.request_refund(
                    self.view,
                    refund_id=uuid.uuid5(uuid.NAMESPACE_URL, self.fresh()),
                    amount=amount,
                    reason="r",
                    restock=False,
                    actor="s",
                )
            )

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def a_subscriber_knows_the_state_from_the_topic_alone(self) -> None:
        assert self.topic_state == self.view.state

    @invariant()
    def never_fulfilled_without_money_and_stock(self) -> None:
        if self.view.state in FULFILLED_LIKE:
            assert self.view.captured_amount == TOTAL
            assert self.view.stock_committed and self.sold

    @invariant()
    def refunds_never_exceed_captures(self) -> None:
        v = self.view
        assert v.refunded_amount >= 0
        assert v.refund_pending_amount >= 0
        assert v.refunded_amount + v.refund_pending_amount <= v.captured_amount

    @invariant()
    def money_is_taken_at_most_once(self) -> None:
        assert self.captures <= 1

    @invariant()
    def only_a_person_takes_an_order_out_of_review(self) -> None:
        # after a mismatch, a dispute or a dead letter, no fact moves the order on by itself
        assert not any(current == S.NEEDS_REVIEW for current, _ in self.history)
        if self.flagged:  # flagged for review unless the order had already reached an end with nothing to review
            assert self.view.state == S.NEEDS_REVIEW or not ORDER_LIFECYCLE.can(self.view.state, S.NEEDS_REVIEW)

    @invariant()
    def a_mismatched_charge_is_never_fulfilled(self) -> None:
        if self.view.captured_amount not in (0, TOTAL):
            assert self.view.state not in FULFILLED_LIKE


def test_money_after_the_stock_went_back_waits_for_inventory_to_commit_again() -> None:
    """Capture failed after inventory sold the units; order.cancelled put them back. A second attempt's
    payment arriving late must not be fulfilled on the strength of the old commit."""
    m = OrderLifecycle()
    m.reserved()
    m.intent_created(A1)
    m.authorized(A1, TOTAL)
    m.committed(rereserved=False)
    m.capture_failed(A1)
    assert (m.view.state, m.sold) == (S.CANCELLED, False)
    m.succeeded(A2, TOTAL)
    m.never_fulfilled_without_money_and_stock()
    assert (m.view.state, m.view.stock_committed) == (S.PAID, False)
    m.committed(rereserved=True)  # inventory reserved the units again for the late money
    assert m.view.state == S.FULFILLMENT_PENDING


def test_money_after_the_stock_went_back_is_refunded_when_the_units_are_gone() -> None:
    m = OrderLifecycle()
    m.reserved()
    m.intent_created(A1)
    m.authorized(A1, TOTAL)
    m.committed(rereserved=False)
    m.capture_failed(A1)
    m.succeeded(A2, TOTAL)
    m.commit_failed()
    assert m.view.state == S.CANCELLED_WITH_REFUND
    assert list(m.requested_refunds.values()) == [TOTAL]


def test_inventory_denying_the_stock_of_an_order_in_fulfilment_flags_it() -> None:
    m = OrderLifecycle()
    m.reserved()
    m.intent_created(A1)
    m.succeeded(A1, TOTAL)
    m.committed(rereserved=False)
    assert m.view.state == S.FULFILLMENT_PENDING
    m.commit_failed()
    assert m.view.state == S.NEEDS_REVIEW


def test_a_failed_automatic_refund_is_flagged_and_staff_can_give_the_money_back() -> None:
    m = OrderLifecycle()
    m.reserved()
    m.intent_created(A1)
    m.succeeded(A1, TOTAL)
    m.commit_failed()  # the units were gone: the order asks for its money to go back
    assert m.view.state == S.CANCELLED_WITH_REFUND
    m.refund_answered(_Draw(next(iter(m.requested_refunds))), ok=False)
    assert (m.view.state, m.view.refundable_amount) == (S.NEEDS_REVIEW, TOTAL)
    m.staff_refunds(TOTAL)
    staff_refund = [r for r in m.requested_refunds if r not in m.answered]
    assert len(staff_refund) == 1 and m.requested_refunds[staff_refund[0]] == TOTAL
    m.refund_answered(_Draw(staff_refund[0]), ok=True)
    # counted, announced, and the order stays flagged until the person closes the review
    assert (m.view.state, m.view.refunded_amount, m.view.refundable_amount) == (S.NEEDS_REVIEW, TOTAL, 0)
    m.only_a_person_takes_an_order_out_of_review()
    m.refunds_never_exceed_captures()


class _Draw:
    """Stands in for hypothesis' data object when a rule is called by hand."""

    def __init__(self, value: object) -> None:
        self.value = value

    def draw(self, strategy: object) -> object:
        return self.value


OrderLifecycle.TestCase.settings = settings(
    max_examples=1000, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestOrderLifecycle = OrderLifecycle.TestCase
