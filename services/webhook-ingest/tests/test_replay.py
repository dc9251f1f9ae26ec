"""Support/admin replay of a stored provider event: forwarded again through the outbox, audited."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from handshake_devstack.tokens import issue_token
from handshake_devstack.testing.fixtures import serve_in_process
from handshake_shared.events.provider import SealedDelivery, open_delivery
from handshake_webhook_ingest.app import create_app


async def test_replaying_a_stored_event_forwards_it_once_more_with_the_same_provider_event_id_and_audits_it(
    settings, webhook_secret, stack, stripe_like, observe
):
    order_id = str(uuid.uuid4())
    event = stripe_like.event("payment_intent.succeeded", order_id=order_id, attempt_id=str(uuid.uuid4()))
    body = stripe_like.body(event)
    app = create_app(settings)
    db = app.state.runtime.db
    support = {"Authorization": "Bearer " + issue_token(settings, "agent-7", ["support"])}
    customer = {"Authorization": "Bearer " + issue_token(settings, "cus-1", ["customer"])}
    replay_url = f"/v1/admin/provider-events/{event['id']}/replay"
    async with serve_in_process(app) as client:
        signature = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
        r = await client.post("/webhooks/stripe", content=body, headers=signature)
        assert r.status_code == 200, r.text
        await observe.outbox_drained(db)
        [(_, original)] = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)

        # refused: no token, a customer, no reason, a reason too short, an unknown event
        anonymous = await client.post(replay_url, json={"reason": "lost downstream"})
        assert anonymous.status_code == 401, anonymous.text
        denied = await client.post(replay_url, json={"reason": "lost downstream"}, headers=customer)
        assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
        for bad in (None, {}, {"reason": "no"}, {"reason": "   x  "}):
            r = await client.post(replay_url, json=bad, headers=support)
            assert r.status_code == 422, (bad, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        unknown = await client.post(
            "/v1/admin/provider-events/evt_never_seen/replay", json={"reason": "lost downstream"}, headers=support
        )
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert await observe.scalar(db, "SELECT count(*) FROM provider_event_replays") == 0
        assert await observe.scalar(db, "SELECT count(*) FROM outbox") == 1

        replayed = await client.post(replay_url, json={"reason": "payment consumer lost it (INC-42)"}, headers=support)
        assert replayed.status_code == 202, replayed.text
        answer = replayed.json()
        assert answer["provider_event_id"] == event["id"] and answer["actor"] == "agent-7"
        await observe.outbox_drained(db)
        messages = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)

        async with db.engine.connect() as conn:
            audit = (
                await conn.execute(
                    text(
                        "SELECT provider_event_id, actor, reason, replayed_at, forwarded_event_id "
                        "FROM provider_event_replays"
                    )
                )
            ).one()
            stored = (await conn.execute(text("SELECT delivery_count, source FROM provider_events"))).one()
    # exactly one more message: a new CloudEvent carrying the same provider event and the same data
    assert len(messages) == 2
    (_, first), (record, again) = messages
    assert first.id == original.id and again.id != original.id
    assert str(again.id) == answer["forwarded_event_id"]
    assert again.type == "provider.stripe.event" and record.key == order_id.encode()
    assert again.data["provider_event_id"] == event["id"]
    # the same data, and the same signed delivery as its proof (sealed anew)
    proofs = [SealedDelivery.model_validate(e.data.pop("signed_delivery")) for e in (original, again)]
    assert again.data == original.data
    delivery = (body, signature["Stripe-Signature"], webhook_secret)
    assert [open_delivery(p, [webhook_secret]) for p in proofs] == [delivery, delivery]
    assert b"client_secret" not in record.value
    assert (audit.provider_event_id, audit.actor) == (event["id"], "agent-7")
    assert audit.reason == "payment consumer lost it (INC-42)"
    assert audit.replayed_at is not None and str(audit.forwarded_event_id) == answer["forwarded_event_id"]
    # a replay is not a delivery
    assert (stored.delivery_count, stored.source) == (1, "webhook")
    await db.dispose()


async def test_a_replay_whose_signature_no_configured_secret_verifies_goes_without_proof(
    make_settings, webhook_secret, stack, stripe_like, observe
):
    """The endpoint secret was rotated away since the delivery: payment confirms the event with the provider."""
    order_id = str(uuid.uuid4())
    event = stripe_like.event("payment_intent.succeeded", order_id=order_id)
    body = stripe_like.body(event)
    before = create_app(make_settings([webhook_secret]))
    async with serve_in_process(before) as client:
        signature = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
        r = await client.post("/webhooks/stripe", content=body, headers=signature)
        assert r.status_code == 200, r.text
    await before.state.runtime.db.dispose()

    rotated = make_settings(["whsec_" + uuid.uuid4().hex])
    app = create_app(rotated)
    db = app.state.runtime.db
    support = {"Authorization": "Bearer " + issue_token(rotated, "agent-7", ["support"])}
    async with serve_in_process(app) as client:
        replayed = await client.post(
            f"/v1/admin/provider-events/{event['id']}/replay", json={"reason": "after the rotation"}, headers=support
        )
        assert replayed.status_code == 202, replayed.text
        await observe.outbox_drained(db)
        messages = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)
    await db.dispose()
    first, again = (e for _, e in messages)
    assert first.data["signed_delivery"] is not None
    assert again.data["signed_delivery"] is None and again.data["provider_event_id"] == event["id"]
