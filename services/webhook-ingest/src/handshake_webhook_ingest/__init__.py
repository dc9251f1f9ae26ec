"""Handshake webhook-ingest service."""

SERVICE = "webhook-ingest"
