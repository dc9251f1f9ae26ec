"""A browser and an operator, scripted: seed a demo catalogue and stock, check out, pay with the
stripe SDK exactly as the storefront would after fetching the client secret, follow the order."""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe

from handshake_devstack.system import System

DEMO_CATALOGUE: dict[str, Any] = {
    "reason": "demo catalogue",
    "products": [
        {"sku": "HS-MUG", "name": "Handshake mug", "unit_price": 1250, "currency": "EUR"},
        {"sku": "HS-TEE", "name": "Handshake T-shirt", "unit_price": 2400, "currency": "EUR"},
        {"sku": "HS-CAP", "name": "Handshake cap", "unit_price": 1800, "currency": "EUR"},
    ],
    "tax_rates": [{"region": "DE", "rate_bp": 1900}, {"region": "FR", "rate_bp": 2000}],
    "shipping_rates": [{"code": "standard", "amount": 495, "currency": "EUR"}],
    "coupons": [{"code": "WELCOME10", "kind": "percent", "percent_bp": 1000}],
}
DEMO_STOCK = {"HS-MUG": 1000, "HS-TEE": 1000, "HS-CAP": 1000}
TEST_CARD = "4242424242424242"
# the emulator declines this card when the charge is attempted (4000000000000002 only on attach)
DECLINED_CARD = "4000000000000341"
# one long-poll asks the order service to wait at most this long (it allows 30 s)
LONG_POLL_SECONDS = 20.0


@dataclass
class CheckoutTimings:
    checkout_seconds: float = 0.0
    client_secret_seconds: float = 0.0
    end_to_end_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Storefront:
    def __init__(self, system: System, http: httpx.Client | None = None, *, poll_interval: float = 0.05) -> None:
        self.system = system
        self.poll_interval = poll_interval
        self.http = http or httpx.Client(timeout=10.0)
        self.admin_token = system.tokens.issue("demo-operator", ["admin", "support", "finance"])
        # what a browser keeps in its storage: a guest checkout is replayed only to the browser that sent it
        self.guest_session = secrets.token_urlsafe(32)
        self.stripe = stripe.StripeClient(
            system.stack.stripe.api_key, base_addresses={"api": system.stack.stripe.api_base}
        )
        # Several order replicas get the requests in turn, as behind a balancer: a long-poll often lands on
        # another replica than the one whose consumer changes the order. With one, system.url decides (a view
        # of the system may route it through a gateway).
        order_replicas = system.urls("order")
        self._order_urls = itertools.cycle(order_replicas) if len(order_replicas) > 1 else None

    def order_url(self) -> str:
        return next(self._order_urls) if self._order_urls is not None else self.system.url("order")

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def seed(self, catalogue: dict[str, Any] | None = None, stock: dict[str, int] | None = None) -> None:
        r = self.http.put(
            self.order_url() + "/v1/admin/catalogue", json=catalogue or DEMO_CATALOGUE, headers=self.admin()
        )
        r.raise_for_status()
        for sku, available in (stock or DEMO_STOCK).items():
            r = self.http.put(
                self.system.url("inventory") + f"/v1/admin/stock/{sku}",
                json={"available": available, "reason": "demo stock"},
                headers=self.admin(),
            )
            r.raise_for_status()

    def stock(self, sku: str) -> dict[str, Any]:
        r = self.http.get(self.system.url("inventory") + f"/v1/admin/stock/{sku}", headers=self.admin())
        r.raise_for_status()
        return dict(r.json())

    def levels(self, sku: str) -> tuple[int, int, int]:
        """(available, reserved, sold) of one SKU."""
        s = self.stock(sku)
        return s["available"], s["reserved"], s["sold"]

    def checkout(
        self,
        lines: list[dict[str, Any]],
        *,
        region: str = "DE",
        coupon: str | None = None,
        key: str | None = None,
        guest_session: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"lines": lines, "region": region, "shipping_method": "standard"}
        if coupon:
            body["coupon_code"] = coupon
        r = self.http.post(
            self.order_url() + "/v1/checkout",
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4()), "Guest-Session": guest_session or self.guest_session},
        )
        r.raise_for_status()
        return dict(r.json())

    def order(
        self,
        order_id: str,
        token: str,
        *,
        timeline: bool = True,
        wait_for_change: int | None = None,
        wait_seconds: float = LONG_POLL_SECONDS,
    ) -> dict[str, Any]:
        """The order; with wait_for_change (a version seen before), once it differs or wait_seconds passed."""
        params: dict[str, Any] = {} if timeline else {"timeline": "false"}
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if wait_for_change is not None:
            wait_seconds = max(0.1, min(wait_seconds, LONG_POLL_SECONDS))
            params.update(wait_for_change=wait_for_change, timeout=round(wait_seconds, 3))
            # the server holds the answer up to wait_seconds: the read timeout must outlast it
            timeout = httpx.Timeout(10.0, read=wait_seconds + 10.0)
        r = self.http.get(
            self.order_url() + f"/v1/orders/{order_id}",
            headers={"X-Order-Token": token},
            params=params,
            timeout=timeout,
        )
        r.raise_for_status()
        return dict(r.json())

    def changed_order(self, order_id: str, token: str, version: int, wait_seconds: float) -> dict[str, Any]:
        """The order (without its timeline) once its version differs from `version`, or as it is after at most
        wait_seconds."""
        order = self.order(order_id, token, timeline=False, wait_for_change=version, wait_seconds=wait_seconds)
        if order["version"] == version:
            # unchanged: the wait timed out, or the service had too many waiters and answered at once; a pause
            # keeps the second case from turning into a loop of requests
            time.sleep(self.poll_interval)
        return order

    def payment_session(self, order_id: str, token: str, timeout: float = 30.0) -> dict[str, Any]:
        """As a storefront would: the request itself waits while the order is on its way to its payment intent.
        A 409 (not ready when the wait ended) carries the order's version, so a further try waits for the order
        to change (a long-poll) instead of asking again on a timer."""
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.1, min(deadline - time.monotonic(), LONG_POLL_SECONDS))
            r = self.http.get(
                self.order_url() + f"/v1/orders/{order_id}/payment-session",
                params={"timeout": round(wait, 3)},
                headers={"X-Order-Token": token},
                # the server holds the answer up to `wait`: the read timeout must outlast it
                timeout=httpx.Timeout(10.0, read=wait + 10.0),
            )
            if r.status_code == 200:
                return dict(r.json())
            remaining = deadline - time.monotonic()
            if r.status_code not in (409, 503) or remaining <= 0:
                raise RuntimeError(f"payment session for {order_id}: {r.status_code} {r.text}")
            version = r.json().get("version") if r.status_code == 409 else None
            if isinstance(version, int):
                self.changed_order(order_id, token, version, remaining)
            else:  # payment itself is not ready or not reachable: nothing to wait on but time
                time.sleep(self.poll_interval)

    def pay(self, payment_intent_id: str, card: str = TEST_CARD) -> Any:
        """What stripe.js does in the browser: attach the card, then confirm."""
        pm = self.stripe.v1.payment_methods.create(
            params={"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
        )
        self.stripe.v1.payment_intents.update(payment_intent_id, params={"payment_method": pm.id})
        try:
            return self.stripe.v1.payment_intents.confirm(payment_intent_id)
        except stripe.CardError as exc:
            return exc

    def cancel(self, order_id: str, token: str) -> httpx.Response:
        return self.http.post(self.order_url() + f"/v1/orders/{order_id}/cancel", headers={"X-Order-Token": token})

    def new_payment_attempt(self, order_id: str, token: str, key: str | None = None) -> httpx.Response:
        return self.http.post(
            self.order_url() + f"/v1/orders/{order_id}/payment-attempts",
            headers={"X-Order-Token": token, "Idempotency-Key": key or str(uuid.uuid4())},
        )

    def refund(
        self, order_id: str, amount: int, reason: str, *, restock: bool = False, key: str | None = None
    ) -> httpx.Response:
        return self.http.post(
            self.order_url() + f"/v1/admin/orders/{order_id}/refunds",
            json={"amount": amount, "reason": reason, "restock": restock},
            headers={**self.admin(), "Idempotency-Key": key or str(uuid.uuid4())},
        )

    def admin_order(self, order_id: str) -> dict[str, Any]:
        r = self.http.get(self.order_url() + f"/v1/admin/orders/{order_id}", headers=self.admin())
        r.raise_for_status()
        return dict(r.json())

    def intents_for(self, order_id: str) -> list[Any]:
        listed = self.stripe.v1.payment_intents.list(params={"limit": 100})
        return [pi for pi in listed.auto_paging_iter() if pi.metadata.to_dict().get("order_id") == order_id]

    def refunds_for(self, payment_intent_id: str) -> list[Any]:
        return list(self.stripe.v1.refunds.list(params={"payment_intent": payment_intent_id, "limit": 100}).data)

    def wait_for_state(
        self, order_id: str, token: str, states: set[str], timeout: float = 30.0, *, timeline: bool = True
    ) -> dict[str, Any]:
        """Long-polls without the timeline until the order is in one of `states`, then (timeline=True) reads it
        once more with its timeline. Should the order move on between those two reads, the state that matched is
        returned with the later timeline, which then shows the steps after it as well."""
        deadline = time.monotonic() + timeout
        order = self.order(order_id, token, timeline=False)
        while order["state"] not in states:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"order {order_id} is {order['state']}, expected one of {sorted(states)}")
            order = self.changed_order(order_id, token, order["version"], remaining)
        if not timeline:
            return order
        final = self.order(order_id, token)
        return final if final["state"] in states else {**order, "timeline": final["timeline"]}

    def full_checkout(
        self,
        lines: list[dict[str, Any]],
        timings: CheckoutTimings | None = None,
        *,
        timeline: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        """Checkout, payment session, card confirmed, and the order once it is fulfillment_pending (with its
        timeline unless timeline=False, as a storefront's thank-you page would ask for it)."""
        t = timings or CheckoutTimings()
        start = time.monotonic()
        placed = self.checkout(lines, **kw)
        t.checkout_seconds = time.monotonic() - start
        session = self.payment_session(placed["order_id"], placed["lookup_token"])
        t.client_secret_seconds = time.monotonic() - start
        self.pay(session["payment_intent_id"])
        order = self.wait_for_state(
            placed["order_id"], placed["lookup_token"], {"fulfillment_pending"}, timeline=timeline
        )
        t.end_to_end_seconds = time.monotonic() - start
        return {"placed": placed, "session": session, "order": order}
