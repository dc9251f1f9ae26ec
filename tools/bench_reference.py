"""The reference peer of `make bench`: a one-process, one-database checkout, run as its own README says (a
script that starts its own PostgreSQL and emulator, drives N checkouts at concurrency C and prints one JSON
line). It is run, never imported: it is a yardstick kept outside this repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_reference(
    script: Path, *, checkouts: int, concurrency: int, workdir: Path, cwd: Path, timeout: float
) -> dict[str, Any]:
    """Its JSON line, or {"error": ...} when it did not give one (the bench goes on with Handshake)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(script), "--n", str(checkouts), "--c", str(concurrency), "--workdir", str(workdir)]
    try:
        done = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f}s"}
    for line in reversed(done.stdout.splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "system_cpu_ms_per_order" in result:
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit status {done.returncode}, no result line: {' | '.join(tail)}"}
