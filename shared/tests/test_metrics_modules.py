"""Every Prometheus metric of a service is declared in its metrics.py, so one file answers what the service
exports (the outbox, consumer, loop and lifecycle mechanisms take their metrics from there or from the shared
library)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # pure: no stack, runs in `make test-unit`


@pytest.mark.parametrize("service", ["order", "inventory", "webhook_ingest", "payment"])
def test_no_module_but_metrics_declares_a_metric(service: str) -> None:
    package = importlib.import_module(f"handshake_{service}")
    declaring = []
    for module in pkgutil.walk_packages(package.__path__, f"handshake_{service}."):
        spec = importlib.util.find_spec(module.name)
        assert spec is not None and spec.origin is not None
        if "prometheus_client" in Path(spec.origin).read_text(encoding="utf-8") and not module.name.endswith(
            ".metrics"
        ):
            declaring.append(module.name)
    assert declaring == []
    assert importlib.import_module(f"handshake_{service}.metrics")
