"""The rule staff read next to Stripe's live view of an attempt: does our stored attempt say what Stripe says?"""

from __future__ import annotations

import pytest

from handshake_payment.domain.live import provider_live_agrees

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def agrees(
    state: str,
    live_status: str,
    *,
    amount: int = 1200,
    currency: str = "EUR",
    live_amount: int = 1200,
    live_currency: str = "eur",
    payment_error: bool = False,
) -> bool:
    return provider_live_agrees(
        state,
        amount,
        currency,
        live_status=live_status,
        live_amount=live_amount,
        live_currency=live_currency,
        payment_error=payment_error,
    )


def test_stripe_succeeded_while_we_still_wait_for_payment_disagrees() -> None:
    # the webhook never came: reconciliation would move the attempt to succeeded
    assert not agrees("requires_payment", "succeeded")


def test_the_same_outcome_on_both_sides_agrees() -> None:
    assert agrees("succeeded", "succeeded")
    assert agrees("requires_payment", "requires_payment_method")
    assert agrees("requires_payment", "requires_action")
    assert agrees("authorized", "requires_capture")
    assert agrees("processing", "processing")
    assert agrees("canceled", "canceled")


def test_a_refused_capture_agrees_with_the_authorization_stripe_shows_cancelled() -> None:
    assert agrees("capture_failed", "canceled")


def test_a_decline_reads_as_failed() -> None:
    assert agrees("failed", "requires_payment_method", payment_error=True)
    # we never heard of the decline
    assert not agrees("requires_payment", "requires_payment_method", payment_error=True)


def test_a_failed_attempt_whose_customer_retries_with_another_card_still_agrees() -> None:
    assert agrees("failed", "requires_action")


@pytest.mark.parametrize("state", ["succeeded", "authorized", "canceled"])
def test_an_outcome_we_stored_that_stripe_does_not_show_disagrees(state: str) -> None:
    assert not agrees(state, "requires_payment_method")


def test_another_amount_or_currency_at_stripe_disagrees_whatever_the_status() -> None:
    assert not agrees("succeeded", "succeeded", live_amount=1100)
    assert not agrees("succeeded", "succeeded", live_currency="usd")


def test_an_unknown_status_or_state_never_agrees() -> None:
    assert not agrees("succeeded", "some_new_status")
    assert not agrees("mystery", "succeeded")
