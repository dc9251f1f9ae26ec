"""Every Prometheus metric of the service is declared in its metrics.py, so one file answers what it exports
(the outbox, consumer and background-loop metrics come from the shared library)."""

from __future__ import annotations

import importlib.util
import pkgutil
from pathlib import Path

import pytest

import handshake_webhook_ingest

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


def test_no_module_but_metrics_declares_a_metric() -> None:
    declaring = []
    for module in pkgutil.walk_packages(handshake_webhook_ingest.__path__, "handshake_webhook_ingest."):
        if module.name.endswith(".__main__"):
            continue
        spec = importlib.util.find_spec(module.name)
        assert spec is not None and spec.origin is not None
        text = Path(spec.origin).read_text(encoding="utf-8")
        if "prometheus_client" in text and not module.name.endswith(".metrics"):
            declaring.append(module.name)
    assert declaring == []
    assert importlib.import_module("handshake_webhook_ingest.metrics")
