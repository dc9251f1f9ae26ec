"""Support/admin replay of a stored provider event: forwarded again through the outbox, audited."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import text

from handshake_devstack.testing.fixtures import eventually, serve_in_process
from handshake_devstack.tokens import issue_token
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
    support = {"Authorization": "Bearer " + issue_token(settings, "agent-7", ["support"]), "Idempotency-Key": "k-1"}
    customer = {"Authorization": "Bearer " + issue_token(settings, "cus-1", ["customer"])}
    replay_url = f"/v1/admin/provider-events/{event['id']}/replay"
    async with serve_in_process(app) as client:
        signature = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
        r = await client.post("/webhooks/stripe", content=body, headers=signature)
        assert r.status_code == 200, r.text
        await observe.outbox_drained(db)
        [(_, original)] = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)

        # refused: no token, a customer, no reason, a reason too short, no idempotency key, an unknown event
        anonymous = await client.post(replay_url, json={"reason": "lost downstream"})
        assert anonymous.status_code == 401, anonymous.text
        denied = await client.post(replay_url, json={"reason": "lost downstream"}, headers=customer)
        assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
        for bad in (None, {}, {"reason": "no"}, {"reason": "   x  "}):
            r = await client.post(replay_url, json=bad, headers=support)
            assert r.status_code == 422, (bad, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        unkeyed = await client.post(
            replay_url, json={"reason": "lost downstream"}, headers={"Authorization": support["Authorization"]}
        )
        assert unkeyed.status_code == 400 and unkeyed.json()["type"].endswith("/idempotency-key-required")
        unknown = await client.post(
            "/v1/admin/provider-events/evt_never_seen/replay", json={"reason": "lost downstream"}, headers=support
        )
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert await observe.scalar(db, "SELECT count(*) FROM provider_event_replays") == 0
        assert await observe.scalar(db, "SELECT count(*) FROM outbox") == 1

        replayed = await client.post(
            replay_url,
            json={"reason": "payment consumer lost it (INC-42)"},
            headers={**support, "Idempotency-Key": "k-2"},
        )
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
    support = {"Authorization": "Bearer " + issue_token(rotated, "agent-7", ["support"]), "Idempotency-Key": "k-1"}
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


async def test_one_idempotency_key_replays_once_however_often_and_however_concurrently_it_is_sent(
    settings, webhook_secret, stripe_like, observe
):
    """A double click in the console: the event is forwarded once, the audit holds one replay, and every repeat
    of the click is answered with that replay. The key is the staff member's own, and names one request."""
    event = stripe_like.event("payment_intent.succeeded", order_id=str(uuid.uuid4()))
    other = stripe_like.event("payment_intent.succeeded", order_id=str(uuid.uuid4()))
    app = create_app(settings)  # no lifespan: a forward is its outbox row, no relay is needed to count it
    db = app.state.runtime.db
    url = f"/v1/admin/provider-events/{event['id']}/replay"
    sam = {"Authorization": "Bearer " + issue_token(settings, "sam", ["support"]), "Idempotency-Key": "click-1"}
    ada = {"Authorization": "Bearer " + issue_token(settings, "ada", ["admin"]), "Idempotency-Key": "click-1"}
    lost = {"reason": "payment consumer lost it (INC-42)"}
    forwards = "SELECT count(*) FROM outbox WHERE event_type = 'provider.stripe.event'"
    blocked = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        for e in (event, other):
            body = stripe_like.body(e)
            signed = {"Stripe-Signature": stripe_like.sign(body, webhook_secret)}
            assert (await client.post("/webhooks/stripe", content=body, headers=signed)).status_code == 200
        assert await observe.scalar(db, forwards) == 2

        # both clicks look the key up before either commits (the event's row is held until both wait on it),
        # so the second meets the first on the replays table's unique index, not in a lookup
        async with db.engine.connect() as holder:
            await holder.execute(
                text("SELECT 1 FROM provider_events WHERE provider_event_id = :id FOR UPDATE"), {"id": event["id"]}
            )
            clicks = [asyncio.create_task(client.post(url, json=lost, headers=sam)) for _ in range(2)]

            async def both_waiting() -> bool:
                return await observe.scalar(db, blocked) == 2

            await eventually(both_waiting)
            await holder.rollback()
        answers = await asyncio.gather(*clicks)
        # a browser retry later
        retry = await client.post(url, json=lost, headers=sam)
        # the same key for another event, or with another reason: refused, nothing forwarded
        other_event = await client.post(f"/v1/admin/provider-events/{other['id']}/replay", json=lost, headers=sam)
        other_reason = await client.post(url, json={"reason": "another incident"}, headers=sam)
        # another staff member's key is their own
        theirs = await client.post(url, json=lost, headers=ada)

    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == ["", "true"]
    assert answers[0].json() == answers[1].json()
    replay_id = answers[0].json()["replay_id"]
    assert retry.status_code == 202 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == answers[0].json() and retry.json()["actor"] == "sam"
    for refused in (other_event, other_reason):
        assert refused.status_code == 422 and refused.json()["type"].endswith("/idempotency-key-reused"), refused.text
    assert theirs.status_code == 202 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["replay_id"] != replay_id

    async with db.engine.connect() as conn:
        audit = (
            await conn.execute(
                text("SELECT id, actor, provider_event_id, forwarded_event_id FROM provider_event_replays ORDER BY id")
            )
        ).all()
        forwarded = set((await conn.execute(text("SELECT event_id FROM outbox"))).scalars())
    # sam's clicks: one replay, one forward; ada's: one of each
    assert [(r.id, r.actor) for r in audit] == [(replay_id, "sam"), (theirs.json()["replay_id"], "ada")]
    assert {r.provider_event_id for r in audit} == {event["id"]}
    assert len(forwarded) == 4 and {r.forwarded_event_id for r in audit} <= forwarded
    assert str(audit[0].forwarded_event_id) == answers[0].json()["forwarded_event_id"]
    await db.dispose()
