"""Which lookup one search box query means, from its shape alone."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

Kind = Literal["order_id", "reference", "payment_intent", "provider_event", "email", "customer_id", "empty"]

_PRINTABLE = re.compile(r"^[\x21-\x7e@.+\-_]+$")


@dataclass(frozen=True)
class SearchQuery:
    kind: Kind
    value: str


def classify(text: str | None) -> SearchQuery:
    """A UUID is an order id; `HS-` an order reference; `pi_` a payment intent; `evt_` a provider event; anything
    with an @ an email address; anything else a customer id."""
    value = (text or "").strip()
    if not value:
        return SearchQuery("empty", "")
    try:
        return SearchQuery("order_id", str(uuid.UUID(value)))
    except ValueError:
        pass
    if value.upper().startswith("HS-"):
        return SearchQuery("reference", value.upper())
    if value.startswith("pi_"):
        return SearchQuery("payment_intent", value)
    if value.startswith("evt_"):
        return SearchQuery("provider_event", value)
    if "@" in value:
        return SearchQuery("email", value.lower())
    return SearchQuery("customer_id", value)
