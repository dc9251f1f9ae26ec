"""The manifest tools (kubectl, checkov, kubernetes-validate, jsonschema, PyYAML) and how the test reaches them.

They live in a virtual environment of their own, .data/manifests-venv (git-ignored), made from
deploy/requirements-manifests.txt the first time and whenever that file changes: checkov pins
packaging<24 while the project's constraints.txt pins packaging==26.3, so they cannot share the
project's .venv. HANDSHAKE_MANIFEST_TOOLS_VENV names another place for it (e.g. a CI cache)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_ROOT = PROJECT_ROOT / "deploy" / "kubernetes"
REQUIREMENTS = PROJECT_ROOT / "deploy" / "requirements-manifests.txt"
CHECKER = Path(__file__).resolve().parent / "manifests_check.py"


def tools_venv() -> Path:
    venv = Path(os.environ.get("HANDSHAKE_MANIFEST_TOOLS_VENV", PROJECT_ROOT / ".data" / "manifests-venv"))
    stamp = venv / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == wanted and (venv / "bin" / "python").exists():
        return venv
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, timeout=900)
    stamp.write_text(wanted)
    return venv


def render_and_validate(venv: Path, kustomizations: dict[str, Path]) -> dict[str, Any]:
    """{label: {"objects": [...], "checks": [{"object", "validator", "errors"}]}} from manifests_check.py."""
    args = [f"{label}={path}" for label, path in kustomizations.items()]
    out = subprocess.run(
        [str(venv / "bin" / "python"), str(CHECKER), *args], check=False, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise RuntimeError(f"manifest check failed:\n{out.stderr}")
    return json.loads(out.stdout)


def checkov(venv: Path, rendered: Path) -> dict[str, Any]:
    """checkov's JSON report on one rendered file. --skip-download: no network, the built-in checks only."""
    out = subprocess.run(
        [
            str(venv / "bin" / "checkov"),
            "--file",
            str(rendered),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--compact",
            "--skip-download",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING"},
    )
    if not out.stdout.strip():
        raise RuntimeError(f"checkov printed no report (exit {out.returncode}):\n{out.stderr}")
    report = json.loads(out.stdout)
    return report[0] if isinstance(report, list) else report


def kustomize(venv: Path, path: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "kubectl"), "kustomize", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {out.stderr.strip()}")
    return out.stdout
