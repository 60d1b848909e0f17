"""Measured beats predicted: records of what engines used, and placements sized from them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api import GpuNode, InferenceServer
from vram_operator.decide import decide
from vram_operator.sizing.measured import (
    MeasuredRun,
    read_records,
    record_name,
    run_on,
    settings_key,
    with_record,
)

QWEN = (Path(__file__).resolve().parents[2] / "fixtures/model-configs/Qwen__Qwen2.5-7B-Instruct.json").read_text()
CONFIG_MAPS = {("ai", "qwen"): {"config.json": QWEN}}
A5500, A5500_MIB = "NVIDIA RTX A5500", 24564.0
L40S, L40S_MIB = "NVIDIA L40S", 46068.0


def gpu_node(name: str, product: str, total: float) -> GpuNode:
    return GpuNode.model_validate(
        {
            "kind": "GpuNode",
            "metadata": {"name": name},
            "status": {
                "gpus": [
                    {"index": 0, "uuid": f"GPU-{name}", "name": product, "memoryTotalMiB": total,
                     "memoryUsedMiB": 0, "memoryFreeMiB": total}
                ]
            },
        }
    )  # fmt: skip


def qwen(name: str, **spec: Any) -> InferenceServer:
    body = {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.11.0",
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct", "configMapRef": {"name": "qwen"}},
        "maxModelLen": 8192,
    }
    return InferenceServer.model_validate(
        {"kind": "InferenceServer", "metadata": {"name": name, "namespace": "ai"}, "spec": body | spec}
    )


def run_of(server: InferenceServer, **changes: Any) -> MeasuredRun:
    run = MeasuredRun(
        settings=settings_key(server.spec),
        gpu_product=A5500,
        gpu_total_mib=A5500_MIB,
        budget_mib=19_900.0,
        utilization=0.81,
        weights_mib=14_600.0,
        kv_cache_mib=3_100.0,
        kv_cache_tokens=58_000,
        max_concurrency=7.08,
        engine_version="0.11.0",
        server="ai/first",
        measured_at="2026-11-30T20:00:00Z",
    )
    return dataclasses.replace(run, **changes)


def test_settings_that_change_memory_change_the_key_and_the_namespace_and_name_do_not() -> None:
    first = settings_key(qwen("a").spec)
    assert settings_key(qwen("b").spec) == first
    changes: list[dict[str, Any]] = [
        {"maxModelLen": 4096},
        {"tensorParallelSize": 2},
        {"kvCacheDtype": "fp8"},
        {"image": "vllm/vllm-openai:v0.12.0"},
        {"maxNumSeqs": 8},
        {"gpuMemoryUtilization": 0.7},
    ]
    for change in changes:
        assert settings_key(qwen("a", **change).spec) != first, change


def test_a_record_round_trips_and_a_bad_one_is_ignored() -> None:
    run = run_of(qwen("a"))
    assert MeasuredRun.from_json(run.to_json()) == run
    assert MeasuredRun.from_json("{not json") is None
    assert MeasuredRun.from_json(json.dumps({"settings": "x"})) is None
    negative = json.loads(run.to_json()) | {"budget_mib": -1.0}
    assert MeasuredRun.from_json(json.dumps(negative)) is None
    records = read_records({run.name: run.to_json(), "run-other": run.to_json(), "junk": "{}"})
    assert records == {run.settings: [run]}  # a record filed under another name is not trusted


def test_record_names_are_config_map_keys_per_settings_and_product() -> None:
    name = record_name(settings_key(qwen("a").spec), A5500)
    assert name.startswith("run-") and len(name) <= 253 and name.replace("-", "").isalnum()
    assert name != record_name(settings_key(qwen("a").spec), L40S)


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=10))
def test_records_are_bounded_and_the_newest_is_kept(count: int, limit: int) -> None:
    data: dict[str, str] = {}
    server = qwen("a")
    for i in range(count):
        run = run_of(server, gpu_product=f"GPU {i}", measured_at=f"2026-11-30T20:{i:02d}:00Z")
        data = with_record(data, run, limit)
        assert run.name in data
    assert len(data) == min(count, limit)


def test_a_run_is_used_only_on_its_product_and_size() -> None:
    run = run_of(qwen("a"))
    assert run_on([run], A5500, A5500_MIB) == run
    assert run_on([run], A5500, 20_000.0) is None
    assert run_on([run], L40S, L40S_MIB) is None


def test_a_second_server_of_the_same_model_gets_exactly_what_the_first_used() -> None:
    first = qwen("first")
    run = run_of(first)
    second = qwen("second")
    measured = {run.settings: [run]}
    decision = decide([second], [gpu_node("ws", A5500, A5500_MIB)], config_maps=CONFIG_MAPS, measured=measured)
    placed = decision.servers["ai/second"]
    assert placed.placement is not None and placed.estimate is not None
    assert placed.placement.budget_mib == run.budget_mib
    assert placed.gpu_memory_utilization == run.utilization
    assert placed.estimate.source == "measured"
    assert (placed.estimate.weights_mib, placed.estimate.kv_cache_tokens) == (run.weights_mib, run.kv_cache_tokens)
    assert "sized from a measured run of ai/first on NVIDIA RTX A5500" in placed.fit_message
    predicted = decide([second], [gpu_node("ws", A5500, A5500_MIB)], config_maps=CONFIG_MAPS).servers["ai/second"]
    assert predicted.estimate is not None and predicted.estimate.source != "measured"


def test_other_settings_or_another_gpu_product_are_sized_by_the_model() -> None:
    run = run_of(qwen("first"))
    other = decide(
        [qwen("short", maxModelLen=4096)],
        [gpu_node("ws", A5500, A5500_MIB)],
        config_maps=CONFIG_MAPS,
        measured={run.settings: [run]},
    ).servers["ai/short"]
    assert other.estimate is not None and other.estimate.source != "measured"
    elsewhere = decide(
        [qwen("second")], [gpu_node("big", L40S, L40S_MIB)], config_maps=CONFIG_MAPS, measured={run.settings: [run]}
    ).servers["ai/second"]
    assert elsewhere.estimate is not None and elsewhere.estimate.source != "measured"
    assert elsewhere.placement is not None and elsewhere.placement.budget_mib == run.budget_mib


def test_a_gpu_too_small_for_the_measured_budget_shrinks_to_what_the_model_allows() -> None:
    run = run_of(qwen("first"), budget_mib=22_000.0, utilization=0.89)
    crowded = GpuNode.model_validate(
        {"kind": "GpuNode", "metadata": {"name": "ws"},
         "status": {"gpus": [{"index": 0, "uuid": "GPU-ws", "name": A5500, "memoryTotalMiB": A5500_MIB,
                              "memoryUsedMiB": 4000, "memoryFreeMiB": A5500_MIB - 4000,
                              "processes": [{"pid": 7, "name": "desktop", "usedMiB": 4000}]}]}}
    )  # fmt: skip
    placed = decide([qwen("second")], [crowded], config_maps=CONFIG_MAPS, measured={run.settings: [run]})
    second = placed.servers["ai/second"]
    assert second.placement is not None and second.placement.budget_mib < run.budget_mib
    assert second.estimate is not None and second.estimate.source != "measured"  # the model fits what is left
    assert second.gpu_memory_utilization is not None
    assert second.gpu_memory_utilization * A5500_MIB <= second.placement.budget_mib
