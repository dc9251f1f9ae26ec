"""Pytest fixtures for the embedded stack (loaded by the root conftest)."""
