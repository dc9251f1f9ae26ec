"""Sign-in with OpenID Connect: authorization code flow with PKCE (S256), state and nonce, against the issuer
named by HANDSHAKE_CONSOLE_OIDC_ISSUER and described by its discovery document.

Two tokens come back. The ID token says who signed in to the console (issuer = the OIDC issuer, audience =
the console's client id, our nonce). The access token is what the services accept (issuer and audience
HANDSHAKE_JWT_*), carrying the staff member's roles; the console verifies it with the issuer's keys before it
keeps it, and forwards it unchanged: every service call is made as that person, never as the console."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from handshake_console.settings import ConsoleSettings

# discovery and keys are asked again after this long (key rotation at the issuer)
CACHE_SECONDS = 600
# the sign-in handshake (from the redirect to the issuer until the callback) must finish within this
LOGIN_MAX_AGE_SECONDS = 600


class SignInFailed(Exception):
    """The sign-in cannot complete; the message is safe to show."""


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None


@dataclass(frozen=True)
class Identity:
    subject: str
    name: str
    roles: list[str]
    access_token: str
    expires_at: int


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class OidcClient:
    def __init__(self, settings: ConsoleSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._discovery: tuple[float, Discovery] | None = None
        self._keys: tuple[float, dict[str | None, Any]] | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.console_oidc_issuer and self.settings.console_oidc_client_id)

    async def discovery(self) -> Discovery:
        if self._discovery and time.monotonic() - self._discovery[0] < CACHE_SECONDS:
            return self._discovery[1]
        issuer = (self.settings.console_oidc_issuer or "").rstrip("/")
        document = await self._get_json(issuer + "/.well-known/openid-configuration", "discovery document")
        try:
            found = Discovery(
                issuer=document["issuer"],
                authorization_endpoint=document["authorization_endpoint"],
                token_endpoint=document["token_endpoint"],
                jwks_uri=document["jwks_uri"],
                end_session_endpoint=document.get("end_session_endpoint"),
            )
        except (KeyError, TypeError):
            raise SignInFailed("the identity provider's discovery document is incomplete") from None
        # OIDC Discovery 4.3: the document must name the issuer it was fetched from
        if found.issuer.rstrip("/") != issuer:
            raise SignInFailed("the identity provider's discovery document names another issuer")
        if "S256" not in document.get("code_challenge_methods_supported", ["S256"]):
            raise SignInFailed("the identity provider does not support PKCE with S256")
        self._discovery = (time.monotonic(), found)
        return found

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self.http.get(url, timeout=5.0)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            raise SignInFailed(f"the identity provider's {what} cannot be fetched") from None
        if not isinstance(body, dict):
            raise SignInFailed(f"the identity provider's {what} is not a JSON object")
        return body

    async def _signing_key(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        for refresh in (False, True):
            if refresh or not self._keys or time.monotonic() - self._keys[0] > CACHE_SECONDS:
                document = await self._get_json((await self.discovery()).jwks_uri, "keys")
                keys: dict[str | None, Any] = {}
                for jwk in jwt.PyJWKSet.from_dict(document).keys:
                    keys[jwk.key_id] = jwk.key
                self._keys = (time.monotonic(), keys)
            keys = self._keys[1]
            if kid in keys:
                return keys[kid]
            if kid is None and len(keys) == 1:
                return next(iter(keys.values()))
        raise SignInFailed("the token is signed by a key the identity provider does not publish")

    async def begin(self) -> tuple[str, dict[str, Any]]:
        """The issuer's authorize URL to send the browser to, and what the callback must find again (sealed in
        a short-lived cookie): state, nonce and the PKCE verifier."""
        found = await self.discovery()
        login = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48),
        }
        query = {
            "response_type": "code",
            "client_id": self.settings.console_oidc_client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": self.settings.console_oidc_scopes,
            "state": login["state"],
            "nonce": login["nonce"],
            "code_challenge": pkce_challenge(login["verifier"]),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in found.authorization_endpoint else "?"
        return found.authorization_endpoint + separator + urlencode(query), login

    async def finish(self, *, code: str | None, state: str | None, login: dict[str, Any] | None) -> Identity:
        if login is None:
            raise SignInFailed("the sign-in took too long or was started in another browser; sign in again")
        if not state or not hmac.compare_digest(str(login.get("state", "")).encode(), state.encode()):
            raise SignInFailed("the sign-in answer does not belong to this browser's sign-in (state mismatch)")
        if not code:
            raise SignInFailed("the identity provider sent no authorization code")
        found = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.redirect_uri,
            "client_id": self.settings.console_oidc_client_id or "",
            "code_verifier": str(login.get("verifier", "")),
        }
        auth = httpx.Auth()  # the base class sends no credentials: a public client proves itself by PKCE alone
        if self.settings.console_oidc_client_secret is not None:
            auth = httpx.BasicAuth(form["client_id"], self.settings.console_oidc_client_secret.get_secret_value())
        try:
            response = await self.http.post(found.token_endpoint, data=form, auth=auth, timeout=10.0)
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            raise SignInFailed("the identity provider's token endpoint cannot be reached") from None
        if response.status_code != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SignInFailed(f"the identity provider refused the code ({error or response.status_code})")
        id_token, access_token = answer.get("id_token"), answer.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise SignInFailed("the identity provider answered without an ID token and an access token")
        id_claims = await self._verify(
            id_token, issuer=found.issuer, audience=self.settings.console_oidc_client_id or "", what="ID token"
        )
        if not hmac.compare_digest(str(id_claims.get("nonce", "")).encode(), str(login.get("nonce", "")).encode()):
            raise SignInFailed("the ID token was not issued for this sign-in (nonce mismatch)")
        access = await self._verify(
            access_token, issuer=self.settings.jwt_issuer, audience=self.settings.jwt_audience, what="access token"
        )
        if access["sub"] != id_claims["sub"]:
            raise SignInFailed("the access token names another person than the ID token")
        roles = access.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise SignInFailed("the access token's roles claim is not a list of names")
        name = id_claims.get("name") or id_claims.get("preferred_username") or access["sub"]
        return Identity(
            subject=str(access["sub"]),
            name=str(name),
            roles=roles,
            access_token=access_token,
            expires_at=int(access["exp"]),
        )

    async def _verify(self, token: str, *, issuer: str, audience: str, what: str) -> dict[str, Any]:
        try:
            key = await self._signing_key(token)
            return jwt.decode(
                token,
                key,
                algorithms=list(self.settings.jwt_algorithms),
                audience=audience,
                issuer=issuer,
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"the {what} is not valid: {exc}") from None
