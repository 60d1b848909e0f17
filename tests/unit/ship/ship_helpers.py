"""Shared by the shipping tests: paths, the tools hack/build-tools.sh builds, YAML document lookups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "vram-operator"
sys.path.insert(0, str(REPO / "hack"))

from localcluster.tools import MissingBinaryError, binary_path  # noqa: E402  (after the path insert)

# Every toggle of the chart switched on, for the "all on" renders.
ALL_TOGGLES = (
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboards.enabled=true",
    "createNamespace=true",
)


def tool(name: str) -> Path:
    """A binary built by hack/build-tools.sh; a missing one fails the test, it never skips."""
    try:
        return binary_path(name)
    except MissingBinaryError as error:
        pytest.fail(str(error), pytrace=False)


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
