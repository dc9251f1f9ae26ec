"""The catalogue as staff keep it: products, coupons, tax and shipping rates, each change audited in the same
transaction as the change itself (catalogue_changes), so a price nobody can account for is never written."""

from __future__ import annotations

from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from handshake_order.bodies import CatalogueIn
from handshake_order.db import catalogue_changes, coupons, products, shipping_rates, tax_rates


async def active_products(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(products).where(products.c.active).order_by(products.c.sku))).all()
    return [dict(r._mapping) for r in rows]


async def upsert(conn: AsyncConnection, body: CatalogueIn, *, actor: str) -> dict[str, int]:
    """Every item inserted or updated by its key, with a catalogue_changes row holding it before and after.
    Says how many of each kind it was given."""
    for table, items, key, kind in (
        (products, body.products, "sku", "product"),
        (coupons, body.coupons, "code", "coupon"),
        (tax_rates, body.tax_rates, "region", "tax_rate"),
        (shipping_rates, body.shipping_rates, "code", "shipping_rate"),
    ):
        for item in items:
            values = item.model_dump()
            if values.get("currency"):
                values["currency"] = values["currency"].upper()
            before = (await conn.execute(select(table).where(table.c[key] == values[key]).with_for_update())).first()
            stmt = pg_insert(table).values(**values)
            after = (
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[key], set_={k: stmt.excluded[k] for k in values if k != key}
                    ).returning(*table.c)
                )
            ).one()
            await conn.execute(
                insert(catalogue_changes).values(
                    kind=kind,
                    key=values[key],
                    actor=actor,
                    reason=body.reason,
                    before=jsonable_encoder(dict(before._mapping)) if before is not None else None,
                    after=jsonable_encoder(dict(after._mapping)),
                )
            )
    return {
        "products": len(body.products),
        "coupons": len(body.coupons),
        "tax_rates": len(body.tax_rates),
        "shipping_rates": len(body.shipping_rates),
    }


async def history(
    conn: AsyncConnection, *, kind: str | None, key: str | None, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first; page with before_id = the last id seen."""
    stmt = select(catalogue_changes).order_by(catalogue_changes.c.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(catalogue_changes.c.kind == kind)
    if key is not None:
        stmt = stmt.where(catalogue_changes.c.key == key)
    if before_id is not None:
        stmt = stmt.where(catalogue_changes.c.id < before_id)
    rows = (await conn.execute(stmt)).all()
    return [
        {
            "id": r.id,
            "kind": r.kind,
            "key": r.key,
            "actor": r.actor,
            "reason": r.reason,
            "before": r.before,
            "after": r.after,
            "at": r.at.isoformat(),
        }
        for r in rows
    ]
