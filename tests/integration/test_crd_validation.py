"""Every schema bound and CEL rule of our CRDs is enforced by the real API server.

The bound cases are generated from crds/ itself: for each bounded field (maxLength, maxItems,
minimum/maximum, enum, pattern) a minimal valid object gets one violating value at that field,
is submitted with a server-side dry run, and must come back 422 naming the field. Status fields
are checked through the status subresource of a real object.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vram_operator.manifests import KINDS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRDS = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
GROUP, VERSION = "vram.dev", "v1alpha1"
UNPROCESSABLE = 422

# Minimal valid spec of each kind: every CEL rule holds for it.
BASE_SPEC: dict[str, dict[str, Any]] = {
    "InferenceServer": {"engine": "generic", "image": "img", "vramBudget": "1Gi"},
    "GpuAssignment": {"strategy": "VRAMBased"},
    "GpuNode": {},
}
# Valid sample values for required fields met on the way to a bounded field.
SAMPLES = {"status": "True", "reason": "Test", "type": "Ready", "operator": "In", "server": "ns/name", "key": "k"}


@dataclass(frozen=True)
class Case:
    kind: str
    plural: str
    namespaced: bool
    path: tuple[str, ...]  # property names; "[]" steps into list items
    bound: str
    value: Any

    @property
    def id(self) -> str:
        return f"{self.kind}.{'.'.join(self.path)}:{self.bound}"


def _sample(node: dict[str, Any], name: str) -> Any:
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        return {req: _sample(node["properties"][req], req) for req in node.get("required", [])}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return max(1, node.get("minimum", 1))
    if kind == "boolean":
        return False
    if node.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    return SAMPLES.get(name, "a")


def _failing_string(pattern: str) -> str:
    for candidate in ("!", "a b", "-", "Z!", "0"):
        if re.fullmatch(pattern.strip("^$"), candidate) is None:
            return candidate
    raise AssertionError(f"no failing sample for {pattern}")


def _violations(node: dict[str, Any], name: str) -> Iterator[tuple[str, Any]]:
    if "maxLength" in node:
        yield "maxLength", "a" * (node["maxLength"] + 1)
    if "maxItems" in node:
        item = _sample(node["items"], name)
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            yield "maxItems", [{**item, **{k: f"ns/n{i}" if k == "server" else f"k{i}" for k in keys}}
                                for i in range(node["maxItems"] + 1)]  # fmt: skip
        else:
            yield "maxItems", [item] * (node["maxItems"] + 1)
    if "minimum" in node:
        yield "minimum", node["minimum"] - (0 if node.get("exclusiveMinimum") else 1)
    if "maximum" in node:
        yield "maximum", node["maximum"] + 1
    if "enum" in node:
        yield "enum", "NotAValidValue"
    if "pattern" in node:
        yield "pattern", _failing_string(node["pattern"])


def _walk(node: dict[str, Any], path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, (*path, name))
    if "items" in node:
        yield from _walk(node["items"], (*path, "[]"))


def _cases() -> Iterator[Case]:
    for crd in CRDS:
        spec = crd["spec"]
        schema = spec["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            for path, node in _walk(schema["properties"][part], (part,)):
                name = next((p for p in reversed(path) if p != "[]"), part)
                for bound, value in _violations(node, name):
                    yield Case(spec["names"]["kind"], spec["names"]["plural"], spec["scope"] == "Namespaced",
                               path, bound, value)  # fmt: skip


CASES = list(_cases())


def _schema_of(kind: str) -> dict[str, Any]:
    crd = next(c for c in CRDS if c["spec"]["names"]["kind"] == kind)
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _with_value(kind: str, base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`base` with `value` at `path`, filling required fields of the objects created on the way."""
    document = copy.deepcopy(base)
    node = _schema_of(kind)
    target: Any = document
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if step == "[]":
            node = node["items"]
            if last:
                target.append(value)
            continue
        node = node["properties"][step]
        nxt = path[i + 1] if not last else None
        if last:
            if isinstance(target, list):
                target.append(value)
            else:
                target[step] = value
            break
        if nxt == "[]":
            item = _sample(node["items"], step)
            container: Any = [item] if path[i + 2 :] else []
            if isinstance(target, list):
                target.append(container)
            else:
                target[step] = container
            target = item if path[i + 2 :] else container
            continue
        holder = target.setdefault(step, _sample(node, step)) if isinstance(target, dict) else _sample(node, step)
        target = holder
    return document


def _object(case: Case, namespace: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"v-{uuid.uuid4().hex[:10]}"}
    if case.namespaced:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": case.kind, "metadata": metadata,
            "spec": copy.deepcopy(BASE_SPEC[case.kind])}  # fmt: skip


def _create(api: client.CustomObjectsApi, case: Case, body: dict[str, Any], namespace: str, dry: bool) -> Any:
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry else {}
    if case.namespaced:
        return api.create_namespaced_custom_object(GROUP, VERSION, namespace, case.plural, body, **kwargs)
    return api.create_cluster_custom_object(GROUP, VERSION, case.plural, body, **kwargs)


def _field_text(path: tuple[str, ...]) -> str:
    return ".".join(p for p in path if p != "[]").split(".")[-1]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_schema_bound_is_enforced(custom_objects: client.CustomObjectsApi, namespace: str, case: Case) -> None:
    body = _object(case, namespace)
    if case.path[0] == "spec":
        with pytest.raises(ApiException) as error:
            _create(custom_objects, case, _with_value(case.kind, body, case.path, case.value), namespace, dry=True)
    else:
        created = _create(custom_objects, case, body, namespace, dry=False)
        patched = _with_value(case.kind, {"status": {}}, case.path, case.value)
        name = created["metadata"]["name"]
        with pytest.raises(ApiException) as error:
            if case.namespaced:
                custom_objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, case.plural, name, patched, dry_run="All"
                )
            else:
                try:
                    custom_objects.patch_cluster_custom_object_status(
                        GROUP, VERSION, case.plural, name, patched, dry_run="All"
                    )
                finally:
                    custom_objects.delete_cluster_custom_object(GROUP, VERSION, case.plural, name)
    assert error.value.status == UNPROCESSABLE, error.value.body
    assert _field_text(case.path) in str(error.value.body), error.value.body


CEL_CASES = [
    ("InferenceServer", {"engine": "vllm", "image": "i"}, "model is required for vllm and llamacpp"),
    ("InferenceServer", {"engine": "generic", "image": "i"}, "vramBudget is required for generic"),
    ("InferenceServer", {"engine": "generic", "image": "i", "vramBudget": "1Gi", "tensorParallelSize": 2,
                         "placement": {"gpus": [0]}}, "placement.gpus must list exactly tensorParallelSize GPUs"),
    ("InferenceServer", {"engine": "generic", "image": "i", "vramBudget": "1Gi", "gpuMemoryUtilization": 0.01},
     "gpuMemoryUtilization must be 0 (auto) or between 0.05 and 0.99"),
    ("GpuAssignment", {"strategy": "Manual"}, "strategy Manual needs at least one assignment"),
    ("GpuAssignment", {"strategy": "Manual", "assignments": [{"server": "a/b", "node": "n"}, {"server": "a/b",
                                                                                            "node": "m"}]},
     "Duplicate value"),
]  # fmt: skip


def test_every_cel_rule_has_a_case() -> None:
    messages = {rule["message"] for crd in CRDS
                for rule in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
                .get("x-kubernetes-validations", [])}  # fmt: skip
    assert messages <= {message for _, _, message in CEL_CASES}


@pytest.mark.parametrize(("kind", "spec", "message"), CEL_CASES, ids=[m for _, _, m in CEL_CASES])
def test_cel_rule_is_enforced(
    custom_objects: client.CustomObjectsApi, namespace: str, kind: str, spec: dict[str, Any], message: str
) -> None:
    model = KINDS[kind]
    case = Case(kind, model.plural, model.namespaced, ("spec",), "cel", None)
    body = _object(case, namespace) | {"spec": spec}
    with pytest.raises(ApiException) as error:
        _create(custom_objects, case, body, namespace, dry=True)
    assert error.value.status == UNPROCESSABLE
    assert message in str(error.value.body)


def _example_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") in KINDS:
                yield f"{path.relative_to(ROOT)}:{document['metadata']['name']}", document


EXAMPLES = list(_example_documents())


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_examples_are_accepted(
    custom_objects: client.CustomObjectsApi, namespace: str, where: str, document: dict[str, Any]
) -> None:
    model = KINDS[document["kind"]]
    body = copy.deepcopy(document)
    body.pop("status", None)
    case = Case(document["kind"], model.plural, model.namespaced, ("spec",), "example", None)
    if model.namespaced:
        body["metadata"]["namespace"] = namespace
    created = _create(custom_objects, case, body, namespace, dry=True)
    assert created["metadata"]["name"] == document["metadata"]["name"]
