"""The pure rules behind the staff operations: the reference and its id range, the contact email, where a
review may be closed to given the money, and the four-eyes rule."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handshake_order.domain.operations import (
    IN_PROGRESS,
    ApprovalRefused,
    ApprovalView,
    ConfirmedRefund,
    LastTransition,
    close_review,
    mark_for_review,
    may_decide,
    normalize_email,
    rebuild_announcement,
    reference_of,
    reference_range,
    withdrawn,
)
from handshake_order.domain.saga import CommandRefused, OrderView
from handshake_order.domain.states import OrderState as S
from handshake_shared.events import order as o

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

OID = "3f2a9c1e-0000-4000-8000-000000000001"
# ids as payment and inventory make them: UUIDs
A1 = "00000000-0000-4000-8000-0000000000a1"
R1 = "00000000-0000-4000-8000-0000000000b1"


@given(st.uuids())
def test_an_order_lies_inside_the_id_range_of_its_own_reference(order_id: uuid.UUID) -> None:
    ref = reference_of(order_id)
    assert ref.startswith("HS-") and len(ref) == 11 and ref[3:] == ref[3:].upper()
    bounds = reference_range(ref)
    assert bounds is not None and bounds[0] <= order_id <= bounds[1]
    assert reference_range(ref.lower()) == bounds  # read out on the phone, typed in any case


def test_the_range_of_a_reference_holds_no_order_of_another_reference() -> None:
    low, high = reference_range("HS-3F2A9C1E")
    assert reference_of(low) == reference_of(high) == "HS-3F2A9C1E"
    assert reference_of(uuid.UUID(int=high.int + 1)) == "HS-3F2A9C1F"
    assert reference_of(uuid.UUID(int=low.int - 1)) == "HS-3F2A9C1D"
    for not_a_reference in ("HS-3F2A9C1", "HS-3F2A9C1EE", "XX-3F2A9C1E", "HS-3F2A9C1G", "", "HS 3F2A9C1E"):
        assert reference_range(not_a_reference) is None


def test_an_email_is_stored_as_staff_will_search_for_it() -> None:
    assert normalize_email("  Ann.Lee+shop@Example.COM ") == "ann.lee+shop@example.com"
    for bad in (
        "ann",
        "ann@",
        "@example.com",
        "ann@example",
        "ann lee@example.com",
        "a@b@example.com",
        "ann@example..com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 250 + ".com",
    ):
        with pytest.raises(ValueError):
            normalize_email(bad)


def test_only_orders_that_wait_for_someone_count_as_stuck() -> None:
    assert {S.DRAFT, S.PAYMENT_PENDING, S.PAID, S.NEEDS_REVIEW, S.FULFILLMENT_PENDING} <= IN_PROGRESS
    assert not {S.CLOSED, S.CANCELLED, S.EXPIRED, S.FULFILLED, S.REFUNDED} & IN_PROGRESS


def view(state: S, **kw) -> OrderView:
    return OrderView(id=OID, state=state, total=1000, currency="EUR", **kw)


def paid_view(state: S = S.NEEDS_REVIEW, **kw) -> OrderView:
    return view(state, captured_amount=1000, payment_attempt_id=A1, payment_intent_id="pi_1", **kw)


def test_marking_for_review_moves_once_and_keeps_the_note_private() -> None:
    d = mark_for_review(view(S.PAYMENT_PENDING), "customer says card was stolen, call +49 30 1234")
    assert d.transitions == [(S.PAYMENT_PENDING, S.NEEDS_REVIEW, "marked for review by staff")]
    assert "+49" not in d.emits[0].model_dump_json()  # the public announcement does not carry the note
    assert d.notes == [("review", "customer says card was stolen, call +49 30 1234")]
    again = mark_for_review(view(S.NEEDS_REVIEW), "second look")
    assert again.transitions == [] and again.emits == [] and again.notes == [("review", "second look")]
    with pytest.raises(CommandRefused) as refused:
        mark_for_review(view(S.CLOSED), "too late")
    assert refused.value.code == "review-not-allowed"


@pytest.mark.parametrize(
    ("order", "target", "code"),
    [
        (view(S.PAID), S.CLOSED, "not-under-review"),
        (paid_view(), S.CANCELLED, "money-held"),
        (paid_view(refund_pending_amount=1000), S.CLOSED, "refund-pending"),
        (paid_view(), S.CANCELLED_WITH_REFUND, "refund-first"),
        (paid_view(), S.REFUNDED, "transition-not-manual"),
        (paid_view(), S.DRAFT, "transition-not-allowed"),
        (paid_view(refunded_amount=100), S.PAID, "money-disagrees"),
        (
            view(S.NEEDS_REVIEW, captured_amount=900, payment_attempt_id=A1, payment_intent_id="pi_1"),
            S.PAID,
            "money-disagrees",
        ),
        (paid_view(), S.FULFILLMENT_PENDING, "stock-not-committed"),
        (paid_view(stock_committed=True), S.PAID, "stock-committed"),
    ],
)
def test_a_review_is_not_closed_where_the_money_says_otherwise(order: OrderView, target: S, code: str) -> None:
    with pytest.raises(CommandRefused) as refused:
        close_review(order, target, "checked with the bank")
    assert refused.value.code == code


def test_closing_a_review_announces_the_target_and_records_who_decided_why() -> None:
    d = close_review(paid_view(), S.PAID, "amount confirmed with the bank")
    assert d.transitions == [(S.NEEDS_REVIEW, S.PAID, "review closed by staff")]
    paid = d.emits[0]
    assert isinstance(paid, o.OrderPaid) and (paid.amount, str(paid.attempt_id)) == (
        1000,
        A1,
    )  # inventory commits on it
    assert d.notes == [("review", "closed to paid: amount confirmed with the bank")]
    assert (
        close_review(paid_view(stock_committed=True), S.FULFILLMENT_PENDING, "ok").view.state == S.FULFILLMENT_PENDING
    )
    assert close_review(paid_view(refunded_amount=1000), S.CLOSED, "all given back").view.state == S.CLOSED
    assert close_review(paid_view(refunded_amount=1000), S.CANCELLED, "all given back").view.state == S.CANCELLED
    assert close_review(view(S.NEEDS_REVIEW), S.CANCELLED, "nothing taken").view.state == S.CANCELLED


def test_four_eyes_a_request_is_approved_once_and_never_by_who_asked() -> None:
    pending = ApprovalView(state="pending", requested_by="sam")
    may_decide(pending, "fiona", approving=True, finance=True)
    may_decide(pending, "fiona", approving=False, finance=True)
    may_decide(pending, "sam", approving=False, finance=False)  # withdrawing one's own request moves no money
    with pytest.raises(ApprovalRefused) as same:
        may_decide(pending, "sam", approving=True, finance=True)
    assert (same.value.status, same.value.code) == (403, "four-eyes")
    # nobody but finance approves, and nobody but finance or the requester rejects
    for decider, approving in (("sam", True), ("sue", True), ("sue", False)):
        with pytest.raises(ApprovalRefused) as outsider:
            may_decide(pending, decider, approving=approving, finance=False)
        assert (outsider.value.status, outsider.value.code) == (403, "forbidden")
    for decided in ("approved", "rejected"):
        for approving in (True, False):
            with pytest.raises(ApprovalRefused) as twice:
                may_decide(ApprovalView(state=decided, requested_by="sam"), "fiona", approving=approving, finance=True)
            assert (twice.value.status, twice.value.code) == (409, "approval-already-decided")
        with pytest.raises(ApprovalRefused) as late:
            may_decide(ApprovalView(state=decided, requested_by="sam"), "sam", approving=False, finance=False)
        assert (late.value.status, late.value.code) == (409, "approval-already-decided")
    assert withdrawn("rejected", "sam", "sam") and not withdrawn("rejected", "sam", "fiona")
    assert not withdrawn("pending", "sam", None) and not withdrawn("approved", "sam", "fiona")


def test_a_lost_announcement_is_rebuilt_with_the_type_and_fields_subscribers_know() -> None:
    last = LastTransition(from_state="payment_pending", to_state="paid", reason="payment succeeded")
    paid = rebuild_announcement(paid_view(S.PAID), last, lines=[], hold_seconds=None, refund=None)
    assert isinstance(paid, o.OrderPaid) and paid.payment_intent_id == "pi_1"
    assert paid.transition == o.Transition(from_state="payment_pending", to_state="paid", reason="payment succeeded")
    refunded = rebuild_announcement(
        paid_view(S.PARTIALLY_REFUNDED, refunded_amount=300),
        LastTransition(
            from_state="fulfillment_pending", to_state="partially_refunded", reason=f"refund {R1} of 300 confirmed"
        ),
        lines=[],
        hold_seconds=None,
        refund=ConfirmedRefund(R1, 300, "EUR", False),
    )
    assert refunded.event_type == "order.partially_refunded" and refunded.refunded_total == 300
    closed = rebuild_announcement(
        view(S.CLOSED), LastTransition("fulfilled", "closed", "done"), lines=[], hold_seconds=None, refund=None
    )
    assert isinstance(closed, o.OrderClosed) and (closed.from_state, closed.reason) == ("fulfilled", "done")
    with pytest.raises(ValueError):
        rebuild_announcement(
            view(S.REFUNDED, captured_amount=1000, refunded_amount=1000),
            LastTransition("paid", "refunded", "x"),
            lines=[],
            hold_seconds=None,
            refund=None,
        )


def test_a_search_cursor_round_trips_and_one_nobody_handed_out_is_refused_not_a_server_error() -> None:
    import base64
    from datetime import UTC, datetime

    from handshake_order.search import BadCursor, decode_cursor, encode_cursor

    at, order_id = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), uuid.UUID(OID)
    assert decode_cursor(encode_cursor(at, order_id)) == (at, order_id)
    forged = [
        b'["0001-01-01T00:00:00+05:00","' + OID.encode() + b'"]',
        b"[1,2]",
        b'{"a":1,"b":2}',
        b"\xff",
        b'["2026-12-01T10:00:00","' + OID.encode() + b'"]',
        b'["2026-12-01T10:00:00+00:00","nope"]',
    ]
    for raw in [base64.urlsafe_b64encode(f).decode() for f in forged] + ["garbage", "", "!!"]:
        with pytest.raises(BadCursor):
            decode_cursor(raw)
