"""The Kubernetes manifests (deploy/kubernetes) say what the design says: rendered by kustomize, valid for
the API server and the operators' schemas, passed by checkov, and checked here for the facts that keep
money and customers safe: locked-down pods, secrets only by reference, Kafka ACLs exactly as the topic
table, only the public paths routed, default-deny networking, autoscalers that cannot fight; and the operations console
as the fifth deployable, reached only through a staff gateway of its own, only on its pages, and reaching only
the services' public port and its identity provider.

kubectl (for `kubectl kustomize`) and the validators come from PyPI into a venv of their own (manifests_tools.py)."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from deploy.tests.manifests_tools import (
    KUSTOMIZE_ROOT,
    PROJECT_ROOT,
    checkov,
    kustomize,
    render_and_validate,
    tools_venv,
)
from handshake_shared.events.topics import ALL_TOPICS, SAGA_TOPICS, dlq_topic

SERVICES = ("order", "payment", "inventory", "webhook-ingest")
# the fifth deployable: no database, no Kafka principal, no migration Job
CONSOLE = "console"
DEPLOYABLES = (*SERVICES, CONSOLE)
OVERLAYS = ("dev", "production")
PUBLIC_GATEWAY, STAFF_GATEWAY = "handshake", "handshake-staff"

# The contract's topic table: producer, and each consumer with its consumer group id.
TOPIC_TABLE: dict[str, tuple[str, dict[str, str]]] = {
    "order.events.v1": ("order", {"inventory": "inventory.order-events", "payment": "payment.order-events"}),
    "inventory.events.v1": ("inventory", {"order": "order.inventory-events"}),
    "payment.events.v1": ("payment", {"order": "order.payment-events"}),
    "provider.events.v1": ("webhook-ingest", {"payment": "payment.provider-events"}),
}

# The only order paths a client may reach, with their one method (contract, "Processes and ports").
ORDER_CUSTOMER_API = {
    ("GET", "/v1/products"),
    ("POST", "/v1/quotes"),
    ("POST", "/v1/checkout"),
    ("GET", "/v1/orders/{id}"),
    ("GET", "/v1/orders/{id}/payment-session"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("POST", "/v1/orders/{id}/payment-attempts"),
}
NEVER_ROUTED = ("/v1/admin", "/internal", "/metrics", "/healthz", "/readyz")
PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
# no egress to an outside address may open onto these: the cluster, the VPC, cloud metadata, loopback
NOT_OUTSIDE = [ipaddress.ip_network(n) for n in (*PRIVATE_RANGES, "100.64.0.0/10", "127.0.0.0/8", "0.0.0.0/8")]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# checkov findings skipped on purpose; each skip carries its reason in the object's annotation
ALLOWED_CHECKOV_SKIPS = {"CKV_K8S_11", "CKV_K8S_35"}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def venv() -> Path:
    return tools_venv()


@pytest.fixture(scope="module")
def report(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # the subscribing team's template is a component no overlay includes: render it on production
    with_subscriber = tmp_path_factory.mktemp("subscriber")
    # (kustomize takes only relative paths)
    production = os.path.relpath(KUSTOMIZE_ROOT / "overlays" / "production", with_subscriber)
    component = os.path.relpath(KUSTOMIZE_ROOT / "components" / "subscriber-team", with_subscriber)
    (with_subscriber / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {production}\ncomponents:\n  - {component}\n"
    )
    targets = {name: KUSTOMIZE_ROOT / "overlays" / name for name in OVERLAYS}
    return render_and_validate(venv, {**targets, "production+subscriber-team": with_subscriber})


@pytest.fixture(scope="module")
def checkov_report(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rendered = tmp_path_factory.mktemp("checkov") / "production.yaml"
    rendered.write_text(kustomize(venv, KUSTOMIZE_ROOT / "overlays" / "production"))
    return checkov(venv, rendered)


def objects(report: dict[str, Any], overlay: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in report[overlay]["objects"] if kind is None or o["kind"] == kind]


def one(report: dict[str, Any], overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(report, overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(report: dict[str, Any], overlay: str) -> Iterator[dict[str, Any]]:
    yield from (o for o in report[overlay]["objects"] if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels/matchExpressions(In, Exists) against a pod's labels; {} selects everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def policies_for(report: dict[str, Any], overlay: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in objects(report, overlay, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def server_labels(service: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/part-of": "handshake",
    }


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("overlay", [*OVERLAYS, "production+subscriber-team"])
def test_every_rendered_object_validates(report: dict[str, Any], overlay: str) -> None:
    checks = report[overlay]["checks"]
    assert len(checks) == len(report[overlay]["objects"]) > 50
    unchecked = [c["object"] for c in checks if c["validator"] == "none"]
    assert not unchecked, f"objects no schema knows: {unchecked}"
    failures = {c["object"]: c["errors"] for c in checks if c["errors"]}
    assert not failures, failures
    core = sum(c["validator"] == "kubernetes-validate" for c in checks)
    assert 0 < core < len(checks)  # both validators were exercised


def test_crd_schema_copy_holds_exactly_the_schemas_in_use(report: dict[str, Any]) -> None:
    used = {c["validator"] for r in report.values() for c in r["checks"] if c["validator"].endswith(".json")}
    schemas = KUSTOMIZE_ROOT / "crd-schemas"
    present = {str(p.relative_to(schemas)) for p in schemas.rglob("*.json")}
    assert present == used
    assert (schemas / "LICENSE").read_text().startswith("MIT License")
    readme = (schemas / "README.md").read_text()
    assert "datreeio/CRDs-catalog" in readme and "7b1e26ef9deea49293714d204c1a2270aab1178f" in readme


def test_checkov_passes_production_with_every_skip_explained(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    results = checkov_report["results"]
    failed = [(f["check_id"], f["resource"]) for f in results["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 500
    skipped = results.get("skipped_checks", [])
    assert {s["check_id"] for s in skipped} <= ALLOWED_CHECKOV_SKIPS
    unexplained = [s["check_id"] for s in skipped if len(s["check_result"].get("suppress_comment") or "") < 30]
    assert not unexplained, f"skips without a reason: {unexplained}"


# ------------------------------------------------------------------------------------------------ pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(report: dict[str, Any], overlay: str) -> None:
    seen = 0
    for w in workloads(report, overlay):
        spec = w["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        name = f"{w['kind']}/{w['metadata']['name']}"
        assert spec.get("automountServiceAccountToken") is False, name
        assert pod_sc.get("fsGroup") == 10001, name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            effective = {**pod_sc, **sc}
            assert effective.get("runAsNonRoot") is True, name
            assert effective.get("runAsUser") == 10001 and effective.get("runAsGroup") == 10001, name
            assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("privileged", False) is False, name
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), name
            assert not sc.get("capabilities", {}).get("add"), name
            assert "memory" in c.get("resources", {}).get("limits", {}), name
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get("requests", {})), name
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp must be an emptyDir"
            seen += 1
    assert seen == 2 * len(SERVICES) + 1  # a Deployment and a migration Job per service, the console's Deployment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_have_probes_settings_pdb_and_network_policy(report: dict[str, Any], overlay: str) -> None:
    deployments = objects(report, overlay, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(DEPLOYABLES)
    pdbs = objects(report, overlay, "PodDisruptionBudget")
    for d in deployments:
        name, c, labels = d["metadata"]["name"], container(d), pod_labels(d)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == 8080
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path and ports.get(get["port"], get["port"]) == 8080, (name, probe)
        env = env_of(c)
        for var, value in (
            ("HANDSHAKE_ENVIRONMENT", "production"),
            ("HANDSHAKE_HTTP_HOST", "0.0.0.0"),
            ("HANDSHAKE_HTTP_PORT", "8080"),
            ("HANDSHAKE_MIGRATE_ON_START", "false"),
        ):
            if name == CONSOLE and var == "HANDSHAKE_MIGRATE_ON_START":
                continue  # it has no database to migrate
            assert env[var].get("value") == value, (name, var)
        assert c["args"] == ["serve"]
        assert d["spec"]["template"]["spec"].get("topologySpreadConstraints"), name
        covering = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{name}: {len(covering)} PDBs"
        # maxUnavailable keeps a one-replica environment drainable
        assert covering[0]["spec"].get("maxUnavailable") == 1
        own = [p for p in policies_for(report, overlay, labels) if p["spec"]["podSelector"]]
        assert own, f"{name}: no NetworkPolicy of its own"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_migration_job_per_service_runs_migrate_with_the_same_image(report: dict[str, Any], overlay: str) -> None:
    jobs = {j["metadata"]["name"]: j for j in objects(report, overlay, "Job")}
    for service in SERVICES:
        job = jobs[f"{service}-migrate"]
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["migrate"]
        assert c["image"] == container(one(report, overlay, "Deployment", service))["image"]
        database_url = env_of(c)["HANDSHAKE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert database_url == {"name": f"{service}-db-app", "key": "uri"}
        assert policies_for(report, overlay, pod_labels(job)), f"{service}-migrate has no NetworkPolicy"
        # never selected by the Deployment, the PDB or the Service
        assert not selects(one(report, overlay, "Deployment", service)["spec"]["selector"], pod_labels(job))
    # the console owns no database and no topic: nothing to migrate, no credential for either
    assert f"{CONSOLE}-migrate" not in jobs
    env = env_of(container(one(report, overlay, "Deployment", CONSOLE)))
    assert not [v for v in env if v.startswith(("HANDSHAKE_DATABASE", "HANDSHAKE_KAFKA"))]
    assert not [
        e
        for e in container(one(report, overlay, "Deployment", CONSOLE)).get("envFrom", [])
        if e.get("configMapRef", {}).get("name", "").startswith("handshake-runtime")
    ]  # Kafka settings


def test_production_runs_at_least_two_replicas(report: dict[str, Any]) -> None:
    for d in objects(report, "production", "Deployment"):
        assert d["spec"]["replicas"] >= 2, d["metadata"]["name"]
    for so in objects(report, "production", "ScaledObject"):
        assert so["spec"]["minReplicaCount"] >= 2
    for hpa in objects(report, "production", "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 2


def test_dev_runs_one_replica_that_can_be_drained(report: dict[str, Any]) -> None:
    for d in objects(report, "dev", "Deployment"):
        assert d["spec"]["replicas"] == 1
    assert not objects(report, "dev", "ScaledObject") and not objects(report, "dev", "HorizontalPodAutoscaler")


# --------------------------------------------------------------------------------------------- secrets


def secret_settings(service: str) -> tuple[set[str], set[str]]:
    """(every HANDSHAKE_ variable the service treats as a secret, those it cannot start without)."""
    from handshake_console.settings import ConsoleSettings
    from handshake_inventory.settings import InventorySettings
    from handshake_order.settings import OrderSettings
    from handshake_payment.settings import PaymentSettings
    from handshake_webhook_ingest.settings import WebhookIngestSettings

    cls = {
        "order": OrderSettings,
        "payment": PaymentSettings,
        "inventory": InventorySettings,
        "webhook-ingest": WebhookIngestSettings,
        CONSOLE: ConsoleSettings,
    }[service]
    secret = set()
    for field, info in cls.model_fields.items():
        if "SecretStr" in repr(info.annotation) or SecretStr in typing.get_args(info.annotation):
            secret.add(f"HANDSHAKE_{field.upper()}")
    if service == CONSOLE:
        # it refuses to start without session secrets; it is deployed as a confidential OIDC client
        return secret, {"HANDSHAKE_CONSOLE_SESSION_SECRETS", "HANDSHAKE_CONSOLE_OIDC_CLIENT_SECRET"}
    required = {f"HANDSHAKE_{n.upper()}" for n in cls.required_secrets}
    # the database credential, and the Kafka password (the manifests use SASL_SSL)
    required |= {"HANDSHAKE_DATABASE_URL", "HANDSHAKE_KAFKA_SASL_PASSWORD"}
    return secret, required


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_secret_references(report: dict[str, Any], overlay: str) -> None:
    assert not objects(report, overlay, "Secret"), "a Secret in git: use an ExternalSecret"
    for cm in objects(report, overlay, "ConfigMap"):
        assert not any("SECRET" in k or "PASSWORD" in k or "TOKEN" in k for k in cm.get("data", {})), cm["metadata"]
    for service in DEPLOYABLES:
        env = env_of(container(one(report, overlay, "Deployment", service)))
        secret, required = secret_settings(service)
        assert secret >= required - {"HANDSHAKE_KAFKA_SASL_PASSWORD"}
        assert required <= set(env), f"{service} lacks {required - set(env)}"
        for var in secret & set(env):
            assert "value" not in env[var] and "secretKeyRef" in env[var].get("valueFrom", {}), (service, var)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_secret_is_made_by_an_operator_or_external_secret(
    report: dict[str, Any], overlay: str
) -> None:
    made = {es["spec"]["target"]["name"] for es in objects(report, overlay, "ExternalSecret")}
    made |= {f"{c['metadata']['name']}-app" for c in objects(report, overlay, "Cluster")}
    made |= {u["metadata"]["name"] for u in objects(report, overlay, "KafkaUser")}
    made |= {f"{k['metadata']['name']}-cluster-ca-cert" for k in objects(report, overlay, "Kafka")}
    referenced = set()
    for w in workloads(report, overlay):
        spec = w["spec"]["template"]["spec"]
        referenced |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for c in spec["containers"]:
            from_env = [e.get("valueFrom", {}) for e in c.get("env", [])]
            refs = [v["secretKeyRef"] for v in from_env if "secretKeyRef" in v]
            referenced |= {r["name"] for r in refs}
    for gw in objects(report, overlay, "Gateway"):
        for listener in gw["spec"]["listeners"]:
            referenced |= {r["name"] for r in listener.get("tls", {}).get("certificateRefs", [])}
    for ta in objects(report, overlay, "TriggerAuthentication"):
        referenced |= {r["name"] for r in ta["spec"].get("secretTargetRef", [])}
    assert referenced and referenced <= made, f"nothing makes {referenced - made}"
    # the contract's external secrets: Stripe key, webhook secrets, JWKS, internal credentials, lookup key
    keys = {d["secretKey"] for es in objects(report, overlay, "ExternalSecret") for d in es["spec"]["data"]}
    assert {
        "stripe-api-key",
        "stripe-webhook-secrets",
        "jwks.json",
        "internal-api-tokens",
        "payment-internal-token",
        "lookup-token-key",
        "session-secrets",
        "oidc-client-secret",
    } <= keys


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_own_database(report: dict[str, Any], overlay: str) -> None:
    clusters = {c["metadata"]["name"]: c for c in objects(report, overlay, "Cluster")}
    assert set(clusters) == {f"{s}-db" for s in SERVICES}
    for service in SERVICES:
        url = env_of(container(one(report, overlay, "Deployment", service)))["HANDSHAKE_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": f"{service}-db-app", "key": "uri"}


# ----------------------------------------------------------------------------------------------- Kafka


def expected_acls() -> dict[str, set[tuple[str, str, str, str]]]:
    """Per service: (resource type, name, pattern, operation) from the topic table and nothing else."""
    acls: dict[str, set[tuple[str, str, str, str]]] = {s: set() for s in SERVICES}
    for topic, (producer, consumers) in TOPIC_TABLE.items():
        acls[producer] |= {("topic", topic, "literal", op) for op in ("Write", "Describe")}
        for consumer in consumers:
            acls[consumer] |= {("topic", topic, "literal", op) for op in ("Read", "Describe")}
            acls[consumer] |= {("topic", dlq_topic(topic), "literal", op) for op in ("Write", "Describe")}
            acls[consumer] |= {("group", f"{consumer}.", "prefix", op) for op in ("Read", "Describe")}
    return acls


def acl_set(user: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    out = set()
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*"
        r = acl["resource"]
        out |= {(r["type"], r["name"], r.get("patternType", "literal"), op) for op in acl["operations"]}
    return out


def test_topic_table_matches_the_code() -> None:
    assert set(TOPIC_TABLE) == set(SAGA_TOPICS)
    assert set(ALL_TOPICS) == set(TOPIC_TABLE) | {dlq_topic(t) for t in TOPIC_TABLE}
    # the consumer groups the services really subscribe with
    in_code = {}
    for app in PROJECT_ROOT.glob("services/*/src/*/app.py"):
        service = app.parents[2].name
        for group in re.findall(r'group="([^"]+)"', app.read_text()):
            in_code[group] = service
    in_table = {group: svc for _, consumers in TOPIC_TABLE.values() for svc, group in consumers.items()}
    assert in_code == in_table
    for group, service in in_table.items():
        assert group.startswith(f"{service}.")  # covered by the service's group prefix ACL


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_has_a_kafkatopic(report: dict[str, Any], overlay: str) -> None:
    topics = {t["spec"]["topicName"]: t for t in objects(report, overlay, "KafkaTopic")}
    assert set(topics) == set(ALL_TOPICS)
    for name, t in topics.items():
        assert int(t["spec"]["config"]["retention.ms"]) >= 7 * 24 * 3600 * 1000, name
        if overlay == "production":
            assert t["spec"]["replicas"] == 3 and t["spec"]["config"]["min.insync.replicas"] == 2, name
            assert t["spec"]["partitions"] >= 12 or name.endswith(".dlq"), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_users_have_exactly_the_acls_of_the_topic_table(report: dict[str, Any], overlay: str) -> None:
    users = {u["metadata"]["name"]: u for u in objects(report, overlay, "KafkaUser")}
    assert set(users) == set(SERVICES)
    for service, expected in expected_acls().items():
        user = users[service]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert acl_set(user) == expected, service
        env = env_of(container(one(report, overlay, "Deployment", service)))
        assert env["HANDSHAKE_KAFKA_SASL_USERNAME"]["value"] == service
        assert env["HANDSHAKE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": service, "key": "password"}
    kafka = one(report, overlay, "Kafka", "handshake")["spec"]["kafka"]
    assert kafka["authorization"]["type"] == "simple"
    assert kafka["config"]["auto.create.topics.enable"] is False
    listeners = kafka["listeners"]
    only = [(li["port"], li["tls"], li["authentication"]["type"]) for li in listeners]
    assert only == [(9093, True, "scram-sha-512")]


def test_subscribing_team_template_is_read_only_on_the_public_topic(report: dict[str, Any]) -> None:
    overlay = "production+subscriber-team"
    subscribers = [u for u in objects(report, overlay, "KafkaUser") if u["metadata"]["name"] not in SERVICES]
    assert len(subscribers) == 1
    acls = acl_set(subscribers[0])
    assert {op for *_, op in acls} == {"Read", "Describe"}
    assert {(t, n, p) for t, n, p, _ in acls if t == "topic"} == {("topic", "order.events.v1", "literal")}
    groups = {n for t, n, p, _ in acls if t == "group"}
    assert len(groups) == 1 and not any(g.startswith(f"{s}.") for g in groups for s in SERVICES)
    assert all(p == "prefix" for t, _, p, _ in acls if t == "group")


# --------------------------------------------------------------------------------------------- gateway


def route_matches(
    report: dict[str, Any], overlay: str, gateway: str | None = None
) -> dict[str, list[tuple[str, str, str, str, int]]]:
    """Per HTTPRoute (of one Gateway, or all): (method, path type, path, backend, port) for every match of every rule."""
    out = {}
    for r in objects(report, overlay, "HTTPRoute"):
        if gateway is not None and gateway not in {p["name"] for p in r["spec"]["parentRefs"]}:
            continue
        rows = []
        for rule in r["spec"]["rules"]:
            backends = [(b["name"], b["port"]) for b in rule["backendRefs"]]
            assert len(backends) == 1
            for m in rule["matches"]:
                rows.append((m.get("method", "*"), m["path"]["type"], m["path"]["value"], *backends[0]))
        out[r["metadata"]["name"]] = rows
    return out


def path_matches(kind: str, value: str, path: str) -> bool:
    if kind == "Exact":
        return path == value
    if kind == "PathPrefix":
        return path == value or path.startswith(value.rstrip("/") + "/")
    return re.fullmatch(value, path) is not None  # Envoy's RE2 path match is a full match


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_public_paths_are_routed(report: dict[str, Any], overlay: str) -> None:
    routes = route_matches(report, overlay, PUBLIC_GATEWAY)
    assert set(routes) == {"stripe-webhooks", "order-customer-api"}
    assert routes["stripe-webhooks"] == [("POST", "Exact", "/webhooks/stripe", "webhook-ingest", 8080)]
    order = routes["order-customer-api"]
    assert {backend for *_, backend, _ in order} == {"order"} and {port for *_, port in order} == {8080}
    samples = {p: p.replace("{id}", "0b7c3f4e-8f1a-4a55-9d7e-2b1c9a7f5e10") for _, p in ORDER_CUSTOMER_API}
    allowed = {(m, samples[p]) for m, p in ORDER_CUSTOMER_API}
    for method, kind, value, *_ in order:
        assert kind in ("Exact", "RegularExpression") and method != "*"
        assert any(m == method and path_matches(kind, value, s) for m, s in allowed), (method, value)
    for m, s in allowed:
        assert any(method == m and path_matches(kind, value, s) for method, kind, value, *_ in order), (m, s)
    forbidden = [f"{p}{suffix}" for p in NEVER_ROUTED for suffix in ("", "/", "/x", "/v1/refunds")]
    forbidden += [
        "/v1/orders/x/refunds",
        "/v1/orders/x/y/cancel",
        "/v1/orders/",
        "/v1/admin/orders/x",
        "/v1/orders/x/../../internal/v1/x",
    ]
    for rows in route_matches(report, overlay).values():  # the staff gateway's routes too
        for _, kind, value, *_ in rows:
            assert not any(value.startswith(p) for p in NEVER_ROUTED)
            hits = [p for p in forbidden if path_matches(kind, value, p)]
            assert not hits, (value, hits)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_terminates_tls_and_applies_the_contract_limits(report: dict[str, Any], overlay: str) -> None:
    for name in (PUBLIC_GATEWAY, STAFF_GATEWAY):
        gateway = one(report, overlay, "Gateway", name)
        assert [(li["protocol"], li["tls"]["mode"]) for li in gateway["spec"]["listeners"]] == [("HTTPS", "Terminate")]
    units = {"Ki": 1024, "Mi": 1024 * 1024}
    limits = {}
    for policy in objects(report, overlay, "BackendTrafficPolicy"):
        (target,) = policy["spec"]["targetRefs"]
        size = str(policy["spec"]["requestBuffer"]["limit"])
        number, unit = re.fullmatch(r"(\d+)(Ki|Mi)?", size).groups()
        (rule,) = policy["spec"]["rateLimit"]["local"]["rules"]
        assert policy["spec"]["rateLimit"]["type"] == "Local" and "clientSelectors" not in rule
        size_bytes = int(number) * units.get(unit or "", 1)
        limits[target["name"]] = (size_bytes, rule["limit"]["requests"], rule["limit"]["unit"])
    console = limits.pop("console")
    assert limits == {"stripe-webhooks": (1048576, 100, "Second"), "order-customer-api": (65536, 200, "Second")}
    # the nginx edge the end-to-end test runs carries the very same numbers
    assert limits == nginx_limits()
    # the console's forms: the body it refuses itself is refused before it reaches it
    from handshake_console.app import MAX_FORM_BYTES

    assert console[0] == MAX_FORM_BYTES and console[1:] == (50, "Second")
    # one client-side policy for both edges: TLS floor, path normalisation, no trusted client request ids
    (client,) = objects(report, overlay, "ClientTrafficPolicy")
    assert client["spec"]["tls"]["minVersion"] in ("1.2", "1.3")
    assert {t["name"] for t in client["spec"]["targetRefs"] if t["kind"] == "Gateway"} == {
        PUBLIC_GATEWAY,
        STAFF_GATEWAY,
    }
    assert client["spec"]["path"]["escapedSlashesAction"] == "RejectRequest"


def nginx_limits() -> dict[str, tuple[int, int, str]]:
    """Body size, rate and bucket per route of deploy/gateway/nginx.conf.template, in the policies' terms."""
    text = (Path(__file__).resolve().parents[1] / "gateway" / "nginx.conf.template").read_text()
    rates = {z: int(r) for z, r in re.findall(r"limit_req_zone \S+ zone=(\w+):\S+ rate=(\d+)r/s;", text)}
    units = {"k": 1024, "m": 1024 * 1024}
    routes = {
        "stripe-webhooks": r"location = /webhooks/stripe \{(.*?)\n        \}",
        "order-customer-api": r"location /v1/ \{(.*?)\n        \}",
    }
    out = {}
    for route, pattern in routes.items():
        block = re.search(pattern, text, re.S).group(1)
        number, unit = re.search(r"client_max_body_size (\d+)([km]);", block).groups()
        zone, burst = re.search(r"limit_req zone=(\w+) burst=(\d+) nodelay;", block).groups()
        # a token bucket of N refilled N per second is nginx's rate=N/s with burst=N
        assert int(burst) == rates[zone], route
        out[route] = (int(number) * units[unit], rates[zone], "Second")
    return out


# ----------------------------------------------------------------------------------------------- console


def console_pages() -> set[tuple[str, str]]:
    """(method, path) of every page the console serves, read from its application itself, with a sample for
    each path parameter; its probes and /metrics are for the cluster, not for staff."""
    from handshake_console.app import create_app
    from handshake_console.settings import ConsoleSettings

    pages = set()
    for route in create_app(ConsoleSettings(environment="test")).routes:
        path = getattr(route, "path", "")
        if path in ("/healthz", "/readyz", "/metrics"):
            continue
        sample = re.sub(r"\{[^}]+\}", "0b7c3f4e-8f1a-4a55-9d7e-2b1c9a7f5e10", path)
        pages |= {(m, sample) for m in getattr(route, "methods", None) or () if m != "HEAD"}
    return pages


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_console_is_routed_only_through_the_staff_gateway_and_only_on_its_pages(
    report: dict[str, Any], overlay: str
) -> None:
    public = one(report, overlay, "Gateway", PUBLIC_GATEWAY)
    staff = one(report, overlay, "Gateway", STAFF_GATEWAY)
    (listener,) = staff["spec"]["listeners"]
    assert listener["hostname"] and listener["hostname"] not in {
        li.get("hostname") for li in public["spec"]["listeners"]
    }
    # a Gateway of its own runs on proxies of its own, behind a load balancer that is internal
    ref = staff["spec"]["infrastructure"]["parametersRef"]
    assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
    service = one(report, overlay, "EnvoyProxy", ref["name"])["spec"]["provider"]["kubernetes"]["envoyService"]
    assert service["type"] == "LoadBalancer"
    assert service["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert service["annotations"]["networking.gke.io/load-balancer-type"] == "Internal"
    assert service["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"
    ranges = [ipaddress.ip_network(r) for r in service["loadBalancerSourceRanges"]]
    assert ranges and all(r.is_private for r in ranges), ranges
    # the console on the staff gateway only, and nothing else there
    for route in objects(report, overlay, "HTTPRoute"):
        parents = {p["name"] for p in route["spec"]["parentRefs"]}
        backends = {b["name"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]}
        if STAFF_GATEWAY in parents or CONSOLE in backends:
            assert (parents, backends) == ({STAFF_GATEWAY}, {CONSOLE}), route["metadata"]["name"]
    route = one(report, overlay, "HTTPRoute", CONSOLE)
    assert route["spec"]["hostnames"] == [listener["hostname"]]
    rows = route_matches(report, overlay, STAFF_GATEWAY)[CONSOLE]
    assert {(backend, port) for *_, backend, port in rows} == {(CONSOLE, 8080)}
    # exactly the pages the application has, each with its one method: a new page needs a route, and a
    # route names no path the console does not serve
    pages = console_pages()
    assert ("POST", "/auth/logout") in pages and ("GET", "/auth/callback") in pages
    for method, kind, value, *_ in rows:
        assert kind in ("Exact", "RegularExpression") and method != "*"
        assert any(m == method and path_matches(kind, value, p) for m, p in pages), (method, value)
    for m, p in pages:
        assert any(method == m and path_matches(kind, value, p) for method, kind, value, *_ in rows), (m, p)
    forbidden = [
        "/metrics",
        "/healthz",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/orders/x/y",
        "/orders/x/actions/y/z",
        "/approvals/x",
        "/search/x",
        "/auth/login/x",
        "/v1/admin/orders",
        "/orders/x/../../metrics",
    ]
    for _, kind, value, *_ in rows:
        assert not [f for f in forbidden if path_matches(kind, value, f)], value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_console_configuration_passes_its_own_production_checks(
    report: dict[str, Any], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered Deployment, its ConfigMaps resolved and its secrets stood in for by values of the strength
    the store must hold, is a configuration the console starts with in production."""
    from handshake_console.settings import ConsoleSettings

    c = container(one(report, overlay, "Deployment", CONSOLE))
    maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in objects(report, overlay, "ConfigMap")}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    for name, e in env_of(c).items():
        ref = e.get("valueFrom", {})
        if "value" in e:
            env[name] = e["value"]
        elif "configMapKeyRef" in ref:
            env[name] = maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
        else:
            assert "secretKeyRef" in ref, name
            env[name] = secrets.token_urlsafe(48)
    for name in [k for k in os.environ if k.startswith("HANDSHAKE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ConsoleSettings()
    assert settings.environment == "production" and settings.configuration_problems() == []
    assert settings.console_oidc_client_secret is not None  # a confidential client
    # the access token it keeps is checked with the issuer and audience the services verify, from the same place
    runtime = next(data for name, data in maps.items() if name.startswith("handshake-runtime"))
    assert (settings.jwt_issuer, settings.jwt_audience) == (
        runtime["HANDSHAKE_JWT_ISSUER"],
        runtime["HANDSHAKE_JWT_AUDIENCE"],
    )
    # each service on its public port, where /v1/admin and /metrics answer, never payment's internal port
    for service, url in settings.service_urls().items():
        parsed = urlsplit(url or "")
        assert (parsed.scheme, parsed.hostname, parsed.port) == ("http", service, 8080), url
        assert [p["port"] for p in one(report, overlay, "Service", service)["spec"]["ports"]] == [8080]
    assert_console_reads_metrics_from_every_pod(report, overlay, settings.metrics_urls())
    # staff type the staff gateway's hostname, and the issuer sends them back there
    (listener,) = one(report, overlay, "Gateway", STAFF_GATEWAY)["spec"]["listeners"]
    assert settings.console_public_url == f"https://{listener['hostname']}"


def assert_console_reads_metrics_from_every_pod(
    report: dict[str, Any], overlay: str, urls: dict[str, str | None]
) -> None:
    """The dashboard's address for each service names a headless Service (its name resolves to every pod's own
    address, not one virtual address in front of them) that selects exactly the pods of that service's
    Deployment, on their public port, and that Prometheus's ServiceMonitors do not also pick up."""
    monitors = objects(report, overlay, "ServiceMonitor")
    for service, url in urls.items():
        parsed = urlsplit(url or "")
        assert (parsed.scheme, parsed.port, parsed.path) == ("http", 8080, ""), url
        assert parsed.hostname != service, f"{service}: the dashboard would read one pod per scrape through {url}"
        headless = one(report, overlay, "Service", parsed.hostname or "")
        spec = headless["spec"]
        assert spec.get("clusterIP") == "None" and spec.get("type", "ClusterIP") == "ClusterIP", parsed.hostname
        assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(8080, "http")]
        pods = {w["metadata"]["name"]: pod_labels(w) for w in workloads(report, overlay)}
        selected = [name for name, labels in pods.items() if selects({"matchLabels": spec["selector"]}, labels)]
        assert selected == [service], (parsed.hostname, selected)
        http = [p for p in container(one(report, overlay, "Deployment", service))["ports"] if p["name"] == "http"]
        assert [p["containerPort"] for p in http] == [8080]
        labels = headless["metadata"].get("labels", {})
        assert not [m for m in monitors if selects(m["spec"]["selector"], labels)], parsed.hostname


# ------------------------------------------------------------------------------------------ networking


def egress_peers(report: dict[str, Any], overlay: str, labels: dict[str, str]) -> list[tuple[dict[str, Any], set[int]]]:
    out = []
    for p in policies_for(report, overlay, labels):
        for rule in p["spec"].get("egress", []):
            ports = {port["port"] for port in rule.get("ports", [])}
            out += [(peer, ports) for peer in rule.get("to", [{}])]
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_designed_paths(report: dict[str, Any], overlay: str) -> None:
    nps = {p["metadata"]["name"]: p["spec"] for p in objects(report, overlay, "NetworkPolicy")}
    deny = nps["default-deny-all"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = nps["allow-dns"]["egress"]
    assert dns[0]["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert sorted((p["port"], p["protocol"]) for p in dns[0]["ports"]) == [(53, "TCP"), (53, "UDP")]
    brokers = {"strimzi.io/cluster": "handshake", "strimzi.io/broker-role": "true", "strimzi.io/kind": "Kafka"}
    for service in SERVICES:
        labels = server_labels(service)
        peers = egress_peers(report, overlay, labels)
        databases = {
            p["podSelector"]["matchLabels"]["cnpg.io/cluster"]
            for p, _ in peers
            if "cnpg.io/cluster" in p.get("podSelector", {}).get("matchLabels", {})
        }
        assert databases == {f"{service}-db"}, service
        to_brokers = [ports for p, ports in peers if "podSelector" in p and selects(p["podSelector"], brokers)]
        assert to_brokers == [{9093}], service
        internet = [(p, ports) for p, ports in peers if "ipBlock" in p and p.get("podSelector") is None]
        if service in ("payment", "webhook-ingest"):
            assert internet
            assert all(ports == {443} and set(p["ipBlock"]["except"]) >= PRIVATE_RANGES for p, ports in internet)
        else:
            assert not internet, service
        to_payment_internal = [p for p, ports in peers if 8081 in ports]
        assert bool(to_payment_internal) == (service == "order")
    # payment's internal port admits order only; the gateway reaches only order and webhook-ingest; the
    # console reaches every service's public port
    admits_console = set()
    for service in SERVICES:
        for p in policies_for(report, overlay, server_labels(service)):
            for rule in p["spec"].get("ingress", []):
                ports = {port["port"] for port in rule.get("ports", [])}
                assert ports, f"{p['metadata']['name']}: an ingress rule without ports"
                if 8081 in ports:
                    order = {"app.kubernetes.io/name": "order", "app.kubernetes.io/component": "server"}
                    assert service == "payment" and rule["from"] == [{"podSelector": {"matchLabels": order}}]
                for peer in rule["from"]:
                    ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    labels = peer.get("podSelector", {}).get("matchLabels", {})
                    if ns == "envoy-gateway-system":
                        assert service in ("order", "webhook-ingest") and ports == {8080}
                        assert labels["gateway.envoyproxy.io/owning-gateway-name"] == PUBLIC_GATEWAY
                    if ns == "monitoring":
                        assert ports == {8080}
                    if labels.get("app.kubernetes.io/name") == CONSOLE:
                        assert ns is None and "namespaceSelector" not in peer and ports == {8080}, service
                        admits_console.add(service)
    assert admits_console == set(SERVICES)
    assert_console_network_policies(report, overlay)
    # each database admits its own service, its migration Job, its own instances and the CNPG operator
    for service in SERVICES:
        db = nps[f"{service}-db"]
        sources = [peer for rule in db["ingress"] for peer in rule["from"]]
        names = {peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") for peer in sources}
        assert names - {None} == {service, "cloudnative-pg"}


def assert_console_network_policies(report: dict[str, Any], overlay: str) -> None:
    """In: the staff gateway's proxies, and Prometheus where the console is scraped; nothing else, the public
    gateway's proxies included. Out: the four services' public port, its identity provider on 443, DNS."""
    console = server_labels(CONSOLE)
    sources = set()
    for p in policies_for(report, overlay, console):
        for rule in p["spec"].get("ingress", []):
            ports = frozenset(port["port"] for port in rule.get("ports", []))
            for peer in rule["from"]:
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                sources.add((ns, tuple(sorted(peer.get("podSelector", {}).get("matchLabels", {}).items())), ports))
    staff_proxies = (
        "envoy-gateway-system",
        (
            ("gateway.envoyproxy.io/owning-gateway-name", STAFF_GATEWAY),
            ("gateway.envoyproxy.io/owning-gateway-namespace", "handshake"),
        ),
        frozenset({8080}),
    )
    prometheus = ("monitoring", (("app.kubernetes.io/name", "prometheus"),), frozenset({8080}))
    scraped = any(m["metadata"]["name"] == CONSOLE for m in objects(report, overlay, "ServiceMonitor"))
    assert sources == {staff_proxies} | ({prometheus} if scraped else set())

    services = {s: {"app.kubernetes.io/name": s, "app.kubernetes.io/component": "server"} for s in SERVICES}
    reached, issuer = set(), []
    for peer, ports in egress_peers(report, overlay, console):
        if "ipBlock" in peer:
            net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            outside = net.prefixlen > 0 and not any(net.overlaps(n) for n in NOT_OUTSIDE)
            assert ports == {443} and (outside or set(peer["ipBlock"].get("except", [])) >= PRIVATE_RANGES), peer
            issuer.append(net)
        elif "namespaceSelector" in peer:
            assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}, peer
            assert ports == {53}
        else:
            name = peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
            assert peer["podSelector"] == {"matchLabels": services.get(name)} and ports == {8080}, peer
            reached.add(name)
    assert reached == set(SERVICES) and issuer


# -------------------------------------------------------------------------------------- autoscaling


def test_autoscalers_never_overlap_and_never_exceed_partitions(report: dict[str, Any]) -> None:
    overlay = "production"
    keda = {s["spec"]["scaleTargetRef"]["name"]: s for s in objects(report, overlay, "ScaledObject")}
    hpa = {h["spec"]["scaleTargetRef"]["name"] for h in objects(report, overlay, "HorizontalPodAutoscaler")}
    assert set(keda) == {"order", "payment", "inventory"} and hpa == {"webhook-ingest"}
    assert not set(keda) & hpa
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in objects(report, overlay, "KafkaTopic")}
    auths = {a["metadata"]["name"] for a in objects(report, overlay, "TriggerAuthentication")}
    for service, so in keda.items():
        triggers = so["spec"]["triggers"]
        consumed = {(t, g) for t, (_, consumers) in TOPIC_TABLE.items() for s, g in consumers.items() if s == service}
        assert {(t["metadata"]["topic"], t["metadata"]["consumerGroup"]) for t in triggers} == consumed
        for t in triggers:
            assert t["type"] == "kafka" and t["authenticationRef"]["name"] in auths
            assert (t["metadata"]["sasl"], t["metadata"]["tls"]) == ("scram_sha512", "enable")
            assert so["spec"]["maxReplicaCount"] <= partitions[t["metadata"]["topic"]]


# --------------------------------------------------------------------------------- images, monitoring


def test_production_images_are_pinned_by_digest_and_dev_by_tag(report: dict[str, Any]) -> None:
    for overlay, pinned in (("production", True), ("dev", False)):
        for w in workloads(report, overlay):
            for c in w["spec"]["template"]["spec"]["containers"]:
                assert bool(DIGEST.search(c["image"])) == pinned, (overlay, c["image"])
                if not pinned:
                    assert re.search(r":[\w.-]+$", c["image"]), c["image"]


def declared_metrics() -> set[str]:
    names = set()
    for source in [*PROJECT_ROOT.glob("shared/src/**/*.py"), *PROJECT_ROOT.glob("services/*/src/**/*.py")]:
        for kind, name in re.findall(r'(Counter|Gauge|Histogram)\(\s*"(handshake_\w+)"', source.read_text()):
            base = name.removesuffix("_total")
            names |= {name} | ({base + "_total"} if kind == "Counter" else set())
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_scrapes_every_service_and_alerts_on_real_metrics(report: dict[str, Any], overlay: str) -> None:
    monitors = {m["metadata"]["name"]: m for m in objects(report, overlay, "ServiceMonitor")}
    # the console exports /metrics (its process's figures) like the services
    assert set(monitors) == set(DEPLOYABLES)
    services = objects(report, overlay, "Service")
    for name, m in monitors.items():
        scraped = [s for s in services if selects(m["spec"]["selector"], s["metadata"].get("labels", {}))]
        assert [s["metadata"]["name"] for s in scraped] == [name]  # never payment-internal
        assert [(e["port"], e["path"]) for e in m["spec"]["endpoints"]] == [("http", "/metrics")]
    known = declared_metrics()
    groups = [g for rule in objects(report, overlay, "PrometheusRule") for g in rule["spec"]["groups"]]
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"\bhandshake_\w+", e)}
    assert used and used <= known, f"alerts on metrics no code exports: {used - known}"
    assert {
        "handshake_orders_stuck",
        "handshake_dead_letters_total",
        "handshake_outbox_oldest_pending_seconds",
        "handshake_reconciliation_mismatches_total",
        "handshake_webhook_rejected_total",
        "handshake_consumer_last_processed_timestamp_seconds",
        "handshake_dead_letters_open",
    } <= used


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_payment_internal_api_has_its_own_service(report: dict[str, Any], overlay: str) -> None:
    internal = one(report, overlay, "Service", "payment-internal")
    assert [(p["port"], p["targetPort"]) for p in internal["spec"]["ports"]] == [(8081, "internal")]
    ports = {p["name"]: p["containerPort"] for p in container(one(report, overlay, "Deployment", "payment"))["ports"]}
    assert ports["internal"] == 8081
    for name in DEPLOYABLES:
        assert [p["port"] for p in one(report, overlay, "Service", name)["spec"]["ports"]] == [8080]
    order_env = env_of(container(one(report, overlay, "Deployment", "order")))
    assert order_env["HANDSHAKE_PAYMENT_INTERNAL_URL"]["value"] == "http://payment-internal:8081"
