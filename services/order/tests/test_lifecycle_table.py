from itertools import pairwise

import pytest

from handshake_order.domain.states import ORDER_LIFECYCLE
from handshake_order.domain.states import OrderState as S

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def test_happy_path_is_allowed_in_order():
    path = [S.DRAFT, S.PAYMENT_PENDING, S.PAID, S.FULFILLMENT_PENDING, S.FULFILLED, S.CLOSED]
    for current, target in pairwise(path):
        assert ORDER_LIFECYCLE.can(current, target), (current, target)


def test_fulfilment_is_reachable_only_through_paid():
    for state in S:
        if S.FULFILLMENT_PENDING in ORDER_LIFECYCLE.allowed(state):
            assert state in {S.PAID, S.NEEDS_REVIEW}, state
    assert not ORDER_LIFECYCLE.can(S.DRAFT, S.FULFILLMENT_PENDING)
    assert not ORDER_LIFECYCLE.can(S.PAYMENT_PENDING, S.FULFILLED)


def test_every_declared_state_is_in_the_table_and_closed_is_terminal():
    assert ORDER_LIFECYCLE.states() == set(S)
    assert ORDER_LIFECYCLE.is_terminal(S.CLOSED)
    assert not ORDER_LIFECYCLE.can(S.REFUNDED, S.PAID)
