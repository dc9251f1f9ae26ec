"""The payment ledger of one order under any stream of facts: reordered, duplicated, late and unexpected.

Drives the pure ledger (domain/ledger.py) the handlers use, the way they use it: a decision, its provider
calls answered by a provider that remembers each idempotency key (as Stripe does), then the next decision.
Provider facts (webhooks, reconciliation) may come any number of times under new event ids, so the ledger
itself must make a second delivery a no-op; requests from the order service come once per event id (the
inbox drops a redelivery), so only their idempotent parts are redelivered here."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from handshake_payment.domain import ledger as L
from handshake_payment.domain.attempts import AttemptState as A
from handshake_payment.domain.recovery import FINISHED, GiveBackPoint
from handshake_payment.domain.refunds import RefundState as R
from handshake_payment.domain.refunds import automatic_refund_id

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

AMOUNT = 5000
CURRENCY = "EUR"
ORDER = uuid.UUID("00000000-0000-4000-8000-000000000001")
MAX_ATTEMPTS = 3


def _has_intent(machine: PaymentLedger) -> bool:
    return any(a.intent_id is not None for a in machine.ledger.attempts)


amounts = st.sampled_from([AMOUNT, AMOUNT, AMOUNT - 1000, AMOUNT + 1000])
currencies = st.sampled_from([CURRENCY, CURRENCY, CURRENCY, "USD"])
attempt_no = st.integers(min_value=0, max_value=MAX_ATTEMPTS - 1)


class PaymentLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = L.Ledger(ORDER)
        self.n = 0
        # what the provider answered, per idempotency key: the same key gets the same answer
        self.provider: dict[str, bool] = {}
        # every key ever used for (call kind, subject): a redelivered fact must ask with the same one
        self.keys: dict[tuple[str, uuid.UUID], str] = {}
        self.versions: Counter[object] = Counter()  # moves made per attempt or refund
        self.announced: set[tuple[object, ...]] = set()
        self.redeliverable: list[Callable[[], None]] = []
        self.capture_requests = 0

    # -- the handler's loop: decide, write, call the provider ----------------------------------------

    def commit(self, decision: L.Decision, *, answer: int | None = None) -> None:
        """What attempt_store.apply writes, and the checks every written decision passes."""
        for call in decision.calls:
            assert str(call.subject) in call.idempotency_key, call
            known = self.keys.setdefault((call.kind, call.subject), call.idempotency_key)
            assert known == call.idempotency_key, (known, call)
        moved = {m.attempt_id for m in decision.moves} | {m.refund_id for m in decision.refund_moves}
        written = {r.id for r in decision.new_refunds} | {d for d, _ in decision.new_disputes}
        for data in decision.emits:
            subject = _subject(data)
            # every announcement says what this decision changed (a move, a new row) or answers a request
            assert answer is not None or subject in moved | written, (data, decision)
            identity = (data.event_type, subject, self.versions[subject], answer)
            assert identity not in self.announced, f"announced twice: {identity}"
            self.announced.add(identity)
        self.ledger = L.evolve(self.ledger, decision)
        for m in decision.moves:
            self.versions[m.attempt_id] += 1
        for rm in decision.refund_moves:
            self.versions[rm.refund_id] += 1

    def provider_says(self, call: L.ProviderCall, ok: bool) -> bool:
        return self.provider.setdefault(call.idempotency_key, ok)

    def deliver(self, fact: Callable[[], None], *, redeliverable: bool = True) -> None:
        fact()
        if redeliverable:
            self.redeliverable.append(fact)

    def attempt(self, i: int) -> L.Attempt | None:
        """One of the attempts the provider knows (an intent is stored on it), if any."""
        known = [a for a in self.ledger.attempts if a.intent_id is not None]
        return known[i % len(known)] if known else None

    def store_refund(self, refund_id: uuid.UUID, provider_refund_id: str) -> None:
        """What store/refunds.py writes once the provider refunded: the id, and for a duplicate's automatic
        refund its give-back's point."""
        refunds = tuple(
            replace(r, provider_refund_id=provider_refund_id)
            if r.id == refund_id and r.provider_refund_id is None
            else r
            for r in self.ledger.refunds
        )
        self.ledger = replace(self.ledger, refunds=refunds)
        refund = self.ledger.refund(refund_id)
        if refund is not None and refund.automatic and refund.attempt_id is not None:
            self.given_back(refund.attempt_id)

    def given_back(self, attempt_id: uuid.UUID) -> None:
        """What the store writes once a duplicate's money is back at the provider."""
        attempt = self.ledger.attempt(attempt_id)
        if attempt.give_back_point == GiveBackPoint.MARKED_DUPLICATE:
            attempt = replace(attempt, give_back_point=GiveBackPoint.GIVEN_BACK)
            self.ledger = L.with_attempts(self.ledger, [attempt])

    def refund_at_provider(self, refund_id: uuid.UUID, provider_ok: bool) -> tuple[str | None, str | None] | None:
        """The refund's provider call (phase 2); the refusal when the provider refuses."""
        for call in L.execute_refund(self.ledger, refund_id).calls:
            self.commit(L.Decision(calls=[call]))
            if not self.provider_says(call, provider_ok):
                return ("card_declined", "refused")
            self.store_refund(refund_id, f"re_{refund_id.hex}")
        return None

    def settle(self, attempt_id: uuid.UUID, fact: L.Settled, provider_ok: bool) -> None:
        """payments/holding.py: mark a duplicate and give its money back, then the consumer's step."""
        marked = L.mark_duplicate(self.ledger, attempt_id, fact)
        self.commit(marked)
        refusal = None
        if marked.outcome == "duplicate":
            attempt = self.ledger.attempt(attempt_id)
            for call in L.give_back(self.ledger, attempt).calls:
                if call.kind == "create_refund":
                    refusal = self.refund_at_provider(call.subject, provider_ok)
                else:
                    self.commit(L.Decision(calls=[call]))
                    self.given_back(attempt_id)  # the provider released the authorization
        settled = L.settle(self.ledger, attempt_id, fact, refund_refusal=refusal)
        # one consumer at a time: nothing can take the payment between the steps, nor leave a refund unmade
        assert settled.outcome not in ("race", "pending"), settled
        self.commit(settled)

    # -- the facts ----------------------------------------------------------------------------------

    @precondition(lambda self: len(self.ledger.attempts) < MAX_ATTEMPTS)
    @rule(provider_ok=st.booleans(), answer_lost=st.booleans())
    def payment_requested(self, provider_ok: bool, answer_lost: bool) -> None:
        """The attempt row, its intent at the provider, then payment.intent_created (or payment.failed when
        the provider refuses it). A lost answer leaves the attempt `creating`: a redelivery or reconciliation
        asks the provider again, with the same key."""
        self.n += 1
        attempt_id = uuid.UUID(int=self.n)
        self.ledger = L.with_attempts(self.ledger, [L.Attempt(attempt_id, ORDER, A.CREATING, AMOUNT, CURRENCY)])
        lost = [answer_lost]

        def create() -> None:
            attempt = self.ledger.attempt(attempt_id)
            refusal = None
            for call in L.create_intent(attempt).calls:
                self.commit(L.Decision(calls=[call]))
                if not self.provider_says(call, provider_ok):
                    refusal = ("card_declined", "refused")
                elif lost.pop() if lost else False:
                    return  # the provider made it; we never heard
                else:
                    attempt = replace(attempt, intent_id=f"pi_{attempt_id.hex}")
                    self.ledger = L.with_attempts(self.ledger, [attempt])
            self.commit(L.announce_intent(self.ledger.attempt(attempt_id), refusal))

        self.deliver(create)

    @precondition(_has_intent)
    @rule(i=attempt_no, authorized=st.booleans(), amount=amounts, currency=currencies, manual=st.booleans())
    def provider_holds_money(self, i: int, authorized: bool, amount: int, currency: str, manual: bool) -> None:
        attempt = self.attempt(i)
        if attempt is None or attempt.intent_id is None:
            return  # about an intent no attempt knows: parked, and applied once it is stored
        target = A.AUTHORIZED if authorized else A.SUCCEEDED
        mismatch = L.is_mismatch(attempt, target, amount, currency, manual=manual)
        fact = L.Settled(target, amount, currency, attempt.intent_id, "stripe", None, "webhook" if mismatch else None)
        self.deliver(lambda: self.settle(attempt.id, fact, provider_ok=True))

    @precondition(_has_intent)
    @rule(i=attempt_no, ended=st.sampled_from([A.PROCESSING, A.FAILED, A.CANCELED]))
    def provider_ends(self, i: int, ended: A) -> None:
        attempt = self.attempt(i)
        if attempt is None or attempt.intent_id is None:
            return
        intent_id = attempt.intent_id
        self.deliver(
            lambda: self.commit(L.end_attempt(self.ledger, attempt.id, ended, "stripe", intent_id=intent_id, code="x"))
        )

    @precondition(_has_intent)
    @rule(i=attempt_no, amount=st.sampled_from([AMOUNT, AMOUNT - 1500]), provider_ok=st.booleans())
    def capture_requested(self, i: int, amount: int, provider_ok: bool) -> None:
        attempt = self.attempt(i)
        if attempt is None or attempt.intent_id is None or attempt.state == A.CREATING:
            return  # the order asks for a capture only after payment.authorized
        self.capture_requests += 1
        decision = L.capture(self.ledger, attempt.id, amount)
        if decision.outcome == "poison":
            return
        self.commit(decision, answer=self.capture_requests if decision.outcome == "not_capturable" else None)
        for call in decision.calls:
            assert call.amount is not None
            if self.provider_says(call, provider_ok):
                captured = L.Settled(
                    A.SUCCEEDED, min(call.amount, attempt.amount), CURRENCY, attempt.intent_id, "captured"
                )
                self.settle(attempt.id, captured, provider_ok=True)
            else:
                self.commit(L.release_authorization(self.ledger.attempt(attempt.id)))
                self.commit(L.capture_refused(self.ledger, attempt.id, "card_declined", "refused"))

    @rule(expired=st.booleans())
    def order_closed(self, expired: bool) -> None:
        why = "order_expired" if expired else "order_cancelled"

        def close() -> None:
            decision = L.close_order(self.ledger, why, "customer")
            self.commit(decision)
            for call in decision.calls:
                state = self.ledger.attempt(call.subject).state
                if state in (A.REQUIRES_PAYMENT, A.FAILED, A.AUTHORIZED):  # Stripe cancels what is open
                    self.commit(L.intent_cancelled(self.ledger, call.subject, why, "customer"))

        self.deliver(close)

    @rule(amount=st.sampled_from([1000, 2500, AMOUNT, AMOUNT + 1]), currency=currencies, provider_ok=st.booleans())
    def refund_requested(self, amount: int, currency: str, provider_ok: bool) -> None:
        self.n += 1
        refund_id = uuid.UUID(int=10_000 + self.n)

        def request() -> None:
            decision = L.request_refund(
                self.ledger, refund_id, amount=amount, currency=currency, reason="customer", requested_by="support"
            )
            assert decision.outcome != "poison"
            self.commit(decision)
            refusal = self.refund_at_provider(refund_id, provider_ok)
            self.commit(L.finish_refund(self.ledger, refund_id, refusal))

        self.deliver(request)

    @precondition(_has_intent)
    @rule(i=attempt_no, amount=st.sampled_from([500, 2000, AMOUNT]), currency=currencies)
    def refunded_at_provider(self, i: int, amount: int, currency: str) -> None:
        attempt = self.attempt(i)
        if attempt is None or attempt.intent_id is None:
            return
        self.n += 1
        provider_refund_id = f"re_dashboard_{self.n}"
        row_id = uuid.UUID(int=20_000 + self.n)

        def seen() -> None:
            self.commit(
                L.refund_at_provider(
                    self.ledger,
                    attempt.id,
                    row_id,
                    provider_refund_id=provider_refund_id,
                    amount=amount,
                    currency=currency,
                )
            )

        self.deliver(seen)

    @rule(k=st.integers(min_value=0, max_value=5))
    def refund_reversed(self, k: int) -> None:
        made = [r for r in self.ledger.refunds if r.provider_refund_id is not None]
        if not made:
            return
        provider_refund_id = made[k % len(made)].provider_refund_id
        assert provider_refund_id is not None
        self.deliver(
            lambda: self.commit(
                L.refund_reversed(self.ledger, provider_refund_id, status="failed", why="expired_card", intent_id="pi")
            )
        )

    @precondition(_has_intent)
    @rule(i=attempt_no, dispute=st.sampled_from(["dp_1", "dp_2"]))
    def disputed(self, i: int, dispute: str) -> None:
        attempt = self.attempt(i)
        if attempt is None or attempt.intent_id is None:
            return
        intent_id = attempt.intent_id
        self.deliver(
            lambda: self.commit(
                L.dispute(
                    self.ledger,
                    attempt.id,
                    dispute_id=dispute,
                    intent_id=intent_id,
                    amount=None,
                    currency=None,
                    reason="fraudulent",
                    status="needs_response",
                )
            )
        )

    @precondition(lambda self: bool(self.redeliverable))
    @rule(k=st.integers(min_value=0, max_value=1000))
    def delivered_again(self, k: int) -> None:
        """A fact seen before, again, after whatever happened since: nothing new is announced (commit
        refuses an announcement made before) and its provider calls carry the keys they carried."""
        self.redeliverable[k % len(self.redeliverable)]()

    # -- what always holds --------------------------------------------------------------------------

    @invariant()
    def one_holder(self) -> None:
        holders = [a for a in self.ledger.attempts if a.holds_payment]
        assert len(holders) <= 1, holders

    @invariant()
    def refunds_within_captures(self) -> None:
        for attempt in self.ledger.attempts:
            committed = self.ledger.committed(attempt.id)
            if attempt.state == A.SUCCEEDED:
                assert committed <= attempt.captured, (attempt, self.ledger.refunds)
            else:
                assert committed == 0, (attempt, self.ledger.refunds)
        assert all(r.attempt_id is not None for r in self.ledger.refunds if r.counts)

    @invariant()
    def duplicate_money_goes_back(self) -> None:
        for attempt in self.ledger.attempts:
            if attempt.duplicate_of is not None and attempt.state == A.SUCCEEDED and attempt.captured:
                refund = self.ledger.refund(automatic_refund_id(attempt.id))
                assert refund is not None and refund.automatic and refund.amount == attempt.captured
                # given back, or its refusal recorded and announced: never left waiting once the fact is applied
                assert refund.state != R.REQUESTED, refund

    @invariant()
    def recovery_points_say_what_is_left(self) -> None:
        """Every fact here is applied to its end, so the only operation a point may leave open is a cancel the
        provider could not make yet (the intent was processing, or not announced), on an attempt still open;
        a duplicate always says where giving its money back stands."""
        for attempt in self.ledger.attempts:
            assert (attempt.give_back_point is None) == (attempt.duplicate_of is None), attempt
            assert attempt.give_back_point in (None, FINISHED) and attempt.capture_point in (None, FINISHED), attempt
            if attempt.cancel_point not in (None, FINISHED):
                assert attempt.state not in L.CLOSED_STATES, attempt

    @invariant()
    def keys_are_one_per_call(self) -> None:
        assert len(set(self.keys.values())) == len(self.keys)


def _subject(data: object) -> object:
    for name in ("dispute_id", "refund_id", "attempt_id"):
        value = getattr(data, name, None)
        if value is not None:
            return value if isinstance(value, uuid.UUID) or name == "dispute_id" else uuid.UUID(str(value))
    raise AssertionError(f"an announcement about nothing: {data!r}")


PaymentLedger.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_payment_ledger = PaymentLedger.TestCase
