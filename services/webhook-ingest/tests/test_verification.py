"""Signature verification and event normalisation, without I/O."""

from __future__ import annotations

import json
import time

import pytest

from handshake_webhook_ingest.settings import WebhookIngestSettings
from handshake_webhook_ingest.stripe_events import StripeEvent
from handshake_webhook_ingest.verification import Rejected, verify

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"


def test_a_correctly_signed_event_verifies_and_is_returned_as_sent(stripe_like):
    event = stripe_like.event(order_id="o-1")
    body = stripe_like.body(event)
    assert verify(body, stripe_like.sign(body, SECRET), [SECRET], 300) == event


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong secret", "signature_mismatch"),
        ("tampered body", "signature_mismatch"),
        ("missing header", "missing_header"),
        ("malformed header", "malformed_header"),
        ("no v1 signature", "malformed_header"),
        ("stale timestamp", "timestamp_outside_tolerance"),
        ("not UTF-8", "invalid_encoding"),
    ],
)
def test_a_delivery_that_does_not_verify_is_rejected_with_its_reason(stripe_like, case, reason):
    body = stripe_like.body(stripe_like.event(order_id="o-1"))
    header: str | None = stripe_like.sign(body, SECRET)
    if case == "wrong secret":
        header = stripe_like.sign(body, "whsec_someone_else")
    elif case == "tampered body":
        body = body.replace(b"4999", b"1")
    elif case == "missing header":
        header = None
    elif case == "malformed header":
        header = "v1=abc"
    elif case == "no v1 signature":
        header = header.replace("v1=", "v0=")
    elif case == "stale timestamp":
        header = stripe_like.sign(body, SECRET, timestamp=int(time.time()) - 301)
    elif case == "not UTF-8":
        body = b"\xff\xfe" + body
        header = stripe_like.sign(body, SECRET)
    with pytest.raises(Rejected) as rejected:
        verify(body, header, [SECRET], 300)
    assert rejected.value.reason == reason


def test_during_rotation_either_secret_verifies_and_a_stale_match_is_reported_as_stale(stripe_like):
    body = stripe_like.body(stripe_like.event())
    assert verify(body, stripe_like.sign(body, OLD_SECRET), [SECRET, OLD_SECRET], 300)["id"]
    stale = stripe_like.sign(body, OLD_SECRET, timestamp=int(time.time()) - 3600)
    with pytest.raises(Rejected) as rejected:
        verify(body, stale, [SECRET, OLD_SECRET], 300)
    assert rejected.value.reason == "timestamp_outside_tolerance"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"id": NaN}'])
def test_a_signed_body_that_is_not_a_json_object_is_rejected(stripe_like, body):
    with pytest.raises(Rejected) as rejected:
        verify(body, stripe_like.sign(body, SECRET), [SECRET], 300)
    assert rejected.value.reason == "invalid_json"


def test_a_signed_object_that_is_not_a_stripe_event_is_rejected():
    with pytest.raises(Rejected) as rejected:
        StripeEvent.from_verified({"object": "event", "id": "evt_1", "type": "x"})
    assert rejected.value.reason == "not_an_event"


def test_forwarded_fields_are_normalised_and_carry_no_client_secret(stripe_like):
    raw = stripe_like.event(order_id="o-7", attempt_id="a-3", amount=1234, currency="eur")
    raw["data"]["object"]["next_action"] = {"use_stripe_sdk": {"client_secret": "seti_x_secret_y"}}
    event = StripeEvent.from_verified(raw)
    forwarded = event.forwarded()
    assert (forwarded.order_id, forwarded.attempt_id, forwarded.amount, forwarded.currency, forwarded.status) == (
        "o-7",
        "a-3",
        1234,
        "EUR",
        "succeeded",
    )
    assert forwarded.object_type == "payment_intent" and forwarded.object_id == raw["data"]["object"]["id"]
    assert "client_secret" not in json.dumps(forwarded.model_dump()) + json.dumps(event.payload)
    assert event.message_key == "o-7"
    # the parsed input itself is left untouched
    assert raw["data"]["object"]["client_secret"]


def test_events_without_an_order_are_keyed_by_their_object_then_by_their_own_id(stripe_like):
    untagged = stripe_like.event("payout.paid")
    assert StripeEvent.from_verified(untagged).message_key == untagged["data"]["object"]["id"]
    objectless_id = stripe_like.event("balance.available")
    del objectless_id["data"]["object"]["id"]
    assert StripeEvent.from_verified(objectless_id).message_key == objectless_id["id"]


def test_a_charge_event_is_linked_to_its_payment_intent():
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_9", "amount": 5, "currency": "usd"}
    raw = {"id": "evt_c", "type": "charge.succeeded", "created": 1, "data": {"object": charge}}
    event = StripeEvent.from_verified(raw)
    assert (event.object_id, event.payment_intent_id) == ("ch_1", "pi_9")


def test_rotation_secrets_come_from_one_comma_separated_variable(monkeypatch):
    monkeypatch.setenv("HANDSHAKE_STRIPE_WEBHOOK_SECRETS", "whsec_new, whsec_old,")
    secrets = WebhookIngestSettings().stripe_webhook_secrets
    assert [s.get_secret_value() for s in secrets] == ["whsec_new", "whsec_old"]
    assert "whsec_new" not in repr(secrets)


def test_production_refuses_the_development_webhook_secret(monkeypatch):
    monkeypatch.delenv("HANDSHAKE_STRIPE_WEBHOOK_SECRETS", raising=False)
    with pytest.raises(ValueError, match="STRIPE_WEBHOOK_SECRETS"):
        WebhookIngestSettings(environment="production", jwt_key="k" * 32, internal_token="t" * 32)
