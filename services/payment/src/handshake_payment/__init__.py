"""Handshake payment service."""

SERVICE = "payment"
