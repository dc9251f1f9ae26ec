"""Handshake order service."""

SERVICE = "order"
