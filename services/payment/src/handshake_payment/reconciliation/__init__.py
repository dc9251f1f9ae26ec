"""Reconciliation with the provider: scheduled and asked-for runs that bring our rows in line with Stripe."""
