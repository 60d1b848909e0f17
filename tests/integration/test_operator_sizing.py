"""What sizing tells the operator, on the real control plane: no room is a reason to wait, never a failed spec;
a spec vLLM refuses whatever the fleet (maxModelLen beyond the model's context, a model of unknown size) is a
spec error naming its field; an engine version the memory model does not know is a warning in status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    MARGIN_MIB,
    Operator,
    condition,
    create,
    eventually,
    get,
    gpu_node_status,
    phase_is,
    publish,
    reports_restored,
    start_operator,
    vllm_server,
)

from localcluster import FakeNode

pytestmark = pytest.mark.integration

# Left free on every GPU after the margin: under 1% of the smallest GPU, so the fit found no utilization.
LEFT_MIB = 30


def held_by_another_service(node: FakeNode, first_pid: int, spare_mib: int | None = None) -> dict[int, Any]:
    """Each GPU of the node (but those of spare_mib total) held by a foreign process, LEFT_MIB past the margin."""
    return {
        index: [{"pid": first_pid + index, "name": "other-service", "usedMiB": gpu.memory_mib - MARGIN_MIB - LEFT_MIB}]
        for index, gpu in enumerate(node.gpus)
        if gpu.memory_mib != spare_mib
    }


@pytest.fixture
def full_fleet(
    gpu_fleet: list[FakeNode],
    custom_objects: client.CustomObjectsApi,
) -> Iterator[list[FakeNode]]:
    """Every GPU held by a foreign process but LEFT_MIB past the margin; the agents' plain reports after."""
    with reports_restored(custom_objects, gpu_fleet):
        for node in gpu_fleet:
            publish(custom_objects, node, gpu_node_status(node, processes=held_by_another_service(node, 4000)))
        yield gpu_fleet


@pytest.fixture
def operator_on_full_fleet(
    kubeconfig: Path, namespace: str, tmp_path: Path, full_fleet: list[FakeNode]
) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path)


def test_no_room_anywhere_is_pending_for_memory_not_a_failed_spec(
    operator_on_full_fleet: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    # Before: Failed, Estimated=False InvalidSpec "utilization 0.0 must be in (0, 1]", permanently.
    create(custom_objects, namespace, vllm_server("auto", maxModelLen=4096))
    decided = eventually(lambda: phase_is(custom_objects, namespace, "auto", "Pending", "Failed"), "decided")
    assert decided["status"]["phase"] == "Pending", decided["status"]
    placed = condition(decided, "Placed")
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", "InsufficientMemory")
    assert "per GPU" in placed["message"] and f"the most free is {LEFT_MIB}MiB" in placed["message"]
    estimated = condition(decided, "Estimated")
    assert estimated is None or estimated["status"] == "True", estimated
    assert operator_on_full_fleet.alive(), operator_on_full_fleet.logs()


def test_max_model_len_beyond_the_models_context_is_a_spec_error(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, apps_v1: client.AppsV1Api
) -> None:
    # Before: sized as a 200k-token KV cache (placed, or InsufficientMemory): vLLM itself refuses to start.
    create(custom_objects, namespace, vllm_server("too-long", maxModelLen=200_000))
    failed = eventually(lambda: phase_is(custom_objects, namespace, "too-long", "Failed"), "too-long Failed")
    estimated = condition(failed, "Estimated")
    assert estimated is not None and estimated["status"] == "False"
    assert "maxModelLen 200000 exceeds the model's context (32768)" in estimated["message"]
    assert (failed["status"].get("placement"), apps_v1.list_namespaced_deployment(namespace).items) == (None, [])
    assert operator.alive(), operator.logs()


def test_a_gguf_of_unknown_size_is_a_spec_error_naming_weights_mib(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    # Before: silently budgeted as a 7B model.
    body = vllm_server("unsized")
    body["spec"] |= {"engine": "llamacpp", "image": "ghcr.io/ggml-org/llama.cpp:server-cuda"}
    body["spec"]["model"] = {"name": "my-org/finetune-Q4_K_M.gguf"}
    create(custom_objects, namespace, body)
    failed = eventually(lambda: phase_is(custom_objects, namespace, "unsized", "Failed"), "unsized Failed")
    estimated = condition(failed, "Estimated")
    assert estimated is not None and estimated["status"] == "False"
    assert "model.weightsMiB" in estimated["message"]
    assert operator.alive(), operator.logs()


def test_an_engine_version_the_model_does_not_know_is_a_warning_in_status(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    # Before: accepted silently, sized with whatever behaviour the newest facts give.
    create(custom_objects, namespace, vllm_server("future", maxModelLen=4096, engineVersion="9.9.9"))
    placed = eventually(lambda: phase_is(custom_objects, namespace, "future", "Placed", "Running"), "future placed")
    warnings = placed["status"].get("warnings", [])
    assert any("engineVersion 9.9.9" in w and "assuming 0.33 behaviour" in w for w in warnings), warnings
    create(custom_objects, namespace, vllm_server("known", maxModelLen=4096, engineVersion="0.19.0"))
    known = eventually(lambda: phase_is(custom_objects, namespace, "known", "Placed", "Running"), "known placed")
    assert not any("engineVersion" in w for w in get(custom_objects, namespace, "known")["status"].get("warnings", []))
    assert known["status"]["placement"]
    assert operator.alive(), operator.logs()


# The 12 GB production report at half the scale of a 24 GB card: Qwen2.5-7B-Instruct AWQ at 2048 tokens failed
# with 0.40 x 12288 MiB ("No available memory for the cache blocks") and ran with 0.50 x 12288 MiB = 6144 MiB
# ("GPU KV cache size: 6,976 tokens"). On the 24564 MiB RTX A5500 (also below vLLM's 70 GiB large-GPU class),
# 0.25 gives the same 6141 MiB and 0.20 the same 4913 MiB.
AWQ_7B = {"name": "Qwen/Qwen2.5-7B-Instruct-AWQ", "quantization": "awq"}


@pytest.fixture
def only_the_a5500_free(
    gpu_fleet: list[FakeNode],
    custom_objects: client.CustomObjectsApi,
) -> Iterator[list[FakeNode]]:
    """Every GPU but the workstation's 24 GB RTX A5500 held by a foreign process; plain reports after."""
    with reports_restored(custom_objects, gpu_fleet):
        for node in gpu_fleet:
            held = held_by_another_service(node, 5000, spare_mib=24564)
            publish(custom_objects, node, gpu_node_status(node, processes=held))
        yield gpu_fleet


@pytest.fixture
def operator_with_one_free_gpu(
    kubeconfig: Path, namespace: str, tmp_path: Path, only_the_a5500_free: list[FakeNode]
) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path)


def test_the_12gb_production_case_is_sized_as_vllm_ran_it(
    operator_with_one_free_gpu: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    # Before: the half budget was predicted to fail (571 MiB of sampler warm-up over 256 x 152,064 logits).
    common: dict[str, Any] = {
        "model": AWQ_7B,
        "maxModelLen": 2048,
        "engineVersion": "0.10.1",
        "image": "vllm/vllm-openai:v0.10.1.1",
    }
    create(custom_objects, namespace, vllm_server("half", **common, gpuMemoryUtilization=0.25))
    create(custom_objects, namespace, vllm_server("less", **common, gpuMemoryUtilization=0.20))
    ran = eventually(lambda: phase_is(custom_objects, namespace, "half", "Placed", "Running"), "half placed")
    estimate = ran["status"]["estimate"]
    assert estimate["kvCacheTokens"] == pytest.approx(6976, rel=0.15), estimate
    assert estimate["kvBytesPerToken"] == 57344
    (gpu,) = ran["status"]["placement"]["gpus"]
    assert gpu["totalMiB"] == 24564
    failed = eventually(lambda: phase_is(custom_objects, namespace, "less", "Pending", "Failed"), "less decided")
    placed = condition(failed, "Placed")
    assert placed is not None and placed["status"] == "False"
    assert "No available memory for the cache blocks" in placed["message"], placed
    assert operator_with_one_free_gpu.alive(), operator_with_one_free_gpu.logs()
