"""The staff session, kept in the browser only as an encrypted, authenticated cookie (Fernet: AES-CBC plus
HMAC-SHA256), so the console keeps no session store and a stolen cookie jar shows nothing readable.

Each purpose (the session, the short sign-in handshake, idempotency keys) has its own key derived from the
configured secrets, so a value sealed for one purpose never opens as another."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr


def derive_key(secret: str, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"handshake-console {purpose}".encode()).derive(
        secret.encode()
    )


class Sealer:
    """Seals JSON for one purpose; the first secret seals, every configured one opens (rotation)."""

    def __init__(self, secrets_: list[SecretStr], purpose: str) -> None:
        keys = [Fernet(base64.urlsafe_b64encode(derive_key(s.get_secret_value(), purpose))) for s in secrets_]
        self._fernet = MultiFernet(keys)

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def open(self, token: str | None, max_age_seconds: int) -> dict[str, Any] | None:
        """The sealed value, or None when it is absent, forged, tampered with, sealed by an unknown key or too old."""
        if not token:
            return None
        try:
            value = json.loads(self._fernet.decrypt(token.encode(), ttl=max_age_seconds))
        except (InvalidToken, ValueError):
            return None
        return value if isinstance(value, dict) else None


@dataclass
class Session:
    """A signed-in staff member. `token` is their own access token, forwarded as-is to the services."""

    subject: str
    name: str
    roles: list[str]
    token: str
    expires_at: int
    session_id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def has_role(self, *roles: str) -> bool:
        return bool(set(self.roles) & set(roles))

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return {
            "sub": self.subject,
            "name": self.name,
            "roles": self.roles,
            "token": self.token,
            "exp": self.expires_at,
            "sid": self.session_id,
            "csrf": self.csrf,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Session | None:
        try:
            session = cls(
                subject=str(value["sub"]),
                name=str(value["name"]),
                roles=[str(r) for r in value["roles"]],
                token=str(value["token"]),
                expires_at=int(value["exp"]),
                session_id=str(value["sid"]),
                csrf=str(value["csrf"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return None if session.expired else session


def csrf_matches(session: Session | None, sent: str | None) -> bool:
    # synchronizer token: the value sealed in the session must come back in the form
    if session is None or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode())


class IdempotencyKeys:
    """One key per rendered form: the form carries a random form id, and the key is an HMAC over the session,
    the action, its target and that id. A double click or a browser retry resends the same form and so the
    same key; a new rendering of the form is a new request. The HMAC keeps one session from choosing the key
    another session's action would use."""

    def __init__(self, secrets_: list[SecretStr]) -> None:
        self._key = derive_key(secrets_[0].get_secret_value(), "idempotency-keys")

    def derive(self, session: Session, action: str, target: str, form_id: str) -> str:
        message = "\x1f".join((session.session_id, session.subject, action, target, form_id)).encode()
        return "console-" + hmac.new(self._key, message, hashlib.sha256).hexdigest()[:40]


def new_form_id() -> str:
    return secrets.token_urlsafe(18)
