"""A tiny run of each benchmark that needs no control plane, as a user runs it, so none can rot
unnoticed (the operator benchmarks' runs are in tests/integration/test_benchmarks_smoke.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_agent_poll_reports_poll_cost_and_rss() -> None:
    out = run_benchmark("agent_poll.py", "--polls", "2")
    assert "steady poll" in out and "nvidia-smi read" in out
    assert "aims: CPU < 20 ms/poll" in out


def test_estimator_calibration_reports_errors_per_version() -> None:
    out = run_benchmark("estimator_calibration.py", "--in-sample")
    assert "per version, in sample" in out
    assert " rows evaluated; " in out


def test_weights_vs_logs_reports_every_row_and_the_median_error() -> None:
    lines = run_benchmark("weights_vs_logs.py").splitlines()
    summary = lines[-1]
    assert " rows: median |error| " in summary
    assert int(summary.split()[0]) == len(lines) - 1 >= 50
