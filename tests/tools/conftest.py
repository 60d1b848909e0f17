"""Tests that run a binary built by hack/build-tools.sh (helm, promtool) but need no cluster.

hack/test.sh runs this tier after the build: on a fresh machine the tools do not exist before it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tool_helpers import run, tool

from ship_helpers import CHART, RenderChart, strict_load_all


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return tool("promtool")


@pytest.fixture(scope="session")
def render_chart(helm: Path) -> RenderChart:
    """helm template with --set values; the documents parsed, refusing duplicate keys (the test fails
    when helm fails)."""

    def render(*values: str, release: str = "vram-operator", namespace: str = "vram-system") -> list[dict[str, object]]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for value in values:
            args += ["--set", value]
        done = run(helm, *args)
        assert done.returncode == 0, done.stderr
        return [doc for doc in strict_load_all(done.stdout) if doc]

    return render
