"""manifests/ is what the chart renders (manifests/generate.py runs helm)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ship_helpers import REPO


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manifests_generate", REPO / "manifests" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_manifests_are_what_the_chart_renders(helm: Path) -> None:
    gen = generator()
    stale = gen.stale(gen.render(helm))
    assert stale == [], f"stale: {stale}; run python manifests/generate.py"
