"""manifests/ is what the chart renders (manifests/generate.py runs helm)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from script_loader import load_script
from ship_helpers import REPO


def generator() -> ModuleType:
    return load_script(REPO / "manifests" / "generate.py", "manifests_generate")


def test_manifests_are_what_the_chart_renders(helm: Path) -> None:
    gen = generator()
    stale = gen.stale(gen.render(helm))
    assert stale == [], f"stale: {stale}; run python manifests/generate.py"
