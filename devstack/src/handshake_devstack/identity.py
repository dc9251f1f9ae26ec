"""Development stand-in for the staff identity provider: a small OpenID Connect issuer (discovery, JWKS,
authorize, token) signing with the development key of tokens.DEV_ISSUER, so the tokens it hands out are the ones
the services already trust. The console signs in against it exactly as against a real provider; only the
login screen differs: it lists three development users instead of asking for a password.

It runs inside the process that started the services (the key is made fresh per process), on a thread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from handshake_devstack.tokens import DEV_ISSUER, DevTokenIssuer


@dataclass(frozen=True)
class DevUser:
    subject: str
    name: str
    roles: tuple[str, ...]


DEV_USERS: tuple[DevUser, ...] = (
    DevUser("sam", "Sam", ("support",)),
    DevUser("fran", "Fran", ("finance",)),
    DevUser("ada", "Ada", ("admin",)),
)

CODE_TTL_SECONDS = 60
ACCESS_TOKEN_TTL_SECONDS = 3600


@dataclass
class _Grant:
    user: DevUser
    client_id: str
    redirect_uri: str
    nonce: str | None
    challenge: str
    expires: float


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def create_identity_app(
    issuer_url: str,
    clients: dict[str, list[str]],
    *,
    tokens: DevTokenIssuer = DEV_ISSUER,
    users: tuple[DevUser, ...] = DEV_USERS,
) -> FastAPI:
    """`clients`: client id -> the redirect URIs registered for it (exact match, as OAuth 2.1 asks)."""
    issuer_url = issuer_url.rstrip("/")
    app = FastAPI(title="Handshake development identity provider", docs_url=None, redoc_url=None, openapi_url=None)
    grants: dict[str, _Grant] = {}
    by_subject = {u.subject: u for u in users}

    def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
        return JSONResponse(
            {"error": error, "error_description": description},
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": issuer_url,
            "authorization_endpoint": issuer_url + "/authorize",
            "token_endpoint": issuer_url + "/token",
            "jwks_uri": issuer_url + "/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "profile"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        public = serialization.load_pem_public_key(tokens.public_pem.encode())
        key = json.loads(jwt.get_algorithm_by_name("EdDSA").to_jwk(public))
        return {"keys": [{**key, "kid": tokens.key_id, "use": "sig", "alg": "EdDSA"}]}

    @app.get("/authorize")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
        # never redirect to an address the client did not register: show the error here instead
        if redirect_uri not in clients.get(client_id, []):
            return HTMLResponse("<p>Unknown client or redirect URI.</p>", status_code=400)

        def back(**params: str) -> RedirectResponse:
            return RedirectResponse(
                redirect_uri + "?" + urlencode({**params, "state": q.get("state", "")}), status_code=303
            )

        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        if "openid" not in q.get("scope", "").split():
            return back(error="invalid_scope")
        chosen = by_subject.get(q.get("user", ""))
        if chosen is None:
            rows = "".join(
                f'<li><a href="/authorize?{html.escape(urlencode({**dict(q), "user": u.subject}))}">'
                f"{html.escape(u.name)}</a> <small>roles: {html.escape(', '.join(u.roles))}</small></li>"
                for u in users
            )
            return HTMLResponse(
                f"<!doctype html><title>Sign in (development)</title><h1>Sign in as</h1><ul>{rows}</ul>"
                "<p>Development identity provider: no passwords.</p>"
            )
        code = secrets.token_urlsafe(32)
        grants[code] = _Grant(
            chosen, client_id, redirect_uri, q.get("nonce"), q["code_challenge"], time.monotonic() + CODE_TTL_SECONDS
        )
        return back(code=code)

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        if form.get("grant_type") != "authorization_code":
            return oauth_error("unsupported_grant_type", "only authorization_code")
        # a code is good once: taken out whatever happens next
        grant = grants.pop(form.get("code", ""), None)
        if grant is None or grant.expires < time.monotonic():
            return oauth_error("invalid_grant", "unknown, used or expired code")
        if form.get("client_id") != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
            return oauth_error("invalid_grant", "client or redirect URI differs from the authorization request")
        if not hmac.compare_digest(_s256(form.get("code_verifier", "")), grant.challenge):
            return oauth_error("invalid_grant", "PKCE verification failed")
        user = grant.user
        access = tokens.issue(user.subject, list(user.roles), ACCESS_TOKEN_TTL_SECONDS, name=user.name)
        id_claims: dict[str, Any] = {
            "iss": issuer_url,
            "aud": grant.client_id,
            "name": user.name,
            "preferred_username": user.subject,
        }
        if grant.nonce:
            id_claims["nonce"] = grant.nonce
        id_token = tokens.issue(user.subject, list(user.roles), ACCESS_TOKEN_TTL_SECONDS, **id_claims)
        return JSONResponse(
            {
                "access_token": access,
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_TTL_SECONDS,
            },
            headers={"Cache-Control": "no-store"},
        )

    return app


class IdentityServer:
    """The development issuer on a thread of this process, on 127.0.0.1:port."""

    def __init__(self, port: int, clients: dict[str, list[str]]) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.app = create_identity_app(self.url, clients)
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
        )
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        # off the main thread uvicorn leaves signal handling to the supervisor
        self._thread = threading.Thread(target=self._server.run, name="dev-identity", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"development identity provider did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
