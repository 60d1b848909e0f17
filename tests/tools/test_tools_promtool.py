"""Alert rules: promtool checks the file and runs the unit tests of every alert."""

from __future__ import annotations

from pathlib import Path

from tool_helpers import run

from ship_helpers import CHART, REPO

ALERTS = CHART / "files" / "alerts.yaml"
TESTS = sorted((REPO / "tests" / "promtool").glob("*.test.yaml"))


def test_promtool_check_rules(promtool: Path) -> None:
    done = run(promtool, "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    assert TESTS
    done = run(promtool, "test", "rules", *map(str, TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
