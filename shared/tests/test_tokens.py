"""Bearer tokens are verified with public keys only; one leaked service configuration cannot mint them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from handshake_devstack.tokens import DevTokenIssuer
from handshake_shared.auth import TokenVerifier, principal_from_header, require_roles
from handshake_shared.http import Problem
from handshake_shared.settings import ServiceSettings

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(claims: dict[str, object], alg: str, key: bytes) -> str:
    """A token built by hand, as an attacker would (PyJWT itself refuses to make these)."""
    signing_input = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return signing_input + "." + b64(signature)


def settings_for(issuer: DevTokenIssuer, **overrides: object) -> ServiceSettings:
    return ServiceSettings(environment="test", **{**issuer.settings(), "jwt_jwks_url": None, **overrides})


def status_of(settings: ServiceSettings, token: str) -> int:
    try:
        principal_from_header(settings, f"Bearer {token}")
    except Problem as problem:
        return problem.status
    return 200


def test_a_token_of_the_trusted_issuer_names_its_subject_and_roles() -> None:
    issuer = DevTokenIssuer()
    settings = settings_for(issuer)
    principal = require_roles(settings, "Bearer " + issuer.issue("agent-7", ["support"]), "support")
    assert (principal.subject, principal.roles) == ("agent-7", frozenset({"support"}))
    with pytest.raises(Problem) as refused:
        require_roles(settings, "Bearer " + issuer.issue("cus-1", []), "support")
    assert refused.value.status == 403


def test_tokens_signed_by_anyone_else_or_with_a_shared_secret_are_refused() -> None:
    trusted, other = DevTokenIssuer(), DevTokenIssuer()
    settings = settings_for(trusted)
    now = int(time.time())
    claims = {
        "sub": "ops",
        "roles": ["admin"],
        "iss": trusted.issuer,
        "aud": trusted.audience,
        "iat": now,
        "exp": now + 60,
    }

    assert status_of(settings, other.issue("ops", ["admin"])) == 401
    # HS256 with the public key as the "secret" (algorithm confusion) and an unsigned token
    assert status_of(settings, hand_made(claims, "HS256", trusted.public_pem.encode())) == 401
    assert status_of(settings, hand_made(claims, "none", b"")) == 401
    assert status_of(settings, "not-a-jwt") == 401


def test_expiry_issuer_audience_and_lifetime_are_enforced() -> None:
    issuer = DevTokenIssuer()
    settings = settings_for(issuer, jwt_max_lifetime_seconds=3600)
    assert status_of(settings, issuer.issue("a", ttl_seconds=3600)) == 200
    assert status_of(settings, issuer.issue("a", ttl_seconds=-120)) == 401  # expired (beyond the leeway)
    # a ten-year token is refused although it is validly signed and not expired
    assert status_of(settings, issuer.issue("a", ttl_seconds=10 * 365 * 86400)) == 401
    # back-dating iat does not buy a longer life: exp is measured from now as well
    now = int(time.time())
    assert status_of(settings, issuer.issue("a", iat=now + 7 * 86400 - 3600, exp=now + 7 * 86400)) == 401
    assert status_of(settings, issuer.issue("a", iss="someone-else")) == 401
    assert status_of(settings, issuer.issue("a", aud="another-api")) == 401


def test_rs256_keys_from_a_jwks_file_and_from_a_jwks_url(tmp_path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(private.public_key()))
    jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    now = int(time.time())
    claims = {
        "sub": "fin-1",
        "roles": ["finance"],
        "iss": "https://id.example",
        "aud": "handshake",
        "iat": now,
        "exp": now + 300,
    }
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    unknown_kid = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k2"})

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    from_file = ServiceSettings(
        environment="test", jwt_public_key=None, jwt_public_key_file=str(path), jwt_issuer="https://id.example"
    )
    assert TokenVerifier(from_file).verify(token).roles == {"finance"}
    assert status_of(from_file, unknown_kid) == 401

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
        from_url = ServiceSettings(
            environment="test", jwt_public_key=None, jwt_jwks_url=url, jwt_issuer="https://id.example"
        )
        assert TokenVerifier(from_url).verify(token).subject == "fin-1"
        assert status_of(from_url, unknown_kid) == 401
    finally:
        server.shutdown()

    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    from_pem = ServiceSettings(environment="test", jwt_public_key=pem.decode(), jwt_issuer="https://id.example")
    assert TokenVerifier(from_pem).verify(token).subject == "fin-1"


def test_only_asymmetric_algorithms_can_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        ServiceSettings(environment="test", jwt_algorithms="HS256")
