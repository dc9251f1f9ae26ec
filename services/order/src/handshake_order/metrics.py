"""The order service's Prometheus metrics, all in one place (the outbox, consumer and loop metrics come from the
shared library). Gauges say what is; counters count what happened since the process started."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# checkout
CHECKOUTS = Counter("handshake_checkouts_created_total", "Orders created by checkout")

# the lifecycle: every applied transition, and every one the table refused
TRANSITIONS = Counter("handshake_order_transitions_total", "Applied order transitions", ["from_state", "to_state"])
REFUSED = Counter(
    "handshake_order_transitions_refused_total",
    "Transitions refused by the lifecycle table",
    ["from_state", "to_state"],
)

# commands answered again under their Idempotency-Key
IDEMPOTENT_REPLAYS = Counter(
    "handshake_idempotency_replays_total", "Commands answered from a stored response", ["command"]
)

# long-polls for an order's change
WAITERS = Gauge("handshake_order_change_waiters", "Requests waiting for a change of an order")
RECONNECTS = Counter("handshake_order_change_listener_connects_total", "Connections the order change listener opened")

# the stuck-order scan
STUCK = Gauge("handshake_orders_stuck", "Orders older than their state's threshold, by state", ["state"])
REDRIVEN = Counter("handshake_orders_redriven_total", "Stuck orders re-driven, by state", ["state"])
FLAGGED = Counter("handshake_orders_flagged_stuck_total", "Stuck orders flagged for a person, by state", ["state"])
