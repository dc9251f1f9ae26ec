"""Refunds the order asks for, and payment's own refunds of a second capture."""
