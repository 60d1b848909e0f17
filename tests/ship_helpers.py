"""Shared by the shipping tests (tests/unit/ship, tests/tools): paths and YAML document lookups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping repeats a key: Helm's parser keeps the last, kustomize and kubectl refuse the file."""


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a repeated mapping key (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise DuplicateKeyError(
                    "while constructing a mapping", node.start_mark, f"key {key!r} already defined", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def strict_load_all(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream, refusing duplicate keys."""
    return [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]
