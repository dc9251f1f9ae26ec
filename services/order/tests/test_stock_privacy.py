"""How much stock is left is never told to customers or subscribers; staff still see it."""

from __future__ import annotations

from sqlalchemy import text


async def test_an_out_of_stock_order_names_the_product_but_not_the_stock_left(shop) -> None:
    placed = (await shop.checkout(key="hoard")).json()
    order_id = placed["order_id"]
    rejected = {
        "order_id": order_id,
        "lines": [{"sku": "MUG", "requested": 1000, "available": 37, "reason": "insufficient_stock"}],
    }
    assert await shop.deliver("inventory.rejected", order_id, rejected) == "applied"

    # the customer's own view: cancelled, which product, what they asked for; not the 37 left
    mine = await shop.client.get(f"/v1/orders/{order_id}", headers={"X-Order-Token": placed["lookup_token"]})
    assert mine.status_code == 200, mine.text
    assert mine.json()["state"] == "cancelled"
    reasons = [e["reason"] for e in mine.json()["timeline"]]
    assert "out of stock: MUG (wanted 1000)" in reasons
    # (the stock figure was rendered as "<n> available"; ids and timestamps may contain any digits)
    assert "available" not in mine.text

    # nor on the public topic, which every subscribing team reads
    async with shop.runtime.db.engine.connect() as conn:
        payloads = (
            (
                await conn.execute(
                    text("SELECT convert_from(payload, 'UTF8') FROM outbox WHERE message_key = :k"), {"k": order_id}
                )
            )
            .scalars()
            .all()
        )
    assert payloads and not [p for p in payloads if "available" in p]

    # staff see the numbers in a note
    staff = await shop.order(order_id)
    assert any("MUG wanted 1000, 37 available" in n["detail"] for n in staff["notes"]), staff["notes"]
