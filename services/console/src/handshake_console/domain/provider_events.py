"""What payment did with each provider event: webhook-ingest knows it received and forwarded an event, not
whether payment applied it, so the order page reads that from payment's own attempt history (each transition
names the provider event that caused it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def processing_outcomes(attempts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """provider event id -> what it changed, e.g. "applied: requires_payment → succeeded"; an event that moved
    several attempts (or one twice) lists each move in order."""
    moves: dict[str, list[str]] = {}
    for attempt in attempts:
        for step in attempt.get("transitions") or ():
            event_id = step.get("provider_event_id")
            if isinstance(event_id, str) and event_id:
                moves.setdefault(event_id, []).append(f"{step.get('from') or '—'} → {step.get('to')}")
    return {event_id: "applied: " + ", ".join(steps) for event_id, steps in moves.items()}


def outcome_of(event: Mapping[str, Any], outcomes: Mapping[str, str]) -> str:
    """The line the order page shows for one provider event."""
    known = outcomes.get(str(event.get("provider_event_id")))
    if known:
        return known
    if event.get("forwarding") == "published" or event.get("forwarded_at"):
        # forwarded, and no attempt moved because of it: a repeat, or a fact payment already had
        return "no change at payment (already known or not about money)"
    return "not yet at payment"
