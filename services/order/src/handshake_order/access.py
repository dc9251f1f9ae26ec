"""Who may do what to an order over HTTP: the rules the routes apply before they call anything.

Customers read and act on their own orders (signed in, or holding the order's lookup token); anyone else is
answered as if the order did not exist. Staff act through /v1/admin with roles, and what they do is written in
the audit under their own name. Support refunds up to a limit per order; above it, finance decides."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request

from handshake_order.checkout import token_hash
from handshake_order.domain import saga
from handshake_order.domain.states import OrderState
from handshake_shared.auth import Principal
from handshake_shared.http import Problem

# states a person may set by hand; money-moving states are reached only through the saga
MANUAL_TARGETS = {
    OrderState.NEEDS_REVIEW,
    OrderState.CANCELLED,
    OrderState.FULFILLED,
    OrderState.PARTIALLY_FULFILLED,
    OrderState.CLOSED,
}
# a staff member who asks to withdraw a refund approval request may hold any staff role; the rule for who may
# decide which request is ops.may_decide
APPROVING_ROLES = ("finance",)
WITHDRAWING_ROLES = ("support", "finance", "admin")


class NeedsApproval(Exception):
    """Support asked above its limit with request_approval: the refund transaction rolls back and an approval
    request is recorded instead."""


def refuse_query_token(request: Request) -> None:
    """A lookup token in a URL ends up in access logs, proxies and browser history: header only."""
    if "token" in request.query_params:
        raise Problem(
            400,
            "Lookup token in the URL",
            "send the order's lookup token in the X-Order-Token header, never in the query string",
            type="token-in-query",
        )


def staff_actor(subject: str) -> str:
    # audit rows name the person; the prefix keeps a staff subject from reading as a customer id
    return f"staff:{subject}"


def may_read(order: Any, principal: Principal | None, token: str | None) -> bool:
    """The order's owner, or whoever holds its lookup token. A staff role is not ownership: staff read through
    /v1/admin/orders, so nothing done here is done by staff in a customer's name."""
    return order is not None and (
        (principal is not None and order.customer_id == principal.subject)
        or (
            token is not None
            and order.lookup_token_hash is not None
            and hmac.compare_digest(order.lookup_token_hash, token_hash(token))
        )
    )


def refund_role(principal: Principal) -> str:
    return "finance" if principal.has_role("finance") else "support"


def refuse_above_support_limit(role: str, amount: int, limit: int, *, request_approval: bool) -> None:
    """One request above support's limit, before anything is read: refused unless support asks for approval."""
    if role == "support" and amount > limit and not request_approval:
        raise Problem(
            403,
            "Refund above your limit",
            f"support may refund up to {limit} per order; ask finance",
            type="refund-limit-exceeded",
        )


def check_support_total(granted: int, amount: int, limit: int, *, request_approval: bool) -> None:
    """The limit is per order, not per request: what support has already refunded or has pending on the order
    (`granted`) counts. Above it: an approval request when asked for, else refused."""
    if granted + amount > limit:
        if request_approval:
            raise NeedsApproval
        raise Problem(
            403,
            "Refund above your limit",
            f"support may refund up to {limit} per order and {granted} is already refunded or pending; ask finance",
            type="refund-limit-exceeded",
            support_refunded=int(granted),
        )


def manual_transition(view: saga.OrderView, to: OrderState, reason: str) -> saga.Decision:
    """A state set by hand: only the states a person may set, never out of a review (only finance ends one, by
    closing it), never cancelled while captured money is held. Announced on order.events.v1 like every
    transition (Decision.move)."""
    if to not in MANUAL_TARGETS:
        raise saga.CommandRefused("transition-not-manual", f"{to} is reached only through the saga")
    if view.state == OrderState.NEEDS_REVIEW:
        # otherwise support could end a review here, which only finance may do (review/close)
        raise saga.CommandRefused("review-open", "an order under review leaves it only when finance closes the review")
    if to == OrderState.CANCELLED and view.captured_amount > view.refunded_amount:
        raise saga.CommandRefused("money-held", "refund the captured money before cancelling")
    return saga.manual_transition(view, to, f"{reason} (manual)")
