"""Fixtures for the shipping artefacts: the built tools and chart rendering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ship_helpers import CHART, run, tool

RenderChart = Callable[..., list[dict[str, Any]]]
# Fixtures that need a binary built by hack/build-tools.sh: tests using them are marked `tools`, and
# hack/test.sh runs them after the build (a fresh machine has no tools when the unit tests start).
TOOL_FIXTURES = frozenset({"helm", "promtool", "render_chart"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TOOL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tools)


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return tool("promtool")


@pytest.fixture(scope="session")
def render_chart(helm: Path) -> RenderChart:
    """helm template with --set values; the documents parsed (the test fails when helm fails)."""

    def render(*values: str, release: str = "vram-operator", namespace: str = "vram-system") -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for value in values:
            args += ["--set", value]
        done = run(helm, *args)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    return render
