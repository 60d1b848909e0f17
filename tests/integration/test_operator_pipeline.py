"""Pipeline parallel and model families on the real control plane: a PP 2 x TP 2 server is placed on four
GPUs of one node with both parallel flags; one needing more GPUs than any node has waits with a reason;
an embedding server (--task embed) is budgeted without the LM head it does not load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import GROUP, VERSION, Operator, condition, create, eventually, get, phase_is

pytestmark = pytest.mark.integration

SMALL_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # catalogued: 24 layers, 14 heads, 2 KV heads
EMBEDDING_CONFIG = Path(__file__).resolve().parents[1] / "fixtures/model-configs/Qwen__Qwen3-Embedding-8B.json"


def vllm(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": name},
        "spec": {
            "engine": "vllm",
            "image": "vllm/vllm-openai:v0.19.0",
            "model": {"name": SMALL_MODEL},
            "maxModelLen": 4096,
            **spec,
        },
    }


def engine_container(apps_v1: client.AppsV1Api, namespace: str, name: str) -> Any:
    try:
        deployment = apps_v1.read_namespaced_deployment(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return deployment.spec.template.spec.containers[0]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_pp2_tp2_is_placed_on_four_gpus_of_one_node_with_both_flags(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, apps_v1: client.AppsV1Api
) -> None:
    # Before: pipelineParallelSize was not a field (pruned); -pp in args was refused: no way to run PP.
    create(custom_objects, namespace, vllm("pp", tensorParallelSize=2, pipelineParallelSize=2))
    placed = eventually(lambda: phase_is(custom_objects, namespace, "pp", "Placed", "Running"), "pp placed")
    placement = placed["status"]["placement"]
    uuids = [gpu["uuid"] for gpu in placement["gpus"]]
    assert len(set(uuids)) == 4, placement
    assert placement["node"].startswith("h100"), placement
    engine = eventually(lambda: engine_container(apps_v1, namespace, "pp"), "pp's Deployment")
    args = list(engine.args)
    assert (flag(args, "--tensor-parallel-size"), flag(args, "--pipeline-parallel-size")) == ("2", "2"), args
    env = {item.name: item.value for item in engine.env or []}
    assert env["NVIDIA_VISIBLE_DEVICES"].split(",") == uuids
    assert get(custom_objects, namespace, "pp")["spec"]["pipelineParallelSize"] == 2
    assert operator.alive(), operator.logs()


def test_more_gpus_than_a_node_has_waits_with_a_reason(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    create(custom_objects, namespace, vllm("huge", tensorParallelSize=2, pipelineParallelSize=8))
    pending = eventually(lambda: phase_is(custom_objects, namespace, "huge", "Pending", "Failed"), "huge decided")
    assert pending["status"]["phase"] == "Pending", pending["status"]
    placed = condition(pending, "Placed")
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", "TensorParallelTooLarge")
    assert "needs 16 GPUs on one node" in placed["message"], placed
    assert operator.alive(), operator.logs()


def test_an_embedding_server_is_budgeted_without_the_lm_head(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, core_v1: client.CoreV1Api
) -> None:
    # Before: --task embed changed nothing: the LM head (151,665 x 4,096 bf16) was counted in the weights.
    config = {k: v for k, v in json.loads(EMBEDDING_CONFIG.read_text()).items() if not k.startswith("_")}
    body: Any = {"metadata": {"name": "qwen3-embedding"}, "data": {"config.json": json.dumps(config)}}
    core_v1.create_namespaced_config_map(namespace, body)
    model = {"name": "Qwen/Qwen3-Embedding-8B", "configMapRef": {"name": "qwen3-embedding"}}
    create(custom_objects, namespace, vllm("chat", model=model))
    create(custom_objects, namespace, vllm("embed", model=model, args=["--task", "embed"]))
    weights = {}
    for name in ("chat", "embed"):
        placed = eventually(lambda n=name: phase_is(custom_objects, namespace, n, "Placed", "Running"), f"{name}")
        weights[name] = placed["status"]["estimate"]["weightsMiB"]
    lm_head_mib = 151665 * 4096 * 2 / 2**20
    assert weights["chat"] - weights["embed"] == pytest.approx(lm_head_mib, abs=0.2), weights
    assert operator.alive(), operator.logs()
