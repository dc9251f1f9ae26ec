"""Every service's OpenAPI, fuzzed in-process: no input gives a 5xx, and every error is a problem document.

Schemathesis generates requests from each app's own schema, both valid ones and ones that break it, anonymous
and with a staff token holding every role (so the admin models are fuzzed too). Each app is built by
create_app on a fresh database and runs its lifespan (broker, consumers, relay) as in production. The run is
bounded in examples and, by default, derandomized (schemathesis still draws a few values from `random`); every
failure is reported with a curl command that repeats it. HANDSHAKE_FUZZ_SEED=<n> explores other inputs,
HANDSHAKE_FUZZ_EXAMPLES=<n> changes the examples per operation and generation mode."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from handshake_devstack.testing.fixtures import isolated_kafka_settings
from handshake_devstack.tokens import issue_token
from handshake_shared.settings import ServiceSettings

# schemathesis's own strategies draw from `random`; nothing for this suite to act on
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

EXAMPLES = int(os.environ.get("HANDSHAKE_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("HANDSHAKE_FUZZ_SEED")
PROBLEM = "application/problem+json"
# small limits keep the oversize probes cheap; the webhook route's own, larger limit is probed too
BODY_LIMIT = 16_384
WEBHOOK_BODY_LIMIT = 32_768


def order_app(stack: Any, database: Callable[[str], str]) -> tuple[Any, ServiceSettings]:
    from handshake_order.app import create_app
    from handshake_order.settings import OrderSettings

    s = OrderSettings(
        database_url=database("handshake_order"), http_max_body_bytes=BODY_LIMIT, **isolated_kafka_settings(stack)
    )
    return create_app(s), s


def inventory_app(stack: Any, database: Callable[[str], str]) -> tuple[Any, ServiceSettings]:
    from handshake_inventory.app import create_app
    from handshake_inventory.settings import InventorySettings

    s = InventorySettings(
        database_url=database("handshake_inventory"), http_max_body_bytes=BODY_LIMIT, **isolated_kafka_settings(stack)
    )
    return create_app(s), s


def payment_app(stack: Any, database: Callable[[str], str]) -> tuple[Any, ServiceSettings]:
    from handshake_payment.app import create_app
    from handshake_payment.settings import PaymentSettings

    s = PaymentSettings(
        database_url=database("handshake_payment"),
        http_max_body_bytes=BODY_LIMIT,
        stripe_api_key=stack.stripe.api_key,
        stripe_api_base=stack.stripe.api_base,
        stripe_timeout_seconds=5.0,
        stripe_webhook_secrets=["whsec_" + secrets.token_hex(24)],
        reconciliation_interval_seconds=0,
        **isolated_kafka_settings(stack),
    )
    return create_app(s), s


def webhook_ingest_app(stack: Any, database: Callable[[str], str]) -> tuple[Any, ServiceSettings]:
    from handshake_webhook_ingest.app import create_app
    from handshake_webhook_ingest.settings import WebhookIngestSettings

    s = WebhookIngestSettings(
        database_url=database("handshake_webhook_ingest"),
        http_max_body_bytes=BODY_LIMIT,
        webhook_max_body_bytes=WEBHOOK_BODY_LIMIT,
        stripe_webhook_secrets=["whsec_" + secrets.token_hex(24)],
        **isolated_kafka_settings(stack),
    )
    return create_app(s), s


SERVICES = {
    "order": order_app,
    "inventory": inventory_app,
    "payment": payment_app,
    "webhook-ingest": webhook_ingest_app,
}


@pytest.fixture
def lifespans() -> Iterator[None]:
    """Schemathesis runs each app's lifespan on its own event loop thread; stopped when the test ends."""
    yield
    asgi.shutdown_lifespans()


def failure_of(response: Any) -> str | None:
    if response.status_code >= 500:
        return "server error"
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type != PROBLEM:
        return f"error answered as {content_type or 'no content type'}, not {PROBLEM}"
    return None


def with_staff_token(case: schemathesis.Case, token: str) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {token}"
    case.headers = headers


def fuzz_operation(operation: Any, client: Any, token: str, statuses: Counter[int | str], failures: list[str]) -> None:
    # admin routes mostly as staff, to reach their models; the rest as often anonymous (or with a generated
    # token) as with the staff token
    staff_draws = st.sampled_from([True, True, True, False]) if "/admin/" in operation.path else st.booleans()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=SEED is None,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode), as_staff=staff_draws)
        def run(case: schemathesis.Case, as_staff: bool) -> None:
            if as_staff:
                with_staff_token(case, token)
            # collected, not raised: one run reports every failing operation instead of shrinking one
            name = f"{operation.method.upper()} {operation.path} ({mode.value})"  # noqa: B023 - run() is called in this iteration
            try:
                response = case.call(session=client)
            except Exception as exc:  # raised past every handler: what a server answers with a bare 500
                statuses[500] += 1
                failures.append(f"{name}: raised {type(exc).__name__}: {str(exc)[:300]}\n  {case.as_curl_command()}")
                return
            statuses[response.status_code] += 1
            if "/admin/" in operation.path and response.status_code < 300:
                statuses["admin accepted"] += 1
            if (problem := failure_of(response)) is not None:
                failures.append(
                    f"{name}: {response.status_code} {problem}\n  {case.as_curl_command()}\n"
                    f"  {response.content[:300]!r}"
                )

        if SEED is not None:
            run = seed(int(SEED))(run)
        # Unsatisfiable: nothing in this mode can be generated for the operation (e.g. no parameters to break)
        with contextlib.suppress(Unsatisfiable):
            run()


def oversize_probes(schema: Any, client: Any, limit: int, routes: dict[str, int]) -> list[str]:
    """Every operation refuses a body one byte over its limit with a 413 problem, declared and chunked; a route
    with a larger limit of its own takes a body over the service's limit."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        method, path = operation.method.upper(), re.sub(r"\{[^}]+\}", "x", operation.path)
        size = routes.get(operation.path, limit) + 1
        body = b" " * size
        for how, data in (("declared", body), ("chunked", (body[i : i + 4096] for i in range(0, size, 4096)))):
            r = client.request(method, path, data=data, headers={"Content-Type": "application/json"})
            if r.status_code != 413 or r.headers.get("content-type") != PROBLEM:
                failures.append(f"{method} {path} {how} {size} bytes: {r.status_code} {r.text[:200]}")
        if operation.path in routes:
            r = client.request(method, path, data=b" " * (limit + 1), headers={"Content-Type": "application/json"})
            if r.status_code == 413:
                failures.append(
                    f"{method} {path} refused {limit + 1} bytes, under its own limit of {routes[operation.path]}"
                )
    return failures


@pytest.mark.parametrize("service", list(SERVICES))
def test_no_input_gets_a_server_error_and_every_error_is_a_problem(
    service: str, stack: Any, fresh_database: Callable[[str], str], lifespans: None
) -> None:
    app, service_settings = SERVICES[service](stack, fresh_database)
    token = issue_token(service_settings, "fuzz-staff", ["admin", "support", "finance"])
    started = time.monotonic()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    statuses: Counter[int | str] = Counter()
    failures: list[str] = []
    with asgi.get_client(app) as client:
        for result in schema.get_all_operations():
            fuzz_operation(result.ok(), client, token, statuses, failures)
        routes = {"/webhooks/stripe": WEBHOOK_BODY_LIMIT} if service == "webhook-ingest" else {}
        oversize = oversize_probes(schema, client, BODY_LIMIT, routes)
    admin_accepted = statuses.pop("admin accepted", 0)
    histogram = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    print(
        f"\n{service}: {sum(statuses.values())} requests in {time.monotonic() - started:.1f} s ({histogram}; "
        f"{admin_accepted} admin requests accepted)"
    )
    assert not failures, f"{len(failures)} failing requests:\n" + "\n".join(failures[:25])
    assert not oversize, "\n".join(oversize)
    # the staff token took the fuzzer past authentication into the admin models
    assert admin_accepted > 0
