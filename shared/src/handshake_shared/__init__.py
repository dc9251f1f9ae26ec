"""Mechanisms every Handshake service shares. Business rules live in the services."""
