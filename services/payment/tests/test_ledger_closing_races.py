"""Two races between an operation under way and a fact that ends it, decided by the pure ledger.

A capture is under way when the provider reports the intent cancelled: our own release after a refused
capture, or the authorization expiring. The order must hear that its capture failed (it waits for that, with
its stock held); a bare `payment.canceled` would only be noted, and the capture's own answer, coming second,
would find nothing left to move.

An order closed while its intent was being made: the cancel under way closes the intent and ends the
attempt. The intent is not announced meanwhile, or a closed order's customer could be handed a payable
session."""

from __future__ import annotations

import uuid

import pytest

from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.recovery import CancelPoint, CapturePoint
from handshake_shared.events import payment as pay

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

ORDER = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
ATTEMPT = uuid.UUID("00000000-0000-4000-8000-0000000000d2")


def authorized(**columns: object) -> L.Ledger:
    attempt = L.Attempt(ATTEMPT, ORDER, A.AUTHORIZED, 2500, "EUR", intent_id="pi_1", **columns)  # type: ignore[arg-type]
    return L.Ledger(ORDER, attempts=(attempt,))


def cancelled_at_provider(ledger: L.Ledger) -> L.Decision:
    return L.end_attempt(
        ledger, ATTEMPT, A.CANCELED, "payment_intent.canceled", intent_id="pi_1", code="automatic", message=None
    )


def test_a_refused_capture_whose_release_is_reported_first_ends_as_capture_failed_with_the_refusal() -> None:
    ledger = authorized(
        capture_point=CapturePoint.SETTLED_AT_PROVIDER,
        capture_amount=2500,
        failure_code="card_declined",
        failure_message="The card was declined.",
    )
    decision = cancelled_at_provider(ledger)

    assert [(m.source, m.target) for m in decision.moves] == [(A.AUTHORIZED, A.CAPTURE_FAILED)]
    assert [type(e) for e in decision.emits] == [pay.PaymentCaptureFailed]
    assert (decision.emits[0].failure_code, decision.emits[0].failure_message) == (
        "card_declined",
        "The card was declined.",
    )
    after = L.evolve(ledger, decision).attempt(ATTEMPT)
    assert after.state == A.CAPTURE_FAILED and after.capture_point == CapturePoint.FINISHED

    # the capture's own answer, second, finds it answered: nothing moves, nothing is announced twice
    again = L.capture_refused(L.evolve(ledger, decision), ATTEMPT, "card_declined", "The card was declined.")
    assert (again.moves, again.emits, again.outcome) == ([], [], "refused")


def test_an_authorization_that_expires_while_its_capture_is_asked_for_ends_as_capture_failed() -> None:
    decision = cancelled_at_provider(authorized(capture_point=CapturePoint.REQUESTED, capture_amount=2500))
    assert [(m.source, m.target) for m in decision.moves] == [(A.AUTHORIZED, A.CAPTURE_FAILED)]
    assert [(type(e), e.failure_code) for e in decision.emits] == [(pay.PaymentCaptureFailed, L.AUTHORIZATION_GONE)]


def test_an_authorization_cancelled_with_no_capture_asked_is_announced_as_cancelled() -> None:
    decision = cancelled_at_provider(authorized())
    assert [(m.source, m.target) for m in decision.moves] == [(A.AUTHORIZED, A.CANCELED)]
    assert [(type(e), e.failure_code) for e in decision.emits] == [(pay.PaymentCanceled, "automatic")]


def test_an_intent_made_for_an_order_that_closed_meanwhile_is_not_announced() -> None:
    attempt = L.Attempt(
        ATTEMPT,
        ORDER,
        A.CREATING,
        2500,
        "EUR",
        intent_id="pi_1",
        cancel_point=CancelPoint.REQUESTED,
        cancel_code="order_cancelled",
    )
    decision = L.announce_intent(attempt, None)
    assert (decision.moves, decision.emits, decision.outcome) == ([], [], "closing")

    # once the cancel is finished (the attempt left `creating`), there is nothing to announce either
    ended = L.Attempt(ATTEMPT, ORDER, A.CANCELED, 2500, "EUR", intent_id="pi_1", cancel_point=CancelPoint.FINISHED)
    assert L.announce_intent(ended, None).emits == []

    # without a cancel under way the intent is announced as before
    plain = L.Attempt(ATTEMPT, ORDER, A.CREATING, 2500, "EUR", intent_id="pi_1")
    assert [type(e) for e in L.announce_intent(plain, None).emits] == [pay.PaymentIntentCreated]
