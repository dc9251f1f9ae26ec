"""Recovery points: where a row's provider-calling phases stand, in the order they are reached. A row that
is not `finished` still has a phase to run (phases.py runs it; reconciliation finds the row). No I/O."""

from __future__ import annotations

from enum import StrEnum


class AttemptPoint(StrEnum):
    RECORDED = "recorded"  # the attempt row exists; its PaymentIntent may or may not exist at the provider
    INTENT_STORED = "intent_stored"  # the intent id is stored: announce it, or close it if the order closed
    FINISHED = "finished"  # announced, refused by the provider, or cancelled with nothing open there


class RefundPoint(StrEnum):
    RECORDED = "recorded"  # the refund row exists; the provider may or may not have refunded yet
    PROVIDER_REFUNDED = "provider_refunded"  # the provider refund id is stored: record and announce it
    FINISHED = "finished"  # succeeded or failed, and announced


FINISHED = "finished"
