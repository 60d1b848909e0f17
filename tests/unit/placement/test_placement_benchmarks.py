"""Smoke runs of benchmarks/placement_quality.py and benchmarks/placement_speed.py, so they cannot rot:
each runs end to end on tiny sizes and prints its table, and the quality benchmark's optimum is
checked against the plans it compares."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str) -> ModuleType:
    return load_script(ROOT / "benchmarks" / f"{name}.py", name)


def test_placement_quality_runs_and_no_plan_beats_the_optimum(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quality = _load("placement_quality")
    outcome = quality.evaluate((3, 0, 3.0))
    assert 5 <= outcome.gpus <= 30 and 30 <= outcome.servers <= 300
    assert all(value <= outcome.bound + 0.5 for value in outcome.results.values())
    for name in quality.STRATEGIES:
        assert outcome.results[name] >= outcome.results[quality.BASELINE + name] - 1e-6
    instance = quality.make_instance(random.Random(5))
    assert any(d.min_mib < d.preferred_mib for d in instance.demands)  # shrinkable budgets
    assert any(d.tensor_parallel > 1 for d in instance.demands)  # tensor parallel
    monkeypatch.setattr(sys, "argv", ["placement_quality.py", "--instances", "1", "--time-limit", "2"])
    quality.main()
    out = capsys.readouterr().out
    assert "greedy VRAMBased" in out and "VRAMBased" in out and "1 instances" in out


def test_placement_speed_runs_every_column(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    speed = _load("placement_speed")
    assert set(speed.CASES) == {"light", "full", "full-2000", "small-over"}
    monkeypatch.setattr(
        sys, "argv", ["placement_speed.py", "--servers", "40", "--gpus", "12", "--load", "1.3", "--repeat", "1"]
    )
    speed.main()
    out = capsys.readouterr().out
    assert "130% of free" in out
    assert "greedy cpu" in out and "plan cpu" in out
    for strategy in ("VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced"):
        assert strategy in out
