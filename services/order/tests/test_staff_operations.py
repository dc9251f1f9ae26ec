"""What staff do to an order from the operations console, through the admin API on real PostgreSQL: find it,
flag and close its review, refund above the support limit with a second person's approval, send its current
announcement again, read its events, and re-drive it when it is stuck. Every action names the person."""

from __future__ import annotations

import asyncio
import json
import uuid

from sqlalchemy import delete, func, select, update

from handshake_order.db import messaging, orders, refund_approvals, refunds
from handshake_order.domain.operations import reference_of

MUG_ORDER = {"lines": [{"sku": "MUG", "quantity": 2}], "region": "DE", "shipping_method": "standard"}
ob = messaging.outbox


async def scalar(shop, stmt):
    async with shop.runtime.db.engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def execute(shop, stmt) -> None:
    async with shop.runtime.db.engine.begin() as conn:
        await conn.execute(stmt)


def outbox_of(order_id: str, event_type: str | None = None):
    stmt = select(func.count()).select_from(ob).where(ob.c.message_key == order_id)
    return stmt.where(ob.c.event_type == event_type) if event_type else stmt


async def test_search_finds_a_customers_orders_by_email_newest_first_and_pages_without_repeats_or_gaps(shop):
    ann = [
        (await shop.checkout(dict(MUG_ORDER, email="Ann.Lee@Example.com"), key=f"a{i}", **shop.token("ann"))).json()
        for i in range(4)
    ]
    guest = await shop.checkout(dict(MUG_ORDER, email="  ann.lee@example.COM"), key="g")  # the same person as a guest
    other = await shop.checkout(dict(MUG_ORDER, email="bob@example.com"), key="b", **shop.token("bob"))
    assert other.status_code == 202 and guest.status_code == 202
    bad = await shop.checkout(dict(MUG_ORDER, email="not an address"), key="x")
    assert bad.status_code == 422 and bad.json()["type"]
    staff = shop.token("sue", "support")

    async def find(**params):
        r = await shop.client.get("/v1/admin/orders", params=params, headers=staff)
        assert r.status_code == 200, r.text
        return r.json()

    everything = (await find(email="ANN.LEE@example.com", limit=200))["orders"]
    mine = {o["order_id"] for o in ann} | {guest.json()["order_id"]}
    assert {o["id"] for o in everything} == mine and all(o["email"] == "ann.lee@example.com" for o in everything)
    assert [o["created_at"] for o in everything] == sorted((o["created_at"] for o in everything), reverse=True)
    paged, cursor = [], None
    while True:
        page = await find(email="ann.lee@example.com", limit=2, **({"before": cursor} if cursor else {}))
        paged += [o["id"] for o in page["orders"]]
        if (cursor := page["next"]) is None:
            break
    assert paged == [o["id"] for o in everything]  # no repeats, no gaps, same order

    first = ann[0]["order_id"]
    assert ann[0]["reference"] == reference_of(first)
    assert [o["id"] for o in (await find(reference=reference_of(first).lower()))["orders"]] == [first]
    assert {o["id"] for o in (await find(customer_id="ann"))["orders"]} == {o["order_id"] for o in ann}
    assert (await find(customer_id="ann", state="paid"))["orders"] == []
    assert len((await find(state=["draft", "paid"]))["orders"]) == 6
    assert (await find(order_id=first))["orders"][0]["reference"] == reference_of(first)
    await execute(
        shop,
        update(orders)
        .where(orders.c.id == uuid.UUID(first))
        .values(payment_intent_id="pi_ann", updated_at=func.now() - func.make_interval(0, 0, 0, 0, 2)),
    )
    assert [o["id"] for o in (await find(payment_intent_id="pi_ann"))["orders"]] == [first]
    assert [o["id"] for o in (await find(stuck_older_than_minutes=60))["orders"]] == [first]  # unchanged for 2 hours
    # the customer sees the reference, never the email on the public topic
    read = await shop.client.get(f"/v1/orders/{first}", headers=shop.token("ann"))
    assert read.json()["reference"] == reference_of(first)
    payloads = await scalar(shop, select(func.string_agg(func.encode(ob.c.payload, "escape"), "")))
    assert "ann.lee" not in payloads

    for params, status in (
        ({"before": "garbage"}, 400),
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"state": "nonsense"}, 422),
        ({"order_id": "nope"}, 422),
        ({"reference": "HS-XYZ"}, 422),
        ({"stuck_older_than_minutes": -1}, 422),
    ):
        r = await shop.client.get("/v1/admin/orders", params=params, headers=staff)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", params
    assert (await shop.client.get("/v1/admin/orders", headers=shop.token("ann"))).status_code == 403


async def test_a_review_is_opened_with_a_private_note_and_closed_only_by_finance_where_the_money_allows(shop):
    order_id = await shop.paid_order()
    sue, fiona = shop.token("sue", "support"), shop.token("fiona", "finance")

    async def post(path: str, body: dict, who: dict, key: str):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/{path}", json=body, headers={**who, "Idempotency-Key": key}
        )

    opened = await post("review", {"note": "customer says parcel arrived opened; call back 0301234"}, sue, "r1")
    assert opened.status_code == 200 and opened.json() == {
        "order_id": order_id,
        "state": "needs_review",
        "transitioned": True,
    }
    again = await post("review", {"note": "customer says parcel arrived opened; call back 0301234"}, sue, "r1")
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == opened.content
    noted = await post("review", {"note": "photos received"}, fiona, "r2")
    assert noted.json()["transitioned"] is False
    assert (await post("review", {"note": "x"}, sue, "r3")).status_code == 422  # too short to say anything
    assert (await post("review", {"note": "ok\x00"}, sue, "r4")).status_code == 422

    assert (await post("review/close", {"to": "fulfillment_pending", "reason": "fine"}, sue, "c1")).status_code == 403
    # nor by the older manual-transition route: a review ends only through review/close
    around = await shop.client.post(
        f"/v1/admin/orders/{order_id}/transitions", json={"to": "fulfilled", "reason": "fine"}, headers=sue
    )
    assert around.status_code == 409 and around.json()["type"].endswith("review-open")
    held = await post("review/close", {"to": "cancelled", "reason": "customer gave up"}, fiona, "c2")
    assert held.status_code == 409 and held.json()["type"].endswith("money-held")
    closed = await post("review/close", {"to": "fulfillment_pending", "reason": "photos show no damage"}, fiona, "c3")
    assert closed.status_code == 200 and closed.json()["state"] == "fulfillment_pending"
    late = await post("review/close", {"to": "closed", "reason": "again"}, fiona, "c4")
    assert late.status_code == 409 and late.json()["type"].endswith("not-under-review")

    view = await shop.order(order_id)
    assert [(t["to"], t["actor"]) for t in view["timeline"][-2:]] == [
        ("needs_review", "staff:sue"),
        ("fulfillment_pending", "staff:fiona"),
    ]
    assert [(n["kind"], n["actor"]) for n in view["notes"]] == [
        ("review", "staff:sue"),
        ("review", "staff:fiona"),
        ("review", "staff:fiona"),
    ]
    assert [a["action"] for a in view["audit"]] == ["transition", "review", "review", "transition", "review"]
    published = await scalar(
        shop, select(func.string_agg(func.encode(ob.c.payload, "escape"), "")).where(ob.c.message_key == order_id)
    )
    assert "0301234" not in published and "review closed by staff" in published
    assert (
        await shop.client.post(
            "/v1/admin/orders/not-an-id/review", json={"note": "hello"}, headers={**sue, "Idempotency-Key": "n"}
        )
    ).status_code == 404


async def test_support_above_the_limit_asks_for_approval_and_a_second_person_approves_it_exactly_once(shop):
    assert shop.settings.support_refund_limit == 1000
    order_id = await shop.paid_order()
    sam = shop.token("sam", "support")

    async def refund(amount: int, key: str, **extra):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": amount, "reason": "broken on arrival", **extra},
            headers={**sam, "Idempotency-Key": key},
        )

    refused = await refund(2000, "no-flag")
    assert refused.status_code == 403 and refused.json()["type"].endswith("refund-limit-exceeded")  # as before
    asked = await refund(2000, "ask", request_approval=True)
    assert asked.status_code == 202 and asked.json()["state"] == "pending"
    assert (await refund(2000, "ask", request_approval=True)).content == asked.content  # a retry: the same request
    approval_id = asked.json()["approval_id"]
    # nothing moved: no refund row, nothing asked of payment, nothing pending on the order
    assert await scalar(shop, select(func.count()).select_from(refunds)) == 0
    assert await scalar(shop, outbox_of(order_id, "order.refund_requested")) == 0
    assert (await shop.order(order_id))["refund_pending_amount"] == 0

    # within the limit per request, over it for the order: also an approval, not a refusal
    assert (await refund(600, "small")).status_code == 202
    second = await refund(600, "second", request_approval=True)
    assert second.status_code == 202 and second.json()["state"] == "pending"

    queue = await shop.client.get("/v1/admin/refund-approvals", params={"state": "pending"}, headers=sam)
    assert [a["approval_id"] for a in queue.json()["approvals"]] == [second.json()["approval_id"], approval_id]

    async def decide(what: str, aid: str, who: tuple[str, ...], key: str):
        return await shop.client.post(
            f"/v1/admin/refund-approvals/{aid}/{what}",
            json={"reason": "photos checked"},
            headers={**shop.token(*who), "Idempotency-Key": key},
        )

    own = await decide("approve", approval_id, ("sam", "finance"), "own")  # sam has since moved to finance
    assert own.status_code == 403 and own.json()["type"].endswith("four-eyes")
    assert (await decide("approve", approval_id, ("sue", "support"), "sup")).status_code == 403
    assert (await decide("approve", str(uuid.uuid4()), ("fiona", "finance"), "none")).status_code == 404
    assert (await decide("approve", "not-an-id", ("fiona", "finance"), "bad")).status_code == 404

    both = await asyncio.gather(
        decide("approve", approval_id, ("fiona", "finance"), "f1"),
        decide("approve", approval_id, ("frank", "finance"), "f2"),
    )
    assert sorted(r.status_code for r in both) == [200, 409]
    won = next(r for r in both if r.status_code == 200).json()
    lost = next(r for r in both if r.status_code == 409).json()
    assert lost["type"].endswith("approval-already-decided")
    rows = (await shop.order(order_id))["refunds"]
    approved = [r for r in rows if r["amount"] == 2000]
    assert len(approved) == 1 and approved[0]["refund_id"] == won["refund_id"]
    assert (approved[0]["requested_by"], approved[0]["approved_by"]) == ("sam", won["decided_by"])
    assert await scalar(shop, outbox_of(order_id, "order.refund_requested")) == 2  # the small one and this one

    rejected = await decide("reject", second.json()["approval_id"], ("fiona", "finance"), "rej")
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert (await decide("approve", second.json()["approval_id"], ("frank", "finance"), "late")).status_code == 409
    view = await shop.order(order_id)
    assert view["refund_pending_amount"] == 2600
    assert [(a["state"], a["decided_by"]) for a in view["refund_approvals"]] == [
        ("approved", won["decided_by"]),
        ("rejected", "fiona"),
    ]
    assert "refund-approval-approved" in [a["action"] for a in view["audit"]]
    assert await scalar(shop, select(func.count()).select_from(refund_approvals)) == 2


async def test_who_asked_for_an_approval_may_withdraw_it_finance_may_reject_it_and_nobody_else_may(shop):
    order_id = await shop.paid_order()

    async def post(path: str, who: tuple[str, ...], key: str, body: dict):
        return await shop.client.post(path, json=body, headers={**shop.token(*who), "Idempotency-Key": key})

    async def ask(key: str) -> str:
        asked = await post(
            f"/v1/admin/orders/{order_id}/refunds",
            ("sam", "support"),
            key,
            {"amount": 2000, "reason": "broken on arrival", "request_approval": True},
        )
        assert asked.status_code == 202 and asked.json()["state"] == "pending", asked.text
        return asked.json()["approval_id"]

    mine, other = await ask("ask-1"), await ask("ask-2")
    withdraw = f"/v1/admin/refund-approvals/{mine}/reject"
    # another support user may not decide sam's request for him
    theirs = await post(withdraw, ("sue", "support"), "w-sue", {"reason": "not needed"})
    assert theirs.status_code == 403 and theirs.json()["type"].endswith("/forbidden"), theirs.text
    assert (await post(withdraw, ("cus-1", "customer"), "w-cus", {"reason": "not needed"})).status_code == 403
    assert (
        await post(
            f"/v1/admin/refund-approvals/{mine}/approve", ("sam", "support"), "a-sam", {"reason": "approving my own"}
        )
    ).status_code == 403

    withdrawn = await post(withdraw, ("sam", "support"), "w-sam", {"reason": "customer found the parcel"})
    assert withdrawn.status_code == 200, withdrawn.text
    assert (withdrawn.json()["state"], withdrawn.json()["decided_by"]) == ("rejected", "sam")
    again = await post(withdraw, ("sam", "support"), "w-sam", {"reason": "customer found the parcel"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == withdrawn.content
    late = await post(withdraw, ("sam", "support"), "w-sam-2", {"reason": "customer found the parcel"})
    assert late.status_code == 409 and late.json()["type"].endswith("/approval-already-decided")
    # and a withdrawn request is not approved afterwards
    assert (
        await post(
            f"/v1/admin/refund-approvals/{mine}/approve", ("fiona", "finance"), "a-fiona", {"reason": "photos checked"}
        )
    ).status_code == 409

    rejected = await post(
        f"/v1/admin/refund-approvals/{other}/reject", ("fiona", "finance"), "r-fiona", {"reason": "no photos"}
    )
    assert rejected.status_code == 200 and (rejected.json()["state"], rejected.json()["decided_by"]) == (
        "rejected",
        "fiona",
    )

    # nothing moved: no refund row, nothing asked of payment, nothing pending or refunded on the order
    view = await shop.order(order_id)
    assert (
        await scalar(shop, select(func.count()).select_from(refunds).where(refunds.c.order_id == uuid.UUID(order_id)))
        == 0
    )
    assert await scalar(shop, outbox_of(order_id, "order.refund_requested")) == 0
    assert (view["refund_pending_amount"], view["refunded_amount"], view["refunds"]) == (0, 0, [])
    # the audit tells a withdrawal by the requester from a rejection by finance
    decisions = [
        (a["actor"], a["action"], a["detail"])
        for a in view["audit"]
        if a["action"].startswith("refund-approval-") and a["action"] != "refund-approval-requested"
    ]
    assert decisions == [
        ("staff:sam", "refund-approval-withdrawn", "customer found the parcel"),
        ("staff:fiona", "refund-approval-rejected", "no photos"),
    ]


async def test_the_current_announcement_is_sent_again_once_per_key_with_its_original_payload(shop):
    order_id = await shop.paid_order()
    ops = shop.token("sue", "support")
    events = (await shop.client.get(f"/v1/admin/orders/{order_id}/events", headers=ops)).json()
    types = [e["type"] for e in events["events"]]
    assert types[0] == "order.placed" and types[-1] == "order.fulfillment_pending" and events["complete"] is True
    assert [e["sequence"] for e in events["events"]] == sorted(e["sequence"] for e in events["events"])
    original = events["events"][-1]

    async def resend(key: str):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/events/resend",
            json={"reason": "warehouse lost it"},
            headers={**ops, "Idempotency-Key": key},
        )

    sent = await resend("s1")
    assert sent.status_code == 202, sent.text
    assert (await resend("s1")).content == sent.content
    assert await scalar(shop, outbox_of(order_id, "order.fulfillment_pending")) == 2  # one resend for two requests
    after = (await shop.client.get(f"/v1/admin/orders/{order_id}/events", headers=ops)).json()["events"][-1]
    assert (after["type"], after["payload"], after["resend_of"]) == (
        original["type"],
        original["payload"],
        original["event_id"],
    )
    assert after["event_id"] != original["event_id"] and after["sequence"] > original["sequence"]
    row = await scalar(shop, select(ob.c.payload).where(ob.c.event_id == uuid.UUID(after["event_id"])))
    assert json.loads(bytes(row))["subject"] == order_id  # the same envelope subject and key

    # retention deleted the published history: the answer says so, and a resend rebuilds the same payload
    await execute(shop, delete(ob).where(ob.c.message_key == order_id))
    thinned = (await shop.client.get(f"/v1/admin/orders/{order_id}/events", headers=ops)).json()
    assert thinned == {"order_id": order_id, "events": [], "complete": False, "next_after_id": None}
    rebuilt = await resend("s2")
    assert rebuilt.status_code == 202 and rebuilt.json()["resend_of"] == "rebuilt"
    again = (await shop.client.get(f"/v1/admin/orders/{order_id}/events", headers=ops)).json()["events"]
    assert [e["payload"] for e in again] == [original["payload"]]
    audit = (await shop.order(order_id))["audit"]
    assert [(a["action"], a["actor"]) for a in audit] == [("event-resent", "staff:sue")] * 2
    assert (await shop.client.get(f"/v1/admin/orders/{uuid.uuid4()}/events", headers=ops)).status_code == 404


async def test_a_stuck_order_is_re_driven_on_request_as_the_scanner_would(shop):
    draft = (await shop.checkout(key="d")).json()["order_id"]  # inventory never answers: nobody runs it here
    sue = shop.token("sue", "support")

    async def redrive(order_id: str, key: str, who=sue):
        return await shop.client.post(
            f"/v1/admin/orders/{order_id}/redrive",
            json={"reason": "customer waiting"},
            headers={**who, "Idempotency-Key": key},
        )

    done = await redrive(draft, "k1")
    assert done.status_code == 200 and done.json()["action"] == "redriven"
    assert (await redrive(draft, "k1")).content == done.content
    assert (await redrive(draft, "k2")).json()["action"] == "recently-redriven"  # at most once a minute
    assert await scalar(shop, outbox_of(draft, "order.placed")) == 2

    pending = (await shop.checkout(key="p")).json()["order_id"]
    await shop.reserve_and_open_payment(pending)
    flagged = await redrive(pending, "k6")
    assert (flagged.json()["action"], flagged.json()["state"]) == ("flagged", "payment_pending")
    assert "reconciliation" in flagged.json()["detail"]

    paid = await shop.paid_order()
    assert (await redrive(paid, "k3")).json()["action"] == "nothing"
    assert (await redrive(paid, "k4", shop.token("fiona", "finance"))).status_code == 403
    assert (await redrive(str(uuid.uuid4()), "k5")).status_code == 404
    notes = (await shop.order(draft))["notes"]
    assert [(n["kind"], n["actor"]) for n in notes] == [("redrive", "staff:sue")] and "customer waiting" in notes[0][
        "detail"
    ]


async def test_a_manual_transition_sent_twice_with_one_key_moves_the_order_once(shop):
    order_id = await shop.paid_order()
    sam = {**shop.token("sam", "support"), "Idempotency-Key": "ship-1"}
    path = f"/v1/admin/orders/{order_id}/transitions"
    first = await shop.client.post(path, json={"to": "fulfilled", "reason": "parcel handed over"}, headers=sam)
    again = await shop.client.post(path, json={"to": "fulfilled", "reason": "parcel handed over"}, headers=sam)
    assert first.status_code == again.status_code == 200 and first.content == again.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await shop.client.post(path, json={"to": "closed", "reason": "parcel handed over"}, headers=sam)
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    timeline = (await shop.order(order_id))["timeline"]
    assert [t["to"] for t in timeline].count("fulfilled") == 1 and timeline[-1]["actor"] == "staff:sam"
