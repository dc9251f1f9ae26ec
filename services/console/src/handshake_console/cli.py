"""The console's command line: the same service calls as the pages, with the operator's own token from
HANDSHAKE_CONSOLE_TOKEN and the service addresses from HANDSHAKE_CONSOLE_<SERVICE>_URL.

Exit status: 0 done; 1 the service refused (its problem detail is printed); 2 usage or configuration;
3 a service could not be reached, failed, or does not offer the call."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

import httpx
from pydantic import ValidationError

from handshake_console.backend import Answer, Backend
from handshake_console.domain.money import AmountError, parse_amount
from handshake_console.domain.search import classify
from handshake_console.domain.summary import summary_line
from handshake_console.settings import ServiceUrls

OK, REFUSED, USAGE, UNAVAILABLE = 0, 1, 2, 3


class Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m handshake_console", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the service's answer as JSON")
    sub = p.add_subparsers(dest="command", required=True)

    def with_reason(name: str, help_: str, target: str = "order") -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument(target)
        c.add_argument("--reason", required=True)
        c.add_argument("--idempotency-key", help="repeat an earlier call's key to retry it safely")
        return c

    c = sub.add_parser("order", help="show an order: by id, HS- reference, pi_ payment intent or evt_ provider event")
    c.add_argument("query")
    c = sub.add_parser("search", help="search orders")
    c.add_argument("query", nargs="?", default="")
    c.add_argument("--state", action="append", default=[])
    c.add_argument("--stuck", type=int, help="only orders not moved for this many minutes")
    c = with_reason("refund", "refund part or all of an order")
    c.add_argument("--amount", required=True, help="in the order's currency, e.g. 12.50")
    c.add_argument("--restock", action="store_true")
    c.add_argument("--request-approval", action="store_true", help="above the support limit: ask finance")
    with_reason("replay", "replay a stored provider event", target="event")
    with_reason("reconcile", "reconcile one order with the provider now")
    with_reason("redrive", "re-drive a stuck order now")
    with_reason("resend", "resend the order's current event on order.events.v1")
    c = with_reason("review", "mark an order for review (the reason is the note)")
    c = with_reason("close-review", "close a review")
    c.add_argument("--to", required=True)
    c = with_reason("transition", "move an order by hand")
    c.add_argument("--to", required=True)
    c = sub.add_parser("approvals", help="list refund approvals")
    c.add_argument("--state", default="pending", choices=["pending", "approved", "rejected"])
    with_reason("approve", "approve a refund request (finance)", target="approval")
    with_reason("reject", "reject a refund request (finance)", target="approval")
    return p


def main(argv: list[str], *, transport: httpx.AsyncBaseTransport | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        token = os.environ.get("HANDSHAKE_CONSOLE_TOKEN", "").strip()
        if not token:
            raise Exit(USAGE, "HANDSHAKE_CONSOLE_TOKEN is not set: put your own staff access token there")
        try:
            urls = ServiceUrls()
        except ValidationError as exc:
            raise Exit(USAGE, f"configuration: {exc.errors()[0]['msg']}") from None
        return asyncio.run(run(args, token, urls, transport))
    except Exit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


async def run(
    args: argparse.Namespace, token: str, urls: ServiceUrls, transport: httpx.AsyncBaseTransport | None
) -> int:
    async with httpx.AsyncClient(transport=transport) as http:
        backend = Backend(urls.service_urls(), http, timeout=urls.console_http_timeout_seconds)
        return await Commands(backend, token, as_json=args.json).dispatch(args)


def checked(answer: Answer) -> Any:
    if answer.ok:
        return answer.data
    if answer.problem is not None:
        code = REFUSED if 400 <= answer.status < 500 else UNAVAILABLE
        raise Exit(code, answer.message + (f" [{answer.problem.get('type')}]" if answer.problem.get("type") else ""))
    raise Exit(UNAVAILABLE, answer.unavailable or "no answer")


class Commands:
    def __init__(self, backend: Backend, token: str, *, as_json: bool) -> None:
        self.b = backend
        self.token = token
        self.as_json = as_json

    async def dispatch(self, args: argparse.Namespace) -> int:
        handler = getattr(self, "cmd_" + args.command.replace("-", "_"))
        await handler(args)
        return OK

    def out(self, data: Any, text: str) -> None:
        print(json.dumps(data, indent=2, default=str) if self.as_json else text)

    async def resolve(self, text: str) -> str:
        query = classify(text)
        if query.kind == "order_id":
            return query.value
        if query.kind == "payment_intent":
            data = checked(
                await self.b.get(
                    "payment", "/v1/admin/payments", self.token, params={"provider_intent_id": query.value}
                )
            )
            ids = {p.get("order_id") for p in data.get("payments", []) if p.get("order_id")}
        elif query.kind == "provider_event":
            data = checked(await self.b.get("webhook-ingest", f"/v1/admin/provider-events/{query.value}", self.token))
            ids = {data.get("order_id")} - {None}
        else:
            field = {"reference": "reference", "email": "email"}.get(query.kind, "customer_id")
            data = checked(await self.b.get("order", "/v1/admin/orders", self.token, params={field: query.value}))
            ids = {o.get("id") for o in data.get("orders", [])}
        if len(ids) != 1:
            raise Exit(REFUSED, f"{text!r} names {len(ids)} orders; use an order id")
        return str(ids.pop())

    async def cmd_order(self, args: argparse.Namespace) -> None:
        oid = await self.resolve(args.query)
        order = checked(await self.b.get("order", f"/v1/admin/orders/{oid}", self.token))
        payments = await self.b.get("payment", f"/v1/admin/orders/{oid}/payments", self.token, params={"live": "true"})
        lines = [f"order {oid} {order.get('reference') or ''}".rstrip(), summary_line(order), "timeline:"]
        lines += [
            f"  {t.get('at', '')[:19]}  {t.get('from') or '-':>20} -> {t.get('to')}  {t.get('reason')} ({t.get('actor')})"
            for t in order.get("timeline", [])
        ]
        if payments.ok:
            lines.append("payment attempts:")
            for a in payments.data.get("attempts", []):
                live = a.get("provider_live") or {}
                agrees = a.get("provider_live_agrees")
                lines.append(
                    f"  {a.get('state'):<16} {a.get('payment_intent_id') or '-'}  provider: "
                    f"{live.get('status') or live.get('error') or 'not available'}"
                    f"{'  DISAGREES' if agrees is False else ''}"
                )
        else:
            lines.append(f"payment attempts: {payments.message}")
        self.out({"order": order, "payments": payments.data}, "\n".join(lines))

    async def cmd_search(self, args: argparse.Namespace) -> None:
        query = classify(args.query)
        params: list[tuple[str, str]] = [("state", s) for s in args.state]
        if query.kind in ("reference", "email", "customer_id"):
            params.append((query.kind, query.value))
        elif query.kind != "empty":
            params.append(
                (
                    {"order_id": "order_id", "payment_intent": "payment_intent_id"}.get(query.kind, "order_id"),
                    query.value,
                )
            )
        if args.stuck:
            params.append(("stuck_older_than_minutes", str(args.stuck)))
        data = checked(await self.b.get("order", "/v1/admin/orders", self.token, params=params))
        rows = [
            f"{o.get('id')}  {o.get('reference', ''):<11} {o.get('state'):<20} {o.get('total')} {o.get('currency')}"
            for o in data.get("orders", [])
        ]
        self.out(data, "\n".join(rows) or "no orders")

    async def act(self, service: str, path: str, body: dict[str, Any], key: str | None) -> None:
        key = key or f"cli-{uuid.uuid4()}"
        answer = await self.b.post(service, path, self.token, body, idempotency_key=key)
        print(f"idempotency key: {key} (pass --idempotency-key {key} to retry this exact call)", file=sys.stderr)
        data = checked(answer)
        self.out(data, f"done ({answer.status}): " + json.dumps(data, default=str))

    async def cmd_refund(self, args: argparse.Namespace) -> None:
        oid = await self.resolve(args.order)
        order = checked(await self.b.get("order", f"/v1/admin/orders/{oid}", self.token))
        try:
            amount = parse_amount(args.amount, order.get("currency", ""))
        except AmountError as exc:
            raise Exit(USAGE, f"--amount: {exc}") from None
        body: dict[str, Any] = {"amount": amount, "reason": args.reason, "restock": args.restock}
        if args.request_approval:
            body["request_approval"] = True
        await self.act("order", f"/v1/admin/orders/{oid}/refunds", body, args.idempotency_key)

    async def cmd_replay(self, args: argparse.Namespace) -> None:
        if not args.event.startswith("evt_"):
            raise Exit(USAGE, "replay takes a provider event id (evt_...)")
        await self.act(
            "webhook-ingest",
            f"/v1/admin/provider-events/{args.event}/replay",
            {"reason": args.reason},
            args.idempotency_key,
        )

    async def _order_action(self, args: argparse.Namespace, service: str, suffix: str, body: dict[str, Any]) -> None:
        oid = await self.resolve(args.order)
        await self.act(service, f"/v1/admin/orders/{oid}/{suffix}", body, args.idempotency_key)

    async def cmd_reconcile(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "payment", "reconciliation", {"reason": args.reason})

    async def cmd_redrive(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "order", "redrive", {"reason": args.reason})

    async def cmd_resend(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "order", "events/resend", {"reason": args.reason})

    async def cmd_review(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "order", "review", {"note": args.reason})

    async def cmd_close_review(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "order", "review/close", {"to": args.to, "reason": args.reason})

    async def cmd_transition(self, args: argparse.Namespace) -> None:
        await self._order_action(args, "order", "transitions", {"to": args.to, "reason": args.reason})

    async def cmd_approvals(self, args: argparse.Namespace) -> None:
        data = checked(
            await self.b.get("order", "/v1/admin/refund-approvals", self.token, params={"state": args.state})
        )
        items = data.get("refund_approvals") or data.get("approvals") or data.get("items") or []
        rows = [
            f"{a.get('approval_id') or a.get('id')}  {a.get('order_id')}  {a.get('amount')} {a.get('currency')}  by {a.get('requested_by')}: "
            f"{a.get('reason')}"
            for a in items
        ]
        self.out(data, "\n".join(rows) or f"no {args.state} approvals")

    async def _decide(self, args: argparse.Namespace, decision: str) -> None:
        try:
            aid = str(uuid.UUID(args.approval))
        except ValueError:
            raise Exit(USAGE, "an approval id is a UUID") from None
        await self.act(
            "order", f"/v1/admin/refund-approvals/{aid}/{decision}", {"reason": args.reason}, args.idempotency_key
        )

    async def cmd_approve(self, args: argparse.Namespace) -> None:
        await self._decide(args, "approve")

    async def cmd_reject(self, args: argparse.Namespace) -> None:
        await self._decide(args, "reject")
