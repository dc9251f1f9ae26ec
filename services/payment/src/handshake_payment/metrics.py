"""Every Prometheus metric of the payment service, in one place: what /metrics shows and what the dashboards
read. Names are part of the operations contract; the module a metric is counted in says where it moves."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# payments/cancel.py
ORDER_CLOSE_ATTEMPTS = Counter(
    "handshake_payment_order_close_attempts_total",
    "Attempts of cancelled or expired orders, by outcome (canceled: intent cancelled at the provider; "
    "never_created: cancelled before an intent existed; paid: the provider had taken the money; "
    "processing: still settling, left to its webhook)",
    ["outcome"],
)

# payments/capture.py
CAPTURES = Counter(
    "handshake_payment_captures_total",
    "Capture requests by outcome (captured; already_captured: found captured at the provider; refused: the "
    "provider refused or nothing was capturable, authorization released; not_capturable: the attempt's "
    "authorization was gone before the request)",
    ["outcome"],
)

# provider_events/disputes.py
DISPUTES = Counter(
    "handshake_payment_disputes_total",
    "Provider dispute events by Stripe type and outcome (announced; duplicate: that dispute was announced "
    "before; unmatched: no attempt of ours holds the disputed intent yet, parked; incomplete: the dispute "
    "names no intent)",
    ["type", "outcome"],
)

# provider_events/intake.py
PROVIDER_FACTS = Counter(
    "handshake_payment_provider_events_total",
    "Provider events by Stripe type and outcome (applied, refused, duplicate: a second attempt's payment, "
    "given back; parked: about an intent no attempt knows yet, applied once one stores it; unmatched, ignored)",
    ["type", "outcome"],
)

# provider_events/intake.py
LOST_INTENT_LEASES = Counter(
    "handshake_payment_intent_lease_lost_total",
    "PaymentIntents created after another handler had already stored one for the attempt (provider ignored the key)",
)

# provider_events/intake.py
UNCANCELLABLE = Counter(
    "handshake_payment_cancelled_attempt_intent_open_total",
    "Intents of attempts cancelled while being created that the provider would not cancel (already paid or "
    "settling): reconciliation must look at them",
)

# provider_events/intake.py
RECOVERED_INTENTS = Counter(
    "handshake_payment_intents_recovered_total",
    "PaymentIntents found at the provider (metadata.attempt_id) after a create whose answer was lost, instead "
    "of creating a second one",
)

# provider_events/intake.py
MISMATCHES = Counter(
    "handshake_payment_mismatches_total",
    "Attempts whose provider amount or currency differs from what was asked, by who noticed (webhook, "
    "reconciliation): never announced as paid",
    ["detected_by"],
)

# idempotency.py
IDEMPOTENT_REPLAYS = Counter(
    "handshake_payment_idempotent_replays_total", "Staff actions answered from a stored response", ["command"]
)

# provider_events/parking.py
PARKED = Counter(
    "handshake_payment_parked_provider_events_total",
    "Provider events about a PaymentIntent no attempt knew yet, by outcome (parked; applied: replayed once "
    "the intent was stored; unusable: could not be applied when replayed)",
    ["outcome"],
)

# provider_events/proof.py
PROVIDER_EVENTS_REFUSED = Counter(
    "handshake_provider_events_refused_total",
    "provider.stripe.event messages refused and dead-lettered without effect because nothing shows the provider "
    "sent them, by reason (unsealed: no endpoint secret opens the sealed delivery; signature_mismatch: the "
    "delivery's Stripe-Signature does not verify; not_an_event: the signed body is not a Stripe event; "
    "unknown_at_provider / malformed_id: an unsigned event the provider does not have)",
    ["reason"],
)

# provider_events/proof.py
PROVIDER_EVENTS_VERIFIED = Counter(
    "handshake_provider_events_verified_total",
    "provider.stripe.event messages accepted, by proof (signature: the signed delivery; provider: the event "
    "retrieved from the provider by id)",
    ["proof"],
)

# provider_events/refunds.py
PROVIDER_REFUNDS = Counter(
    "handshake_payment_provider_refunds_total",
    "Refunds seen in provider events, by outcome (recorded: made outside Handshake, recorded and announced; "
    "ours: carries our refund_id, finished by the refund path; known: already recorded; pending: not "
    "succeeded yet; failed: failed or canceled, never recorded here; exceeds_capture: would take the recorded refunds above the capture, not recorded; "
    "currency_mismatch; not_order_payment: on an attempt that does not hold the order's payment)",
    ["outcome"],
)

# provider_events/refunds.py
REFUND_REVERSALS = Counter(
    "handshake_payment_refund_reversals_total",
    "Refunds the provider accepted and failed afterwards: recorded as reversed and announced to the order",
)

# reconciliation/reconciler.py
RECONCILIATION_RUNS = Counter(
    "handshake_reconciliation_runs_total",
    "Reconciliation runs by outcome (clean: nothing to do; repaired; flagged: a mismatch for review; "
    "errors: some items could not be checked; failed: the run itself broke off; skipped: another replica's "
    "scheduled run was going)",
    ["outcome"],
)

# reconciliation/reconciler.py
RECONCILIATION_REPAIRS = Counter(
    "handshake_reconciliation_repairs_total",
    "Rows reconciliation brought in line with the provider, by kind (payment_succeeded, payment_authorized, "
    "payment_processing, payment_failed, payment_canceled, refund_succeeded, refund_failed; "
    "payment_requires_payment: an unfinished attempt's intent announced; intent_finished, capture_finished, "
    "cancel_finished, give_back_finished: an operation left half-way finished with no change of the attempt's "
    "state, e.g. a duplicate's automatic refund made)",
    ["kind"],
)

# reconciliation/reconciler.py
RECONCILIATION_MISMATCHES = Counter(
    "handshake_reconciliation_mismatches_total",
    "Attempts reconciliation found the provider holding another amount or currency for",
)

# refunds/requests.py
REFUNDS = Counter(
    "handshake_payment_refunds_total",
    "Refunds by outcome (succeeded; failed: refused by the provider; rejected: refused by our guard before any "
    "provider call; recovered: found already made at the provider after a lost answer) and kind (requested, "
    "automatic)",
    ["outcome", "kind"],
)

# refunds/requests.py
LOST_REFUND_LEASES = Counter(
    "handshake_payment_refund_lease_lost_total",
    "Provider refunds made after another handler had already stored one for the same refund",
)

# store/attempts.py
ATTEMPTS = Counter(
    "handshake_payment_attempts_total",
    "Payment attempts by outcome (created, intent_created, processing, authorized, succeeded, capture_failed, "
    "failed, canceled)",
    ["outcome"],
)

# store/attempts.py
TRANSITIONS_REFUSED = Counter(
    "handshake_payment_transitions_refused_total",
    "Transitions refused by the attempt lifecycle table",
    ["from_state", "to_state"],
)

# payments/holding.py
DUPLICATES = Counter(
    "handshake_payment_duplicate_payments_total",
    "Attempts paid or authorized while another attempt of the order already held its payment; their money "
    "is given back automatically",
    ["state"],
)

# stripe_gateway.py
PROVIDER_SECONDS = Histogram(
    "handshake_payment_provider_request_seconds",
    "Latency of Stripe API calls, including the SDK's own retries",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# stripe_gateway.py
PROVIDER_ERRORS = Counter(
    "handshake_payment_provider_errors_total", "Stripe API calls that raised, by error class", ["operation", "error"]
)
