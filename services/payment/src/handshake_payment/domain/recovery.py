"""Recovery points: where a row's provider-calling phases stand, in the order they are reached. A row that
is not `finished` still has a phase to run (phases.py runs it; reconciliation finds the row). No I/O.

An attempt carries one point per operation that calls the provider for it, each in a column of its own:
intent creation (`recovery_point`, from the row's birth), then, when asked, capture, cancel (the order
closed) and giving back a duplicate. A capture, a cancel or a webhook can find a duplicate's money and
give it back while its own point is still open, and the order's and the provider's events are handled
concurrently, so one column per operation keeps each point written by its operation alone. NULL: the
operation was never asked of the row."""

from __future__ import annotations

from enum import StrEnum


class AttemptPoint(StrEnum):
    RECORDED = "recorded"  # the attempt row exists; its PaymentIntent may or may not exist at the provider
    INTENT_STORED = "intent_stored"  # the intent id is stored: announce it, or close it if the order closed
    FINISHED = "finished"  # announced, refused by the provider, or cancelled with nothing open there


class CapturePoint(StrEnum):
    REQUESTED = "requested"  # the order asked (capture_amount); the provider may or may not have captured
    SETTLED_AT_PROVIDER = "settled_at_provider"  # captured, or refused with the authorization released
    FINISHED = "finished"  # recorded and announced, or the attempt left `authorized` some other way


class CancelPoint(StrEnum):
    REQUESTED = "requested"  # the order closed (cancel_code, cancel_reason); the intent may still be open
    CLOSED_AT_PROVIDER = "closed_at_provider"  # cancelled at the provider, or found paid there
    FINISHED = "finished"  # recorded and announced: nothing of the attempt can take money any more


class GiveBackPoint(StrEnum):
    MARKED_DUPLICATE = "marked_duplicate"  # a duplicate, its automatic refund row written if money was taken
    GIVEN_BACK = "given_back"  # the refund made at the provider, or the authorization released
    FINISHED = "finished"  # recorded and announced (or refused by the provider, and said so)


class RefundPoint(StrEnum):
    RECORDED = "recorded"  # the refund row exists; the provider may or may not have refunded yet
    PROVIDER_REFUNDED = "provider_refunded"  # the provider refund id is stored: record and announce it
    FINISHED = "finished"  # succeeded or failed, and announced


FINISHED = "finished"

# an attempt's point columns besides intent creation's, with the points each takes in order
ATTEMPT_OPERATIONS: dict[str, type[StrEnum]] = {
    "capture_point": CapturePoint,
    "cancel_point": CancelPoint,
    "give_back_point": GiveBackPoint,
}


def unfinished(point: str | None) -> bool:
    """The operation was asked and has a phase left."""
    return point is not None and point != FINISHED


def before(column: str, point: str) -> list[str]:
    """The points of an attempt's operation that come before `point`: a point only moves forward, so the
    column may take `point` only from one of these (or from NULL: the operation was not asked yet)."""
    order = [p.value for p in ATTEMPT_OPERATIONS[column]]
    return order[: order.index(point)]


def advances(column: str, current: str | None, point: str) -> bool:
    return current is None or current in before(column, point)
