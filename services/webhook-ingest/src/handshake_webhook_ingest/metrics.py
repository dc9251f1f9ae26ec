"""Webhook-ingest metrics (outbox and relay metrics come from the shared library)."""

from prometheus_client import Counter, Histogram

WEBHOOK_DELIVERIES = Counter(
    "handshake_webhook_deliveries_total",
    "Verified webhook deliveries stored (first and repeated)",
    ["provider", "type"],
)
WEBHOOK_DUPLICATES = Counter(
    "handshake_webhook_duplicates_total",
    "Verified deliveries of an event already stored (counted, not forwarded again)",
    ["provider"],
)
WEBHOOK_REJECTED = Counter(
    "handshake_webhook_rejected_total",
    "Deliveries refused and not stored, by reason (bad or stale signature, bad body, too large)",
    ["provider", "reason"],
)
# The provider waits for this answer (Stripe gives up after ~10-20 s and retries), so it stays short.
WEBHOOK_ACK_SECONDS = Histogram(
    "handshake_webhook_ack_seconds",
    "Time from receiving a webhook to answering it, by outcome (accepted, duplicate, rejected)",
    ["provider", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOK_REPLAYS = Counter(
    "handshake_webhook_replays_total",
    "Stored provider events re-forwarded on a support/admin replay",
    ["provider"],
)
GAP_EVENTS = Counter(
    "handshake_webhook_gap_events_total",
    "Provider events the gap scan found missing (never delivered by webhook) and ingested",
    ["provider"],
)
GAP_SCANS = Counter(
    "handshake_webhook_gap_scans_total",
    "Gap scans run, by outcome (completed, failed, skipped: another replica holds the scan lock)",
    ["provider", "outcome"],
)
