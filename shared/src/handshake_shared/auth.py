"""Bearer tokens of customers and staff, and the credentials services present to each other.

Tokens are signed by an identity provider with an asymmetric key (EdDSA or RS256); a service holds only
public keys (a JWKS URL, or a PEM / JWKS file), so a leaked service configuration cannot mint an admin
token. `iss`, `aud`, `exp`, `iat` and `sub` are required and a token may not live longer than
HANDSHAKE_JWT_MAX_LIFETIME_SECONDS, whatever its own `exp` claims."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from pydantic import SecretStr

from handshake_shared.http import Problem
from handshake_shared.settings import ServiceSettings


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, type="unauthorized")


class TokenVerifier:
    """Verifies bearer tokens against the configured public keys; built once per settings object."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.algorithms = list(settings.jwt_algorithms)
        self._jwks_client: jwt.PyJWKClient | None = None
        self._keys: list[jwt.PyJWK] = []
        if settings.jwt_jwks_url:
            # keys are cached and refetched at most every five minutes (or for an unknown kid), so the
            # blocking fetch happens once, not per request
            self._jwks_client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300, timeout=5)
        elif settings.jwt_public_key_file:
            self._keys = load_public_keys(Path(settings.jwt_public_key_file).read_text())
        elif settings.jwt_public_key:
            self._keys = load_public_keys(settings.jwt_public_key)

    def _key_for(self, token: str) -> Any:
        if self._jwks_client is not None:
            try:
                return self._jwks_client.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as exc:
                raise _unauthorized(f"no key to verify the token: {exc}") from None
        if not self._keys:
            raise _unauthorized("this service has no key to verify tokens with")
        kid = jwt.get_unverified_header(token).get("kid")
        matching = [k for k in self._keys if kid is None or k.key_id in (None, kid)]
        if not matching:
            raise _unauthorized("the token's key id is unknown")
        return matching[0].key

    def verify(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self.algorithms,
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        now = time.time()
        if (
            claims["exp"] - claims["iat"] > s.jwt_max_lifetime_seconds
            or claims["exp"] > now + s.jwt_max_lifetime_seconds + s.jwt_leeway_seconds
        ):
            raise _unauthorized(f"token lives longer than {s.jwt_max_lifetime_seconds} s")
        if claims["iat"] > now + s.jwt_leeway_seconds:
            raise _unauthorized("token issued in the future")
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _unauthorized("invalid roles claim")
        return Principal(subject=str(claims["sub"]), roles=frozenset(roles))


def load_public_keys(text: str) -> list[jwt.PyJWK]:
    """A PEM public key, or a JWKS document (`{"keys": [...]}`), or a single JWK."""
    text = text.strip()
    if text.startswith("{"):
        document = json.loads(text)
        if "keys" in document:
            return list(jwt.PyJWKSet.from_dict(document).keys)
        return [jwt.PyJWK.from_dict(document)]
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(text.encode())
    algorithm = "EdDSA" if type(key).__name__.startswith("Ed") else "RS256"
    return [jwt.PyJWK.from_dict(json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(key)), algorithm=algorithm)]


_verifiers: dict[int, tuple[ServiceSettings, TokenVerifier]] = {}


def verifier_for(settings: ServiceSettings) -> TokenVerifier:
    entry = _verifiers.get(id(settings))
    if entry is None or entry[0] is not settings:
        entry = (settings, TokenVerifier(settings))
        _verifiers[id(settings)] = entry
    return entry[1]


def principal_from_header(settings: ServiceSettings, authorization: str | None) -> Principal | None:
    """None when no bearer token was sent; a 401 problem when one was sent and is not valid."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("expected a bearer token")
    return verifier_for(settings).verify(token)


def require_roles(settings: ServiceSettings, authorization: str | None, *roles: str) -> Principal:
    principal = principal_from_header(settings, authorization)
    if principal is None:
        raise _unauthorized("a bearer token is required")
    if not principal.has_role(*roles):
        raise Problem(403, "Forbidden", f"requires one of the roles: {', '.join(roles)}", type="forbidden")
    return principal


def check_service_credential(accepted: Iterable[SecretStr], authorization: str | None) -> None:
    """A service-to-service call must present one of the credentials issued to its callers."""
    sent = (authorization or "").encode()
    # compare against every credential, so the time taken does not tell which one nearly matched
    matches = [hmac.compare_digest(sent, ("Bearer " + c.get_secret_value()).encode()) for c in accepted]
    if not any(matches):
        raise _unauthorized("internal API requires a service credential")
