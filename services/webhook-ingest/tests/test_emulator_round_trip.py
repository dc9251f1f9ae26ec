"""The real thing end to end: the Stripe emulator signs and POSTs a webhook to the service over HTTP."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import stripe
import uvicorn
from sqlalchemy import text

from handshake_webhook_ingest.app import create_app

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


async def test_a_payment_confirmed_at_the_emulator_arrives_as_a_verified_stored_and_forwarded_event(
    settings, webhook_secret, stack, observe
):
    app = create_app(settings)
    db = app.state.runtime.db
    # the emulator needs a URL, so the app is served by uvicorn on a socket we bound (no port race)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not serving.done(), "uvicorn stopped while starting"
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/webhooks/stripe"
        await asyncio.to_thread(stack.stripe.register_webhook, url, webhook_secret)

        order_id, attempt_id = str(uuid.uuid4()), str(uuid.uuid4())
        client = stripe.StripeClient(stack.stripe.api_key, base_addresses={"api": stack.stripe.api_base})
        # the SDK is synchronous; run it off the loop that is serving the webhook
        pm = await asyncio.to_thread(client.v1.payment_methods.create, {"type": "card", "card": CARD})
        pi = await asyncio.to_thread(
            client.v1.payment_intents.create,
            {"amount": 2599, "currency": "eur", "metadata": {"order_id": order_id, "attempt_id": attempt_id}},
        )
        # the emulator confirms only once the payment method is attached
        await asyncio.to_thread(client.v1.payment_intents.update, pi.id, {"payment_method": pm.id})
        confirmed = await asyncio.to_thread(client.v1.payment_intents.confirm, pi.id)
        assert confirmed.status == "succeeded"

        # the emulator sends its webhook one second after the event
        deadline = time.monotonic() + 10
        row = None
        while row is None and time.monotonic() < deadline:
            async with db.engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT provider_event_id, delivery_count, order_id, attempt_id, api_version, "
                            "payload, raw_body "
                            "FROM provider_events WHERE type = 'payment_intent.succeeded' AND object_id = :pi"
                        ),
                        {"pi": pi.id},
                    )
                ).one_or_none()
            await asyncio.sleep(0.1)
        assert row is not None, "the emulator's payment_intent.succeeded did not arrive within 10 s"
        assert (row.delivery_count, row.order_id, row.attempt_id) == (1, order_id, attempt_id)
        assert row.api_version == "2017-08-15"
        # the provider did send the client secret: kept in the exact bytes, gone from everything else
        assert b'"client_secret"' in row.raw_body
        assert "client_secret" not in row.payload["data"]["object"]

        await observe.outbox_drained(db)
        [(_, forwarded)] = await observe.forwarded_messages(stack.broker.bootstrap_servers, order_id)
        assert forwarded.data["provider_event_id"] == row.provider_event_id
        assert (forwarded.data["amount"], forwarded.data["currency"]) == (2599, "EUR")
        assert forwarded.data["object_id"] == pi.id
    finally:
        server.should_exit = True
        await serving
        await db.dispose()
