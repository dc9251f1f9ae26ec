"""The staff actions the console offers: which service endpoint each calls, who may press it (the services decide
in the end; the console only greys out what would be refused), and the body built from the form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handshake_console.domain.money import AmountError, parse_amount

Form = Mapping[str, str]


class FormError(ValueError):
    """What is wrong with the submitted form; nothing is sent to a service."""


def _text(form: Form, name: str, label: str, *, minimum: int = 3, maximum: int = 500) -> str:
    value = (form.get(name) or "").strip()
    if len(value) < minimum:
        raise FormError(f"{label} must have at least {minimum} characters")
    if len(value) > maximum:
        raise FormError(f"{label} must have at most {maximum} characters")
    return value


def _reason(form: Form) -> dict[str, Any]:
    return {"reason": _text(form, "reason", "the reason")}


def _refund(form: Form, currency: str | None, *, request_approval: bool) -> dict[str, Any]:
    if not currency:
        raise FormError("the order's currency is not known; reload the order")
    try:
        amount = parse_amount(form.get("amount", ""), currency)
    except AmountError as exc:
        raise FormError(str(exc)) from None
    body: dict[str, Any] = {
        "amount": amount,
        "reason": _text(form, "reason", "the reason"),
        "restock": form.get("restock") in ("on", "true", "1"),
    }
    if request_approval:
        body["request_approval"] = True
    return body


def _target(form: Form) -> str:
    value = (form.get("to") or "").strip()
    if not value or len(value) > 40 or not value.replace("_", "").isalpha():
        raise FormError("choose the state to move the order to")
    return value


# an action whose service is named by the submitted form (a dead letter lives in the service whose consumer
# stored it); the console checks the name against the services it knows
DEAD_LETTER_SERVICE = "<the form's service>"


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    service: str
    # path under the service, formatted with order_id (and event_id for a webhook replay, dead_letter_id for a
    # dead letter)
    path: str
    roles: tuple[str, ...]
    build: Callable[[Form, str | None], dict[str, Any]]
    # a refusal the service answers with 403 names what would be needed
    needs: str = ""

    def allowed_for(self, roles: list[str]) -> bool:
        return bool(set(roles) & set(self.roles))


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "review",
            "Mark for review",
            "order",
            "/v1/admin/orders/{order_id}/review",
            ("support", "finance", "admin"),
            lambda f, c: {"note": _text(f, "note", "the note")},
        ),
        Action(
            "close_review",
            "Close review",
            "order",
            "/v1/admin/orders/{order_id}/review/close",
            ("finance", "admin"),
            lambda f, c: {"to": _target(f), **_reason(f)},
            needs="finance or admin",
        ),
        Action(
            "refund",
            "Refund",
            "order",
            "/v1/admin/orders/{order_id}/refunds",
            ("support", "finance"),
            lambda f, c: _refund(f, c, request_approval=False),
            needs="support (up to the limit) or finance",
        ),
        Action(
            "request_approval",
            "Ask finance to approve a refund",
            "order",
            "/v1/admin/orders/{order_id}/refunds",
            ("support",),
            lambda f, c: _refund(f, c, request_approval=True),
            needs="support",
        ),
        Action(
            "transition",
            "Manual transition",
            "order",
            "/v1/admin/orders/{order_id}/transitions",
            ("support", "admin"),
            lambda f, c: {"to": _target(f), **_reason(f)},
            needs="support or admin",
        ),
        Action(
            "resend",
            "Resend order event",
            "order",
            "/v1/admin/orders/{order_id}/events/resend",
            ("support", "finance", "admin"),
            lambda f, c: _reason(f),
        ),
        Action(
            "redrive",
            "Re-drive stuck order",
            "order",
            "/v1/admin/orders/{order_id}/redrive",
            ("support", "admin"),
            lambda f, c: _reason(f),
            needs="support or admin",
        ),
        Action(
            "reconcile",
            "Reconcile with the provider",
            "payment",
            "/v1/admin/orders/{order_id}/reconciliation",
            ("support", "finance", "admin"),
            lambda f, c: _reason(f),
        ),
        Action(
            "replay",
            "Replay webhook",
            "webhook-ingest",
            "/v1/admin/provider-events/{event_id}/replay",
            ("support", "admin"),
            lambda f, c: _reason(f),
            needs="support or admin",
        ),
        # the service is the one holding the dead letter (DEAD_LETTER_SERVICE: chosen by the form)
        Action(
            "redrive_dead_letter",
            "Apply again",
            DEAD_LETTER_SERVICE,
            "/v1/admin/dead-letters/{dead_letter_id}/redrive",
            ("support", "finance", "admin"),
            lambda f, c: _reason(f),
        ),
    )
}

APPROVAL_DECISIONS = ("approve", "reject")
APPROVAL_ROLES = ("finance",)
