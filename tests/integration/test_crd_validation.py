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

from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.api.inference_server import SERVER_NAME_MAX, SERVER_NAME_MESSAGE
from vram_operator.api.owned_flags import OWNED_FLAGS, owned_flag_errors
from vram_operator.api.quantity import BUDGET_RULE_MESSAGE, QUANTITY_PATTERN
from vram_operator.manifests import KINDS
from vram_operator.render import PlacedReplica, RenderSettings, render

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
                         "placement": {"gpus": [0]}},
     "placement.gpus must list exactly tensorParallelSize x pipelineParallelSize GPUs"),
    ("InferenceServer", {"engine": "vllm", "image": "i", "model": {"name": "m"}, "tensorParallelSize": 2,
                         "pipelineParallelSize": 2, "placement": {"gpus": [0, 1]}},
     "placement.gpus must list exactly tensorParallelSize x pipelineParallelSize GPUs"),
    ("InferenceServer", {"engine": "vllm", "image": "i", "model": {"name": "m"}, "tensorParallelSize": 8,
                         "pipelineParallelSize": 9},
     "tensorParallelSize x pipelineParallelSize must be at most 64 GPUs (one node)"),
    ("InferenceServer", {"engine": "llamacpp", "image": "i", "model": {"name": "m"}, "pipelineParallelSize": 2},
     "pipelineParallelSize is for vllm only"),
    ("InferenceServer", {"engine": "generic", "image": "i", "vramBudget": "1Gi", "gpuMemoryUtilization": 0.01},
     "gpuMemoryUtilization must be 0 (auto) or between 0.05 and 0.99"),
    ("GpuAssignment", {"strategy": "Manual"}, "strategy Manual needs at least one assignment"),
    ("GpuAssignment", {"strategy": "Manual", "assignments": [{"server": "a/b", "node": "n"}, {"server": "a/b",
                                                                                            "node": "m"}]},
     "Duplicate value"),
    ("InferenceServer", {"engine": "generic", "image": "i", "vramBudget": "17Ti"}, BUDGET_RULE_MESSAGE),
    *[("InferenceServer", {"engine": owned.engine, "image": "i", "model": {"name": "m"}, "args": [owned.flags[0], "1"]},
       owned.message) for owned in OWNED_FLAGS],
]  # fmt: skip


def _cel_messages(node: dict[str, Any]) -> Iterator[str]:
    for rule in node.get("x-kubernetes-validations", []):
        yield rule["message"]
    for child in node.get("properties", {}).values():
        yield from _cel_messages(child)
    if "items" in node:
        yield from _cel_messages(node["items"])


def test_every_cel_rule_has_a_case() -> None:
    messages = {m for crd in CRDS for m in _cel_messages(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])}
    assert messages <= {message for _, _, message in CEL_CASES} | {SERVER_NAME_MESSAGE}


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


# ---- issue 9: what admission refuses is what the operator refuses, at the same boundaries ----


def _server_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceServer", "metadata": {"name": name}, "spec": spec}


def _admit(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str | None:
    """None when the API server admits the object (dry run), else the body of its 422."""
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", body, dry_run="All")
    except ApiException as error:
        assert error.status == UNPROCESSABLE, error.body
        return str(error.body)
    return None


def _spellings(flag: str, vllm: bool) -> list[str]:
    if not flag.startswith("--"):
        return [flag, f"{flag}=1"]
    underscored = "--" + flag[2:].replace("-", "_")
    forms = [flag, f"{flag}=1", underscored, f"{underscored}=0.5"]
    if vllm:
        forms += [flag[: max(3, len(flag) - 3)], f"{flag}.key", f"{flag[: max(3, len(flag) - 2)]}=1"]
    return forms


OWNED_SPELLINGS = [(owned.engine, arg, owned.message) for owned in OWNED_FLAGS for flag in owned.flags
                   for arg in _spellings(flag, owned.engine == "vllm")]  # fmt: skip
KEPT_ARGS = {
    "vllm": ["--enable-prefix-caching", "--enforce-eager", "--trust-remote-code", "--max-loras", "--seed",
             "--model-impl", "--compilation-config.level", "-O3", "--gpu-memory-utilizationx", "--config-format"],
    "llamacpp": ["--jinja", "-fa", "-cb", "-mg", "--threads", "-cmoe", "--ctx-size-draft", "-cd", "--gpu-layers-draft"],
}  # fmt: skip
ENGINE_SPECS = {
    "vllm": {"engine": "vllm", "image": "vllm/vllm-openai:v0.19.0", "model": {"name": "Qwen/Qwen2.5-7B-Instruct"}},
    "llamacpp": {"engine": "llamacpp", "image": "llama:server", "model": {"path": "/models/m.gguf"}},
}


def test_admission_refuses_every_spelling_of_an_owned_flag_as_the_model_does(
    custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    """Each spelling goes to the real API server; its verdict and message match the model's."""
    corpus = OWNED_SPELLINGS + [(engine, arg, None) for engine, args in KEPT_ARGS.items() for arg in args]
    wrong = []
    for engine, arg, message in corpus:
        spec = {**ENGINE_SPECS[engine], "args": ["--seed", "1", arg, "2"]}
        refusal = _admit(custom_objects, namespace, _server_body("s", spec))
        model_refusal = "; ".join(owned_flag_errors(engine, [arg])) or None
        admitted_right = refusal is None if message is None else refusal is not None and message in refusal
        model_right = (
            model_refusal is None if message is None else model_refusal is not None and message in model_refusal
        )
        if not (admitted_right and model_right):
            wrong.append((engine, arg, message, refusal, model_refusal))
    assert not wrong
    assert len(OWNED_SPELLINGS) > 100


@pytest.mark.parametrize(
    ("engine", "args", "field"),
    [
        ("vllm", ["--gpu_memory_utilization", "0.95"], "use spec.gpuMemoryUtilization"),
        ("vllm", ["--gpu-memory-utilization=0.95"], "use spec.gpuMemoryUtilization"),
        ("vllm", ["-tp", "2"], "use spec.tensorParallelSize"),
        ("vllm", ["--max_model_len=32768"], "use spec.maxModelLen"),
        ("vllm", ["--kv-cache-dtype", "fp8"], "use spec.kvCacheDtype"),
        ("vllm", ["--kv-cache-memory-bytes", "8000000000"], "use spec.gpuMemoryUtilization"),
        ("vllm", ["--max-num-seqs", "8"], "use spec.maxNumSeqs"),
        ("llamacpp", ["--n_gpu_layers", "99"], "spec.maxModelLen"),
        ("llamacpp", ["-c", "32768"], "use spec.maxModelLen"),
        ("llamacpp", ["--parallel", "4"], "use spec.maxNumSeqs"),
    ],
)
def test_owned_flag_refusal_names_the_spec_field(
    custom_objects: client.CustomObjectsApi, namespace: str, engine: str, args: list[str], field: str
) -> None:
    refusal = _admit(custom_objects, namespace, _server_body("s", {**ENGINE_SPECS[engine], "args": args}))
    assert refusal is not None and "spec.args must not set" in refusal and field in refusal, refusal


def test_generic_servers_pass_any_args(custom_objects: client.CustomObjectsApi, namespace: str) -> None:
    spec = {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi",
            "args": ["--gpu-memory-utilization", "0.9", "-c", "x.yaml", "--port", "9000"]}  # fmt: skip
    assert _admit(custom_objects, namespace, _server_body("yolo", spec)) is None


MIB = 2**20
BUDGETS_ACCEPTED: list[int | str] = ["1Mi", MIB, "650Mi", "1.5Gi", "6.8G", "800M", "1e9", "+.5Gi", 1_073_741_824,
                                     "16Ti", 16 * 2**40]  # fmt: skip
BUDGETS_REFUSED: list[int | str] = [0, "0", MIB - 1, "1048575", "1023Ki", "500m", "-5Gi", -1, "6.8GB", "650MB",
                                    "banana", "", "Mi", " 650Mi", "6.8g", "17Ti", 16 * 2**40 + 1, "1e40"]  # fmt: skip


def _budget_objects(value: int | str) -> list[tuple[str, dict[str, Any]]]:
    generic = {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi"}
    pin = {"server": "ai/yolo", "node": "n1", "vramBudgetOverride": value}
    return [
        ("vramBudget", _server_body("yolo", {**generic, "vramBudget": value})),
        ("vramBudgetMin", _server_body("yolo", {**generic, "vramBudgetMin": value})),
        ("vramBudgetOverride", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuAssignment",
                                "metadata": {"name": f"a-{uuid.uuid4().hex[:8]}"},
                                "spec": {"strategy": "Manual", "assignments": [pin]}}),
    ]  # fmt: skip


def _admit_any(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str | None:
    if body["kind"] == "InferenceServer":
        return _admit(api, namespace, body)
    try:
        api.create_cluster_custom_object(GROUP, VERSION, "gpuassignments", body, dry_run="All")
    except ApiException as error:
        assert error.status == UNPROCESSABLE, error.body
        return str(error.body)
    return None


def test_budget_boundaries_on_the_api_server_match_the_models(
    custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    """Refused by the API server (naming the field) exactly when the models refuse it.

    One gap, by design: a GpuAssignment's vramBudgetOverride string of the right shape but out of
    range ("1023Ki", "17Ti") passes admission (CEL on each of 4096 list items of an int-or-string
    is over the API server's cost budget) and is refused by the operator's validation.
    """
    wrong = []
    for value in BUDGETS_ACCEPTED + BUDGETS_REFUSED:
        for field, body in _budget_objects(value):
            refusal = _admit_any(custom_objects, namespace, body)
            try:
                KINDS[body["kind"]].model_validate(body)
                model_refuses = False
            except ValueError:
                model_refuses = True
            gap = field == "vramBudgetOverride" and isinstance(value, str) and re.fullmatch(QUANTITY_PATTERN, value)
            api_should_refuse = value in BUDGETS_REFUSED and not gap
            named = refusal is None or field in refusal
            if (refusal is not None) != api_should_refuse or model_refuses != (value in BUDGETS_REFUSED) or not named:
                wrong.append((field, value, refusal, model_refuses))
    assert not wrong


@pytest.mark.parametrize("name", ["my.dotted.server", "7b-chat", "q" * (SERVER_NAME_MAX + 1)])
def test_server_names_a_service_cannot_take_are_refused(
    custom_objects: client.CustomObjectsApi, namespace: str, name: str
) -> None:
    spec = {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi"}
    refusal = _admit(custom_objects, namespace, _server_body(name, spec))
    assert refusal is not None and "DNS-1035 label" in refusal, refusal


@pytest.mark.parametrize("name", ["a", "chat-2", "q" * SERVER_NAME_MAX])
@pytest.mark.parametrize("pinning_mode", ["envvar", "dra"])
def test_every_admitted_name_gives_children_the_api_server_takes(
    custom_objects: client.CustomObjectsApi, dynamic_client: Any, namespace: str, name: str, pinning_mode: str
) -> None:
    spec = {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.19.0",
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct"},
        "replicas": 2,  # replica 1's Deployment carries a suffix: its name must be taken too
    }
    assert _admit(custom_objects, namespace, _server_body(name, spec)) is None
    server = InferenceServer.model_validate(
        {"metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}, "spec": spec}
    )
    placement = PlacementStatus.model_validate({
        "node": "gpu-node.example.internal",  # a dotted node name, as on most clouds
        "gpus": [{"index": 0, "uuid": "GPU-1a2b3c4d-0000-1111-2222-333344445555", "totalMiB": 24564}],
        "budgetMiB": 9000,
    })  # fmt: skip
    replicas = [PlacedReplica(0, placement, 0.4), PlacedReplica(1, placement, 0.4)]
    rendered = render(server, replicas, RenderSettings(pinning_mode=pinning_mode))  # type: ignore[arg-type]
    assert len(rendered.deployments) == 2
    for obj in rendered.objects:
        resource = dynamic_client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.create(body=obj, namespace=namespace, dry_run="All")
