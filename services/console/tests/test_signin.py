"""Sign-in with OIDC code + PKCE against the development issuer, the session cookie it leaves, sign-out."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import pytest

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`

Harness = Any
CONSOLE = "https://console.test"
ISSUER = "http://idp.test"
CLIENT_ID = "handshake-console"


def set_cookie_headers(response) -> list[str]:
    return response.headers.get_list("set-cookie")


async def test_sign_in_round_trip_forwards_the_staff_members_own_token(harness: Harness) -> None:
    authorize = await harness.start_login()
    sent = harness.query_of(authorize)
    assert authorize.startswith(ISSUER + "/authorize?")
    assert sent["response_type"] == "code" and sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == CONSOLE + "/auth/callback"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert len(sent["state"]) >= 32 and len(sent["nonce"]) >= 32 and sent["state"] != sent["nonce"]

    page = await harness.browser.get(await harness.authorize(authorize, "sam"))
    assert page.status_code == 200
    assert "Signed in as Sam." in page.text

    # the order page calls the order service with sam's own token, not a console identity
    order = await harness.page("/orders/0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11")
    assert order.status_code == 200
    calls = harness.recorded.calls
    assert {c["path"] for c in calls} >= {"/v1/admin/orders/0b0e5f8e-4c1a-4d55-9a53-2b7c1f0a9d11"}
    for call in calls:
        claims = jwt.decode(call["authorization"].removeprefix("Bearer "), options={"verify_signature": False})
        assert claims["sub"] == "sam" and claims["roles"] == ["support"] and claims["aud"] == "handshake"


async def test_session_cookie_is_httponly_strict_secure_and_host_bound(harness: Harness) -> None:
    callback = await harness.authorize(await harness.start_login(), "fran")
    response = await harness.browser.get(callback)
    [session_cookie] = [c for c in set_cookie_headers(response) if c.startswith("__Host-hs_console=")]
    attributes = {a.strip().split("=")[0].lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "secure", "path"} <= attributes
    assert "samesite=strict" in session_cookie.lower()
    assert "domain" not in attributes
    # sealed: neither the token nor the name can be read from the cookie
    value = session_cookie.split(";")[0].split("=", 1)[1]
    assert "fran" not in value and "eyJ" not in value
    padded = value + "=" * (-len(value) % 4)
    assert b"fran" not in base64.urlsafe_b64decode(padded)


async def test_a_tampered_state_is_refused_and_leaves_no_session(harness: Harness) -> None:
    callback = await harness.authorize(await harness.start_login(), "ada")
    parts = harness.query_of(callback)
    forged = CONSOLE + "/auth/callback?" + urlencode({**parts, "state": parts["state"][:-2] + "xx"})
    response = await harness.browser.get(forged)
    assert response.status_code == 401
    assert "state mismatch" in response.text
    assert not any(c.startswith("__Host-hs_console=") for c in set_cookie_headers(response))
    assert (await harness.page("/search")).status_code == 303  # still signed out


async def test_a_nonce_other_than_the_console_sent_is_refused(harness: Harness) -> None:
    authorize = await harness.start_login()
    params = harness.query_of(authorize)
    # the issuer is asked for another nonce than the one the console remembers (a replayed ID token)
    swapped = ISSUER + "/authorize?" + urlencode({**params, "nonce": "not-the-nonce-we-sent-" + "x" * 16})
    response = await harness.browser.get(await harness.authorize(swapped, "ada"))
    assert response.status_code == 401
    assert "nonce mismatch" in response.text


async def test_a_code_requested_with_another_pkce_challenge_is_refused(harness: Harness) -> None:
    authorize = await harness.start_login()
    params = harness.query_of(authorize)
    other = base64.urlsafe_b64encode(hashlib.sha256(b"someone else's verifier").digest()).rstrip(b"=").decode()
    swapped = ISSUER + "/authorize?" + urlencode({**params, "code_challenge": other})
    response = await harness.browser.get(await harness.authorize(swapped, "ada"))
    assert response.status_code == 401
    assert "invalid_grant" in response.text


async def test_a_code_is_good_once(harness: Harness) -> None:
    callback = await harness.authorize(await harness.start_login(), "ada")
    assert (await harness.browser.get(callback)).status_code == 200
    # the sign-in cookie went with the first use; even with it the issuer refuses a second exchange
    again = await harness.browser.get(callback)
    assert again.status_code == 401


async def test_the_issuer_never_redirects_to_an_unregistered_address(harness: Harness) -> None:
    authorize = await harness.start_login()
    params = harness.query_of(authorize)
    evil = ISSUER + "/authorize?" + urlencode({**params, "redirect_uri": "https://evil.test/cb", "user": "ada"})
    response = await harness.idp.get(evil)
    assert response.status_code == 400 and "location" not in response.headers


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(harness: Harness) -> None:
    await harness.sign_in("sam")
    refused = await harness.browser.post("/auth/logout", data={"csrf": "wrong"})
    assert refused.status_code == 403
    assert (await harness.page("/search")).status_code == 200
    fields = await harness.form_fields("/search", "/auth/logout")
    response = await harness.browser.post("/auth/logout", data=fields)
    assert response.status_code == 303
    assert (await harness.page("/search")).status_code == 303


async def test_discovery_naming_another_issuer_stops_sign_in(harness: Harness) -> None:
    import httpx

    from handshake_console.app import create_app

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "issuer": "https://attacker.test",
                "authorization_endpoint": "x",
                "token_endpoint": "y",
                "jwks_uri": "z",
            },
        )

    app = create_app(harness.settings(), transport=httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=CONSOLE) as browser:
        response = await browser.get("/auth/login")
    assert response.status_code == 503
    assert "names another issuer" in response.text
    assert urlsplit(response.headers.get("location", "")).netloc == ""
