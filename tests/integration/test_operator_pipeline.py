"""Pipeline parallel on the real control plane: a PP 2 x TP 2 server is placed on four GPUs of one node
with both parallel flags; one needing more GPUs than any node has waits with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from operator_harness import Operator, condition, create, eventually, get, phase_is, vllm_server

pytestmark = pytest.mark.integration


def vllm(name: str, **spec: Any) -> dict[str, Any]:
    """A server of the harness's small model (24 layers, 14 heads, 2 KV heads)."""
    return vllm_server(name, maxModelLen=4096, **spec)


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
