"""Bearer JWTs (HS256 in development; issuer, audience and key are settings) and service-to-service tokens."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

import jwt

from handshake_shared.http import Problem
from handshake_shared.settings import ServiceSettings


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


def issue_token(settings: ServiceSettings, subject: str, roles: list[str] | None = None, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": roles or [],
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, settings.jwt_key.get_secret_value(), algorithm="HS256")


def principal_from_header(settings: ServiceSettings, authorization: str | None) -> Principal | None:
    """None when no bearer token was sent; a 401 problem when one was sent and is not valid."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "Unauthorized", "expected a bearer token", type="unauthorized")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_key.get_secret_value(),
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "exp", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise Problem(401, "Unauthorized", f"invalid token: {exc}", type="unauthorized") from None
    return Principal(subject=str(claims["sub"]), roles=frozenset(claims.get("roles") or []))


def require_roles(settings: ServiceSettings, authorization: str | None, *roles: str) -> Principal:
    principal = principal_from_header(settings, authorization)
    if principal is None:
        raise Problem(401, "Unauthorized", "a bearer token is required", type="unauthorized")
    if not principal.has_role(*roles):
        raise Problem(403, "Forbidden", f"requires one of the roles: {', '.join(roles)}", type="forbidden")
    return principal


def check_internal_token(settings: ServiceSettings, authorization: str | None) -> None:
    expected = "Bearer " + settings.internal_token.get_secret_value()
    if not authorization or not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise Problem(401, "Unauthorized", "internal API requires the service token", type="unauthorized")
