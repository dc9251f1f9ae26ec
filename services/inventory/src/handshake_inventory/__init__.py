"""Handshake inventory service."""

SERVICE = "inventory"
