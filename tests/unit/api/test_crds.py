"""The CRDs in crds/ are generated from the models, structural, documented and bounded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vram_operator.api.crdgen import crd_files, crd_reference_markdown
from vram_operator.commands.crds import REFERENCE_HEADER

CRDS_DIR = Path(__file__).resolve().parents[3] / "crds"
GENERATED = crd_files()


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schemas() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, text in GENERATED.items():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            yield name, path, node


def test_crds_directory_is_up_to_date() -> None:
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in CRDS_DIR.glob("*.yaml")}
    assert on_disk == GENERATED, "crds/ is stale: run `vram-operator crds`"


def test_crd_reference_is_up_to_date() -> None:
    reference = (CRDS_DIR.parent / "docs" / "crd-reference.md").read_text(encoding="utf-8")
    assert reference == REFERENCE_HEADER + crd_reference_markdown(), (
        "docs/crd-reference.md is stale: run `vram-operator crds`"
    )


@pytest.mark.parametrize(("crd", "path", "node"), list(_schemas()))
def test_every_schema_node_is_structural_documented_and_bounded(crd: str, path: str, node: dict[str, Any]) -> None:
    special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    assert "type" in node or special, f"{crd} {path}: no type"
    for forbidden in ("anyOf", "oneOf", "$ref", "title", "allOf"):
        assert forbidden not in node, f"{crd} {path}: {forbidden} is not structural"
    is_item_or_map_value = path.endswith(("[]", "{}"))
    standard = path in (".apiVersion", ".kind", ".metadata")  # owned by the API server itself
    if path and not is_item_or_map_value and not standard:
        assert node.get("description"), f"{crd} {path}: no description (kubectl explain shows nothing)"
    if node.get("type") == "string" and not standard:
        assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", f"{crd} {path}: unbounded"
    if node.get("type") == "array":
        assert "maxItems" in node, f"{crd} {path}: unbounded list"


def test_crd_names_columns_and_subresources() -> None:
    by_kind = {yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t) for t in GENERATED.values()}
    assert set(by_kind) == {"InferenceServer", "GpuAssignment", "GpuNode"}
    servers = by_kind["InferenceServer"]["spec"]
    assert servers["scope"] == "Namespaced"
    assert servers["names"]["shortNames"] == ["infs"]
    assert by_kind["GpuNode"]["spec"]["scope"] == "Cluster"
    assert by_kind["GpuAssignment"]["spec"]["scope"] == "Cluster"
    columns = {
        kind: [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
        for kind, crd in by_kind.items()
    }
    assert columns["InferenceServer"] == [
        "Engine",
        "Node",
        "GPU",
        "Util",
        "Memory",
        "Phase",
        "Ready",
        "Reason",
        "Age",
    ]
    assert columns["GpuNode"] == ["GPUs", "Total", "Free", "Ready", "Heartbeat", "Age"]
    heartbeat = by_kind["GpuNode"]["spec"]["versions"][0]["additionalPrinterColumns"][4]
    assert (heartbeat["type"], heartbeat["jsonPath"]) == ("date", ".status.lastHeartbeat")  # shown as an age
    assert columns["GpuAssignment"] == ["Strategy", "Mode", "Revision", "Age"]
    for crd in by_kind.values():
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["vram"]


def test_printer_columns_point_at_fields_that_exist() -> None:
    for text in GENERATED.values():
        crd = yaml.safe_load(text)
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            node = schema
            # A filter (conditions[?(@.type=="Ready")]) selects items of a list: step into them.
            parts = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).lstrip(".").split(".")
            if parts[0] == "metadata":
                continue
            for part in parts:
                key = part.removesuffix("[]")
                assert key in node.get("properties", {}), f"{column['jsonPath']} missing"
                node = node["properties"][key]
                if part.endswith("[]"):
                    node = node["items"]
