"""Shared by the shipping tests (tests/unit/ship, tests/tools): paths and YAML document lookups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "vram-operator"

# Every toggle of the chart switched on, for the "all on" renders.
ALL_TOGGLES = (
    "serviceMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "grafanaDashboards.enabled=true",
    "createNamespace=true",
)

# render_chart(*"key=value", release=..., namespace=...) -> the documents `helm template` prints.
RenderChart = Callable[..., list[dict[str, Any]]]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
