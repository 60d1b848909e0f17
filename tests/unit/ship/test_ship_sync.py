"""Generated copies are current: the chart's CRDs and manifests/ against their sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ship_helpers import CHART, REPO
from vram_operator.api.crdgen import crd_files


@pytest.mark.parametrize("directory", [REPO / "crds", CHART / "files" / "crds", REPO / "manifests" / "crds"])
def test_crd_copies_match_the_api_models(directory: Path) -> None:
    generated = crd_files()
    on_disk = {path.name: path.read_text() for path in directory.glob("*.yaml")}
    assert on_disk == generated, f"{directory.relative_to(REPO)} is stale: run `vram-operator crds` and regenerate"


def test_plain_manifests_carry_no_helm_ownership_but_keep_the_why_comments() -> None:
    text = (REPO / "manifests" / "vram-operator.yaml").read_text()
    assert "helm.sh/chart" not in text
    assert "managed-by: Helm" not in text
    assert "/proc/<pid>/cgroup" in text  # why hostPID: the comment ships with the manifest
    kinds = [doc["kind"] for doc in yaml.safe_load_all(text) if doc]
    assert kinds[0] == "Namespace"  # created before what lives in it
    assert {"Deployment", "DaemonSet", "ClusterRole", "NetworkPolicy", "Service"} <= set(kinds)


def test_kustomization_lists_every_plain_manifest() -> None:
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    expected = {f"crds/{p.name}" for p in (REPO / "manifests" / "crds").glob("*.yaml")} | {"vram-operator.yaml"}
    assert listed == expected
