"""A tiny run of each operator benchmark, as a user runs it (each starts its own local control
plane), so none can rot unnoticed: benchmarks/operator_scale.py and benchmarks/operator_soak.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )


def test_operator_scale_places_every_server_and_reports_against_the_ceiling() -> None:
    # On main the benchmark created the nvidia RuntimeClass its LocalCluster had already made (409).
    done = run_benchmark("operator_scale.py", "--servers", "6", "--nodes", "1", "--workers", "2", "--timeout", "240")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["decided"] == report["placed"] == 6
    assert report["apiCeilingCreatePlusPatchPerSecond"] > 0 and report["decisionsPerSecond"] > 0
    assert report["reconcileP99Seconds"] is not None and report["operatorPeakRssMiB"] > 0
    requests = report["apiRequestsPerServer"]
    assert requests["POST inferenceservers"] == 1  # the benchmark's own creates
    # A new server has no children yet: its reconcile lists no Deployments to find stale ones (on main
    # every reconcile listed them; the operator's own watch may list them once).
    assert requests.get("LIST deployments", 0.0) < 1, requests


def test_operator_soak_runs_a_seed_and_sums_it_up() -> None:
    done = run_benchmark("operator_soak.py", "--seeds", "1", "--operations", "3", "--check-every", "3", "--shrink", "0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seed_line, summary_line = done.stdout.strip().splitlines()
    assert seed_line.startswith("seed 1: 3 operations, 0 violations")
    summary = json.loads(summary_line)
    assert summary["seeds"] == [1] and summary["operations"] == 3 and summary["checks"] >= 1
    assert summary["violations"] == 0 and summary["failingSeeds"] == []
