"""Handshake operations console: reads and acts only through the four services' HTTP APIs."""
