"""The operator against the simulated GPU runtime (`vram-operator simulate`): engines that really start,
take memory and crash on the fake nodes, on a real control plane."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from operator_harness import GROUP, VERSION, Operator, Twin, condition, create, eventually, generic, get

from localcluster.fleet import fake_gpu_uuid

pytestmark = pytest.mark.integration

DESKTOP = [{"pid": 1873, "name": "Xorg", "usedMiB": 356}, {"pid": 2410, "name": "gnome-shell", "usedMiB": 92}]


def qwen(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": name},
        "spec": {
            "engine": "vllm",
            "image": "vllm/vllm-openai",
            "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
            "maxModelLen": 4096,
            **spec,
        },
    }


def workstation_gpu0(twin: Twin) -> tuple[str, str]:
    """The workstation's RTX A5500 (24564 MiB), as the twin sees it."""
    node = "workstation"
    uuid = fake_gpu_uuid(node, 0)
    assert twin.wait_tick()["gpus"][uuid]["totalMiB"] == 24564
    return node, uuid


def processes_of(custom: client.CustomObjectsApi, node: str, uuid: str) -> list[dict[str, Any]]:
    found: dict[str, Any] = custom.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node)
    gpu = next((g for g in (found.get("status") or {}).get("gpus", []) if g["uuid"] == uuid), {})
    return list(gpu.get("processes", []))


def pods_of(core: client.CoreV1Api, namespace: str, server: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"vram.dev/server={server}").items)


def test_a_server_added_later_is_started_and_measured(
    operator: Operator,
    gpu_twin: Twin,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
) -> None:
    node, uuid = workstation_gpu0(gpu_twin)
    gpu_twin.set_faults({"nodes": {node: {"gpus": {0: {"processes": DESKTOP}}}}})
    gpu_twin.wait_tick()
    body = qwen("chat", placement={"node": node, "gpus": [0]})
    create(custom_objects, namespace, body)

    measured = eventually(
        lambda: (get(custom_objects, namespace, "chat").get("status") or {}).get("memory"), "measured memory"
    )
    pods = pods_of(core_v1, namespace, "chat")
    assert len(pods) == 1
    uid = pods[0].metadata.uid
    truth = gpu_twin.wait_tick()["pods"][uid]
    assert truth["state"] == "Running" and truth["gpus"] == [uuid]
    # The operator measured what the engine really holds, attributed by pod UID on the agent's data.
    assert measured["usedMiB"] == pytest.approx(truth["usedMiB"][uuid], abs=0.01)
    assert measured["display"].startswith(f"Memory: {round(truth['usedMiB'][uuid])}MiB / 24564MiB")
    ours = [p for p in processes_of(custom_objects, node, uuid) if p.get("podUID") == uid]
    assert [(p["podNamespace"], p["podName"]) for p in ours] == [(namespace, pods[0].metadata.name)]
    foreign = {p.get("name") for p in processes_of(custom_objects, node, uuid) if not p.get("podUID")}
    assert foreign == {"Xorg", "gnome-shell"}

    # The pod goes: so does its process.
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "chat")
    eventually(
        lambda: not any(p.get("podUID") == uid for p in processes_of(custom_objects, node, uuid)),
        "the engine's process to disappear",
    )


def test_a_startup_failure_crash_loops_and_the_operator_lowers_utilization(
    operator: Operator,
    gpu_twin: Twin,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
) -> None:
    node, uuid = workstation_gpu0(gpu_twin)
    gpu_twin.set_faults({"nodes": {node: {"gpus": {0: {"processes": DESKTOP}}}}})
    gpu_twin.wait_tick()
    # A foreign process takes 4 GiB between two polls of the agent: the operator places on the last
    # report, where 0.9 x 24564 MiB still fitted; vLLM finds less free when it starts.
    blender = {"pid": 7777, "name": "blender", "usedMiB": 4096}
    gpu_twin.set_faults({"nodes": {node: {"agentStalled": True, "gpus": {0: {"processes": [*DESKTOP, blender]}}}}})
    gpu_twin.wait_tick()
    create(custom_objects, namespace, qwen("manual", gpuMemoryUtilization=0.9, placement={"node": node, "gpus": [0]}))

    def crashed() -> dict[str, Any] | None:
        obj = get(custom_objects, namespace, "manual")
        degraded = condition(obj, "Degraded")
        return obj if degraded and degraded["reason"] == "StartupFreeMemory" else None

    degraded = condition(eventually(crashed, "Degraded/StartupFreeMemory", timeout=120), "Degraded")
    assert degraded is not None
    assert "Free memory on device cuda:0" in degraded["message"]
    assert "is less than desired GPU memory utilization (0.9," in degraded["message"]

    def running_lower() -> dict[str, Any] | None:
        obj = get(custom_objects, namespace, "manual")
        status = obj.get("status") or {}
        return obj if status.get("phase") == "Running" and (status.get("gpuMemoryUtilization") or 1) < 0.9 else None

    fixed = eventually(running_lower, "the corrected server running", timeout=120)
    utilization = fixed["status"]["gpuMemoryUtilization"]
    truth = gpu_twin.wait_tick()
    running = [p for p in truth["pods"].values() if p["namespace"] == namespace and p["state"] == "Running"]
    assert len(running) == 1
    assert running[0]["reservedMiB"][uuid] == pytest.approx(utilization * 24564, abs=0.5)
    free_for_it = 24564 - (356 + 92 + 4096)
    assert running[0]["reservedMiB"][uuid] <= free_for_it


def test_a_generic_server_that_lies_is_measured_above_its_budget(
    operator: Operator,
    gpu_twin: Twin,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
) -> None:
    node, _ = workstation_gpu0(gpu_twin)
    gpu_twin.set_faults({"servers": {f"{namespace}/liar": {"trueFootprintMiB": 3000}}})
    body = generic("liar", "2Gi")
    body["spec"]["placement"] = {"node": node, "gpus": [0]}
    create(custom_objects, namespace, body)

    def above() -> dict[str, Any] | None:
        fits = condition(get(custom_objects, namespace, "liar"), "MemoryFits")
        return fits if fits and fits["reason"] == "MeasuredAboveBudget" else None

    fits = eventually(above, "MemoryFits=False/MeasuredAboveBudget")
    assert fits["status"] == "False"
    assert fits["message"] == "measured 3000MiB above the 2048MiB budget"
