"""Development stand-in for the identity provider: an Ed25519 key pair made fresh per process, which
signs customer and staff tokens for `make run`, the tests and the bench. Services are given only the
public half (HANDSHAKE_JWT_PUBLIC_KEY), exactly as they would be given a real provider's JWKS."""

from __future__ import annotations

import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from handshake_shared.settings import ServiceSettings


class DevTokenIssuer:
    def __init__(self, issuer: str = "handshake-dev", audience: str = "handshake") -> None:
        self.issuer = issuer
        self.audience = audience
        self.key_id = uuid.uuid4().hex[:12]
        self._private = Ed25519PrivateKey.generate()
        self.public_pem = (
            self._private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def issue(self, subject: str, roles: list[str] | None = None, ttl_seconds: int = 3600, **claims: object) -> str:
        now = int(time.time())
        body = {
            "sub": subject,
            "roles": roles or [],
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl_seconds,
            **claims,
        }
        return jwt.encode(body, self._private, algorithm="EdDSA", headers={"kid": self.key_id})

    def settings(self) -> dict[str, str]:
        """The verification settings a service needs to accept this issuer's tokens."""
        return {"jwt_public_key": self.public_pem, "jwt_issuer": self.issuer, "jwt_audience": self.audience}


# one per process: every service started by this process's tests or stack trusts it
DEV_ISSUER = DevTokenIssuer()


def issue_token(
    settings: ServiceSettings, subject: str, roles: list[str] | None = None, ttl_seconds: int = 3600
) -> str:
    """A token for a service configured with DEV_ISSUER's public key (the settings give issuer and audience)."""
    assert settings.jwt_public_key == DEV_ISSUER.public_pem, "the service does not trust the development issuer"
    return DEV_ISSUER.issue(subject, roles, ttl_seconds)
