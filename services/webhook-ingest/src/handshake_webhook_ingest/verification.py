"""Stripe webhook signatures, checked on the exact bytes received before anything is parsed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import stripe


class Rejected(Exception):
    """A delivery that is refused and not stored; `reason` is a metric label, so a small fixed set."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Why the SDK refused a signature, by the start of its message (the SDK has one exception class for all).
_SDK_REASONS = (
    ("No Stripe-Signature header", "missing_header"),
    ("Unable to extract timestamp", "malformed_header"),
    ("No signatures found with expected scheme", "malformed_header"),
    ("No signatures found matching", "signature_mismatch"),
    ("Timestamp outside the tolerance zone", "timestamp_outside_tolerance"),
)
# With several secrets, the most telling reason wins: a stale signature means one secret did match.
_PRIORITY = ["timestamp_outside_tolerance", "signature_mismatch", "malformed_header", "missing_header"]


def _reason_of(exc: stripe.SignatureVerificationError) -> str:
    message = str(exc.user_message or exc)
    for prefix, reason in _SDK_REASONS:
        if message.startswith(prefix):
            return reason
    return "invalid_signature"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def verify(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int) -> dict[str, Any]:
    """The verified event as plain JSON data, or Rejected. Accepted when any secret verifies (rotation)."""
    if not header:
        raise Rejected("missing_header", "the Stripe-Signature header is missing")
    reasons: list[str] = []
    for secret in secrets:
        try:
            stripe.Webhook.construct_event(body, header, secret, tolerance=tolerance)
        except stripe.SignatureVerificationError as exc:
            reasons.append(_reason_of(exc))
            continue
        except UnicodeDecodeError:
            # Stripe signs the body as UTF-8 text; other bytes cannot carry a valid signature
            raise Rejected("invalid_encoding", "the body is not UTF-8") from None
        except (ValueError, AttributeError, TypeError):
            # signed correctly but not a JSON object the SDK accepts as a v1 event
            raise Rejected("invalid_json", "the body is not a Stripe event in JSON") from None
        try:
            # parsed again as plain data: the SDK's objects are not a faithful copy of the JSON
            event = json.loads(body, parse_constant=_refuse_constant)
        except ValueError:
            raise Rejected("invalid_json", "the body is not valid JSON") from None
        if not isinstance(event, dict):
            raise Rejected("invalid_json", "the body is not a JSON object")
        return event
    reason = min(
        reasons, key=lambda r: _PRIORITY.index(r) if r in _PRIORITY else len(_PRIORITY), default="invalid_signature"
    )
    raise Rejected(reason, f"the Stripe-Signature does not verify ({reason.replace('_', ' ')})")


def signing_secret(body: bytes, header: str | None, secrets: Sequence[str]) -> str | None:
    """The configured secret that signed this delivery, whatever its age (None when none did). The oldest
    wins while Stripe signs with two during a rotation: the consumer checks the same signature with the
    same list, and the older secret is the one every replica has."""
    if not header:
        return None
    for secret in reversed(secrets):
        try:
            stripe.WebhookSignature.verify_header(body.decode("utf-8"), header, secret, tolerance=None)
        except (stripe.SignatureVerificationError, UnicodeDecodeError):
            continue
        return secret
    return None
