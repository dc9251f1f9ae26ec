"""Prometheus metrics shared by every service (service-specific ones live in the services)."""

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PENDING = Gauge("handshake_outbox_pending", "Outbox rows not yet acknowledged by the broker", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "handshake_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox row (outbox lag)", ["service"]
)
OUTBOX_PUBLISHED = Counter("handshake_outbox_published_total", "Outbox rows published and acknowledged", ["service"])
OUTBOX_PUBLISH_ERRORS = Counter("handshake_outbox_publish_errors_total", "Failed relay rounds", ["service"])

EVENTS_CONSUMED = Counter(
    "handshake_events_consumed_total",
    "Events handled by a consumer, by outcome (applied, duplicate, ignored, dead_lettered)",
    ["consumer", "type", "outcome"],
)
OFFSET_COMMITS = Counter(
    "handshake_consumer_offset_commits_total",
    "Batches of messages handled, each followed by one offset commit (a commit covers the whole batch)",
    ["consumer"],
)
EVENT_HANDLER_RETRIES = Counter(
    "handshake_event_handler_retries_total", "Handler attempts that failed and were retried", ["consumer"]
)
DEAD_LETTERS = Counter(
    "handshake_dead_letters_total", "Messages dead-lettered after bounded retries", ["consumer", "topic"]
)
DEAD_LETTERS_OPEN = Gauge(
    "handshake_dead_letters_open",
    "Dead letters neither redriven nor discarded, by consumer (read from the database: every replica reports all)",
    ["consumer"],
)
LAST_PROCESSED = Gauge(
    "handshake_consumer_last_processed_timestamp_seconds",
    "Unix time of the last event a consumer finished",
    ["consumer"],
)
EVENT_HANDLING_SECONDS = Histogram(
    "handshake_event_handling_seconds", "Time to apply one event (all attempts)", ["consumer"]
)
