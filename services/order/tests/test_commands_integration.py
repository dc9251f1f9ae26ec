"""Checkout idempotency, who may read what, coupon limits, refunds and cancellation against real
PostgreSQL with the app running in-process."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from handshake_order.db import coupons, messaging, orders

MUG_ORDER = {"lines": [{"sku": "MUG", "quantity": 2}], "region": "DE", "shipping_method": "standard"}
MUG_TOTAL = 2500 + 475 + 495


async def count(shop, stmt) -> int:
    async with shop.runtime.db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def test_same_key_in_flight_at_once_creates_one_order_and_one_answer(shop):
    responses = await asyncio.gather(*(shop.checkout(key="double-click") for _ in range(12)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.text for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 11
    assert await count(shop, select(func.count()).select_from(orders)) == 1
    placed = select(func.count()).select_from(messaging.outbox).where(messaging.outbox.c.event_type == "order.placed")
    assert await count(shop, placed) == 1


async def test_key_rules_missing_reused_with_another_body_and_scoped_per_customer(shop):
    r = await shop.client.post("/v1/checkout", json=MUG_ORDER)
    assert r.status_code == 400 and r.json()["type"].endswith("idempotency-key-required")
    assert (await shop.checkout(key="k1")).status_code == 202
    other = dict(MUG_ORDER, lines=[{"sku": "TEE", "quantity": 1}])
    r = await shop.checkout(other, key="k1")
    assert r.status_code == 422 and r.json()["type"].endswith("idempotency-key-reused")
    # the same key from two customers is two checkouts
    a = await shop.checkout(key="shared", **shop.token("alice"))
    b = await shop.checkout(key="shared", **shop.token("bob"))
    assert a.json()["order_id"] != b.json()["order_id"]
    assert await count(shop, select(func.count()).select_from(orders)) == 3


async def test_only_the_owner_or_the_lookup_token_holder_can_read_an_order(shop):
    mine = (await shop.checkout(key="a", **shop.token("alice"))).json()
    assert "lookup_token" not in mine
    assert (await shop.client.get(f"/v1/orders/{mine['order_id']}", headers=shop.token("alice"))).status_code == 200
    theirs = await shop.client.get(f"/v1/orders/{mine['order_id']}", headers=shop.token("mallory"))
    assert theirs.status_code == 404 and "alice" not in theirs.text

    guest = (await shop.checkout(key="g")).json()
    token = guest["lookup_token"]
    assert len(token) >= 43  # 256 bits, base64url
    assert (
        await shop.client.get(f"/v1/orders/{guest['order_id']}", headers={"X-Order-Token": token})
    ).status_code == 200
    assert (await shop.client.get(f"/v1/orders/{guest['order_id']}")).status_code == 404
    wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (
        await shop.client.get(f"/v1/orders/{guest['order_id']}", headers={"X-Order-Token": wrong})
    ).status_code == 404
    # only the hash is stored
    async with shop.runtime.db.engine.connect() as conn:
        stored = (
            await conn.execute(select(orders.c.lookup_token_hash).where(orders.c.lookup_token_hash.isnot(None)))
        ).scalar_one()
    assert stored != token and token not in stored
    forged = await shop.client.get(f"/v1/orders/{guest['order_id']}", headers={"Authorization": "Bearer not.a.jwt"})
    assert forged.status_code == 401


async def test_coupon_limit_holds_under_concurrent_checkouts(shop):
    body = dict(MUG_ORDER, coupon_code="FIVE-ONLY")
    responses = await asyncio.gather(*(shop.checkout(body, key=f"c{i}", **shop.token(f"cust{i}")) for i in range(20)))
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert len(accepted) == 5
    assert {r.status_code for r in refused} == {422}
    assert {r.json()["type"].rsplit("/", 1)[1] for r in refused} <= {"coupon-exhausted"}
    assert all(r.json()["snapshot"]["discount"] == 500 for r in accepted)
    assert await count(shop, select(coupons.c.redemptions).where(coupons.c.code == "FIVE-ONLY")) == 5
    quote = await shop.client.post("/v1/quotes", json=body)
    assert quote.status_code == 422 and quote.json()["type"].endswith("coupon-exhausted")


async def test_once_per_customer_coupon(shop):
    body = dict(MUG_ORDER, coupon_code="ONCE")
    assert (await shop.checkout(body, key="o1", **shop.token("carol"))).status_code == 202
    again = await shop.checkout(body, key="o2", **shop.token("carol"))
    assert again.status_code == 422 and again.json()["type"].endswith("coupon-already-used")
    assert (await shop.checkout(body, key="o3", **shop.token("dave"))).status_code == 202
    guest = await shop.checkout(body, key="o4")
    assert guest.status_code == 422 and guest.json()["type"].endswith("coupon-requires-account")
    assert await count(shop, select(coupons.c.redemptions).where(coupons.c.code == "ONCE")) == 2


async def test_customer_cancel_before_payment_announces_it(shop):
    placed = (await shop.checkout(key="cancel-me")).json()
    r = await shop.client.post(
        f"/v1/orders/{placed['order_id']}/cancel", headers={"X-Order-Token": placed["lookup_token"]}
    )
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    cancelled = (
        select(func.count()).select_from(messaging.outbox).where(messaging.outbox.c.event_type == "order.cancelled")
    )
    assert await count(shop, cancelled) == 1
    # cancelling again is harmless; cancelling a paid order is not possible
    again = await shop.client.post(
        f"/v1/orders/{placed['order_id']}/cancel", headers={"X-Order-Token": placed["lookup_token"]}
    )
    assert again.status_code == 200 and await count(shop, cancelled) == 1
    paid = await shop.paid_order()
    refused = await shop.client.post(f"/v1/orders/{paid}/cancel", headers={"X-Order-Token": placed["lookup_token"]})
    assert refused.status_code == 404  # another order's token
    paid_token = (await shop.checkout(key="paid")).json()["lookup_token"]  # the same browser's retry
    refused = await shop.client.post(f"/v1/orders/{paid}/cancel", headers={"X-Order-Token": paid_token})
    assert refused.status_code == 409 and refused.json()["state"] == "fulfillment_pending"


async def test_refunds_never_exceed_the_capture_even_when_requested_at_once(shop):
    order_id = await shop.paid_order()
    finance = shop.token("fiona", "finance")

    async def refund(amount: int, key: str, headers=finance, **extra):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": amount, "reason": "damaged in transit", **extra},
            headers={**headers, "Idempotency-Key": key},
        )

    big = MUG_TOTAL - 500
    results = await asyncio.gather(refund(big, "r1"), refund(big, "r2"), refund(big, "r3"))
    assert sorted(r.status_code for r in results) == [202, 409, 409]
    accepted = next(r for r in results if r.status_code == 202).json()
    replay = await refund(big, next(f"r{i + 1}" for i, r in enumerate(results) if r.status_code == 202))
    assert replay.json()["refund_id"] == accepted["refund_id"]

    support = shop.token("sam", "support")
    assert (await refund(1001, "s1", headers=support)).status_code == 403  # above the support limit
    assert (await refund(500, "s2", headers=support, restock=True)).status_code == 202
    assert (await refund(1, "s3", headers=support)).status_code == 409  # nothing left to refund
    r = await shop.client.post(
        f"/v1/admin/orders/{order_id}/refunds",
        json={"amount": 1, "reason": ""},
        headers={**finance, "Idempotency-Key": "s4"},
    )
    assert r.status_code == 422
    assert (
        await shop.client.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": 1, "reason": "x" * 5},
            headers={"Idempotency-Key": "s5"},
        )
    ).status_code == 401

    view = await shop.order(order_id)
    assert view["refund_pending_amount"] == MUG_TOTAL and view["state"] == "fulfillment_pending"
    # payment confirms them: partial, then the rest -> refunded
    first, second = view["refunds"]
    for refund_row, expected in ((first, "partially_refunded"), (second, "refunded")):
        await shop.deliver(
            "payment.refunded",
            order_id,
            {
                "order_id": order_id,
                "refund_id": refund_row["refund_id"],
                "attempt_id": "00000000-0000-4000-8000-0000000000a1",
                "payment_intent_id": "pi_1",
                "provider_refund_id": f"re_{refund_row['refund_id'][:8]}",
                "amount": refund_row["amount"],
                "currency": "eur",
                "reason": refund_row["reason"],
            },
        )
        assert (await shop.order(order_id))["state"] == expected
    view = await shop.order(order_id)
    assert view["refunded_amount"] == MUG_TOTAL and view["refund_pending_amount"] == 0
    assert [r["state"] for r in view["refunds"]] == ["succeeded", "succeeded"]
    refunded_events = select(messaging.outbox.c.payload).where(messaging.outbox.c.event_type == "order.refunded")
    async with shop.runtime.db.engine.connect() as conn:
        payload = (await conn.execute(refunded_events)).scalar_one()
    assert b'"restock":true' in payload and f'"refunded_total":{MUG_TOTAL}'.encode() in payload


async def test_a_refund_that_failed_after_it_was_confirmed_is_owed_again_and_flagged(shop):
    order_id = await shop.paid_order()
    finance = shop.token("fiona", "finance")

    async def refund(key: str):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": MUG_TOTAL, "reason": "customer returned it"},
            headers={**finance, "Idempotency-Key": key},
        )

    refund_id = (await refund("full")).json()["refund_id"]
    fact = {
        "order_id": order_id,
        "refund_id": refund_id,
        "attempt_id": "00000000-0000-4000-8000-0000000000a1",
        "payment_intent_id": "pi_1",
        "provider_refund_id": "re_1",
        "amount": MUG_TOTAL,
        "currency": "eur",
    }
    await shop.deliver("payment.refunded", order_id, {**fact, "reason": "customer returned it"})
    assert (await shop.order(order_id))["state"] == "refunded"
    assert (await refund("too-much")).status_code == 409  # nothing left, as it stands

    # days later the bank refuses it: the customer never got the money
    assert (
        await shop.deliver("payment.refund_reversed", order_id, {**fact, "reason": "expired_or_canceled_card"})
        == "applied"
    )

    view = await shop.order(order_id)
    assert (view["state"], view["refunded_amount"], view["refund_pending_amount"]) == ("needs_review", 0, 0)
    assert [r["state"] for r in view["refunds"]] == ["reversed"]
    assert any(t["to"] == "needs_review" and "expired_or_canceled_card" in t["reason"] for t in view["timeline"])
    # finance gives it back another way: the amount is refundable again, once
    again = await refund("second-try")
    assert again.status_code == 202 and again.json()["amount"] == MUG_TOTAL
    assert (await refund("third-try")).status_code == 409
    # the same reversal told again changes nothing
    assert (
        await shop.deliver("payment.refund_reversed", order_id, {**fact, "reason": "expired_or_canceled_card"})
        == "applied"
    )
    view = await shop.order(order_id)
    assert (view["refunded_amount"], view["refund_pending_amount"]) == (0, MUG_TOTAL)


async def test_money_taken_in_the_wrong_amount_is_held_for_review_and_can_be_given_back(shop):
    order_id = (await shop.checkout(key="mismatch")).json()["order_id"]
    await shop.reserve_and_open_payment(order_id)
    taken = MUG_TOTAL + 100
    await shop.deliver(
        "payment.mismatch",
        order_id,
        {
            "order_id": order_id,
            "attempt_id": "00000000-0000-4000-8000-0000000000a1",
            "payment_intent_id": "pi_1",
            "expected_amount": MUG_TOTAL,
            "expected_currency": "EUR",
            "provider_amount": taken,
            "provider_currency": "eur",
            "detected_by": "webhook",
            "captured": True,
        },
    )

    view = await shop.order(order_id)
    assert (view["state"], view["captured_amount"]) == ("needs_review", taken)
    support = shop.token("sam", "support")
    cancel = await shop.client.post(
        f"/v1/admin/orders/{order_id}/transitions", json={"to": "cancelled", "reason": "wrong amount"}, headers=support
    )
    assert cancel.status_code == 409 and cancel.json()["type"].endswith("review-open")  # only finance ends a review
    finance = shop.token("fiona", "finance")
    closing = await shop.client.post(
        f"/v1/admin/orders/{order_id}/review/close",
        json={"to": "cancelled", "reason": "wrong amount"},
        headers={**finance, "Idempotency-Key": "close"},
    )
    assert closing.status_code == 409 and closing.json()["type"].endswith("money-held")  # the money is still held
    refund = await shop.client.post(
        f"/v1/admin/orders/{order_id}/refunds",
        json={"amount": taken, "reason": "wrong amount"},
        headers={**finance, "Idempotency-Key": "give-back"},
    )
    assert refund.status_code == 202 and refund.json()["amount"] == taken


async def test_a_checkout_whose_process_died_mid_way_is_simply_done_again(shop):
    from handshake_order import idempotency as idem
    from handshake_order.checkout import guest_scope

    # a request claimed the key and died before committing: its connection goes away, nothing is left
    conn = await shop.runtime.db.engine.connect()
    tx = await conn.begin()
    assert (
        await idem.claim(
            conn, scope=guest_scope(shop.guest_session), key="crashy", request_hash="h", command="checkout"
        )
        is None
    )
    await tx.rollback()
    await conn.close()

    retried = await shop.checkout(key="crashy")
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert (await shop.checkout(key="crashy")).headers["Idempotent-Replayed"] == "true"
    assert await count(shop, select(func.count()).select_from(orders)) == 1


async def test_idempotency_keys_are_kept_for_the_retention_period_then_purged(shop):
    from sqlalchemy import text, update

    from handshake_order import idempotency as idem
    from handshake_order.db import idempotency_keys

    for key in ("fresh", "day-old", "stale"):
        assert (await shop.checkout(key=key)).status_code == 202
    async with shop.runtime.db.transaction() as conn:
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == "day-old")
            .values(created_at=func.now() - text("interval '25 hours'"))
        )
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == "stale")
            .values(created_at=func.now() - text("interval '49 hours'"))
        )
        assert await idem.purge_older_than(conn, shop.settings.idempotency_retention_hours) == 1
    assert shop.settings.idempotency_retention_hours >= 24
    assert (await shop.checkout(key="day-old")).headers.get("Idempotent-Replayed") == "true"
    assert (await shop.checkout(key="fresh")).headers.get("Idempotent-Replayed") == "true"
