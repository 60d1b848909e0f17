"""The engine's own report read back from its pod's log (served by KWOK from the simulated runtime's
engines) on a real control plane: status.engineReport, EstimateAccurate, and the next server of the same
model sized from the measured run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    SMALL_MODEL,
    Operator,
    Twin,
    condition,
    create,
    eventually,
    get,
    start_operator,
    vllm_server,
)

from localcluster.fleet import FakeNode
from vram_operator.controller.measured_runs import MEASURED_RUNS_CONFIG_MAP
from vram_operator.simulate.engines import Perturbation

pytestmark = pytest.mark.integration

TWIN_SEED = 3  # read by the gpu_twin fixture: Qwen2.5-0.5B really loads 1.9% more weights than predicted
THRESHOLD = 0.01


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode]) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path, "--estimate-error-threshold", str(THRESHOLD))


def qwen(name: str, gpu: int) -> dict[str, Any]:
    return vllm_server(name, image="vllm/vllm-openai", maxModelLen=4096, placement={"node": "h100-0", "gpus": [gpu]})


def reported(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    obj = get(custom, namespace, name)
    status = obj.get("status") or {}
    return obj if status.get("engineReport") and status.get("memory") and condition(obj, "EstimateAccurate") else None


def running_truth(twin: Twin, namespace: str, server: str) -> dict[str, Any]:
    pods = [p for p in twin.wait_tick()["pods"].values() if p["namespace"] == namespace and p["server"] == server]
    assert len(pods) == 1 and pods[0]["state"] == "Running"
    return pods[0]


def test_the_engines_report_is_read_back_and_the_estimate_found_off(
    operator: Operator,
    gpu_twin: Twin,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
) -> None:
    weights_factor, _ = Perturbation(seed=TWIN_SEED).factors(f"vllm/{SMALL_MODEL}//auto")
    assert abs(weights_factor - 1) > THRESHOLD  # the twin's vLLM loads more than the estimate says
    create(custom_objects, namespace, qwen("chat", 0))
    obj = eventually(lambda: reported(custom_objects, namespace, "chat"), "engineReport and EstimateAccurate")
    status = obj["status"]
    report, estimate = status["engineReport"], status["estimate"]
    (pod,) = core_v1.list_namespaced_pod(namespace, label_selector="vram.dev/server=chat").items
    assert report["pod"] == pod.metadata.name and report["reportedAt"]
    assert report["engineVersion"]
    # What the twin's engine printed: the model's weights with the twin's error, read from the pod's log.
    assert report["weightsMiB"] == pytest.approx(estimate["weightsMiB"] * weights_factor, abs=0.2)
    assert report["kvCacheTokens"] > 0 and report["kvCacheMiB"] > 0 and report["maxConcurrency"] > 0
    accurate = condition(obj, "EstimateAccurate")
    assert accurate is not None and (accurate["status"], accurate["reason"]) == ("False", "EstimateOff")
    assert "estimated" in accurate["message"] and "the engine reported" in accurate["message"]
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=chat").items
    assert [e.reason for e in events].count("EstimateOff") == 1
    log = core_v1.read_namespaced_pod_log(pod.metadata.name, namespace, limit_bytes=4096)
    assert "Model loading took" in log and "GPU KV cache size" in log  # what the operator read


def test_a_second_server_of_the_model_gets_exactly_what_the_first_used(
    operator: Operator,
    gpu_twin: Twin,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
) -> None:
    create(custom_objects, namespace, qwen("first", 1))
    first = eventually(lambda: reported(custom_objects, namespace, "first"), "the first server's report")["status"]
    assert first["estimate"]["source"] != "measured"

    def record() -> dict[str, Any] | None:
        try:
            found = core_v1.read_namespaced_config_map(MEASURED_RUNS_CONFIG_MAP, namespace)
        except client.ApiException:
            return None
        runs = [json.loads(text) for text in (found.data or {}).values()]
        return runs[0] if len(runs) == 1 else None

    run = eventually(record, "the measured run kept")
    assert run["server"] == f"{namespace}/first" and run["kv_cache_tokens"] == first["engineReport"]["kvCacheTokens"]
    truth_first = running_truth(gpu_twin, namespace, "first")
    (first_used,) = truth_first["usedMiB"].values()
    assert run["budget_mib"] == pytest.approx(max(first["placement"]["budgetMiB"], first_used), abs=0.1)

    create(custom_objects, namespace, qwen("second", 2))
    second = eventually(lambda: reported(custom_objects, namespace, "second"), "the second server's report")
    status = second["status"]
    assert status["estimate"]["source"] == "measured"
    assert status["placement"]["budgetMiB"] == pytest.approx(run["budget_mib"], abs=0.1)
    assert status["gpuMemoryUtilization"] == first["gpuMemoryUtilization"]
    assert status["estimate"]["kvCacheTokens"] == run["kv_cache_tokens"]
    estimated = condition(second, "Estimated")
    assert estimated is not None and estimated["message"].startswith(f"sized from a measured run of {namespace}/first")
    placed = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=second").items
    assert any(e.reason == "Placed" and "sized from a measured run" in e.message for e in placed)
    # The same engine, the same memory: what the twin's second engine holds is what the first one held.
    (second_used,) = running_truth(gpu_twin, namespace, "second")["usedMiB"].values()
    assert second_used == pytest.approx(first_used, abs=0.01)
    accurate = condition(second, "EstimateAccurate")
    assert accurate is not None and accurate["status"] == "True"  # measured: nothing is off any more
