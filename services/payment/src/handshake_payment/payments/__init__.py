"""Payments: intent creation, who holds an order's money, capture and cancel (each a handler of order.events)."""
