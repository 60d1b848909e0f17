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


def test_every_chart_template_is_shipped_in_manifests() -> None:
    """A template added to the chart but not to generate.py would be missing from a kubectl install
    (CRDs ship as crds/, NOTES.txt and helpers render nothing)."""
    shipped = {template for templates, _ in generator().OUTPUTS.values() for template in templates}
    templates = {path.name for path in (REPO / "charts" / "vram-operator" / "templates").iterdir()}
    assert templates - shipped == {"crds.yaml", "NOTES.txt", "_helpers.tpl"}
