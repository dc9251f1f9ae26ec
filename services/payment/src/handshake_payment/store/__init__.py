"""The repository layer below the feature packages: attempt rows, refund rows, and the ledger view and
writer over both."""
