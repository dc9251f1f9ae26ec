"""The embedded stack: PostgreSQL, a Kafka-compatible broker and the Stripe emulator, started by the
project itself so `make run` and `make test` need no Docker. Nothing in a service imports this package."""
