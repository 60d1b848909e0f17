"""Every YAML file the project ships parses with a loader that refuses duplicate keys: kustomize,
kubectl and strict parsers reject a repeated key that Helm and PyYAML silently accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from ship_helpers import CHART, REPO, DuplicateKeyError, strict_load_all

SHIPPED = sorted(
    path
    for directory in (REPO / "crds", REPO / "manifests", REPO / "examples", CHART / "files" / "crds", REPO / "plugins")
    for path in directory.rglob("*.yaml")
)


def test_the_strict_loader_refuses_a_repeated_key() -> None:
    with pytest.raises(DuplicateKeyError, match=r"app\.kubernetes\.io/name"):
        strict_load_all("labels:\n  app.kubernetes.io/name: a\n  app.kubernetes.io/name: a\n")
    assert strict_load_all("a: {b: 1}\n---\nb: {b: 1}\n") == [{"a": {"b": 1}}, {"b": {"b": 1}}]


def test_the_shipped_set_covers_every_directory() -> None:
    covered = {path.relative_to(REPO).parts[0] for path in SHIPPED}
    assert {"crds", "manifests", "examples", "charts"} <= covered


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(REPO)))
def test_shipped_yaml_has_no_duplicate_keys(path: Path) -> None:
    assert strict_load_all(path.read_text(encoding="utf-8"))
