"""The fleet facade: sizing + placement + fitting each engine to its GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api import GpuNode, InferenceServer
from vram_operator.fleet import decide

QWEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/model-configs/Qwen__Qwen2.5-7B-Instruct.json").read_text()
)
CONFIG_MAPS = {("ai", "qwen"): {"config.json": json.dumps(QWEN)}}


def node(name: str, *gpus: tuple[str, float, float]) -> GpuNode:
    """A GpuNode with (product, total MiB, foreign MiB) per GPU."""
    return GpuNode.model_validate(
        {
            "kind": "GpuNode",
            "metadata": {"name": name},
            "status": {
                "gpus": [
                    {
                        "index": i,
                        "uuid": f"GPU-{name}-{i}",
                        "name": product,
                        "memoryTotalMiB": total,
                        "memoryUsedMiB": foreign,
                        "memoryFreeMiB": total - foreign,
                        "processes": [{"pid": 100 + i, "name": "desktop", "usedMiB": foreign}] if foreign else [],
                    }
                    for i, (product, total, foreign) in enumerate(gpus)
                ]
            },
        }
    )


def server(name: str, **spec: Any) -> InferenceServer:
    return InferenceServer.model_validate(
        {"kind": "InferenceServer", "metadata": {"name": name, "namespace": "ai"}, "spec": {"image": "img", **spec}}
    )


def qwen(name: str, **spec: Any) -> InferenceServer:
    base: dict[str, Any] = {"model": {"name": "Qwen/Qwen2.5-7B-Instruct", "configMapRef": {"name": "qwen"}}}
    return server(name, engine="vllm", maxModelLen=8192, **(base | spec))


def test_auto_utilization_stays_within_the_reserved_budget() -> None:
    decision = decide([qwen("llm")], [node("n", ("NVIDIA RTX A5500", 24564, 1200))], config_maps=CONFIG_MAPS)
    llm = decision.servers["ai/llm"]
    assert llm.placement is not None and llm.gpu_memory_utilization is not None
    assert llm.utilization_mode == "auto"
    assert llm.fits, llm.fit_message
    assert llm.gpu_memory_utilization * 24564 <= llm.placement.budget_mib
    assert llm.estimate is not None and llm.estimate.kv_cache_tokens >= 8192


def test_manual_utilization_below_the_kv_floor_is_not_placed_and_says_what_the_engine_would_do() -> None:
    decision = decide(
        [qwen("llm", gpuMemoryUtilization=0.40, model={"name": "q", "configMapRef": {"name": "qwen"}})],
        [node("n", ("NVIDIA GeForce RTX 3060", 12288, 0))],
        config_maps=CONFIG_MAPS,
        strategy="VRAMBased",
    )
    llm = decision.servers["ai/llm"]
    assert llm.placement is None  # a placement whose fit check fails is not a placement
    assert llm.unplaced_reason == "InsufficientMemory"
    assert "No available memory for the cache blocks" in (llm.unplaced_message or "")
    assert llm.gpu_memory_utilization == 0.40
    assert not llm.fits
    assert llm.fit_reason in {"NoCacheBlocks", "MaxModelLenTooLarge"}


def test_sizing_errors_are_reported_per_server_not_raised() -> None:
    decision = decide(
        [qwen("broken", model={"name": "q", "configMapRef": {"name": "missing"}}), server("yolo", engine="generic",
                                                                                         vramBudget="650Mi")],
        [node("n", ("NVIDIA L4", 23034, 0))],
        config_maps=CONFIG_MAPS,
    )  # fmt: skip
    assert decision.servers["ai/broken"].sizing_error is not None
    assert "ConfigMap ai/missing not found" in (decision.servers["ai/broken"].sizing_error or "")
    assert decision.servers["ai/yolo"].placement is not None


def test_reserved_servers_keep_their_gpus() -> None:
    fleet = [node("n", ("NVIDIA L4", 23034, 0), ("NVIDIA L4", 23034, 0))]
    first = decide([server("a", engine="generic", vramBudget="20Gi")], fleet)
    placed = server("a", engine="generic", vramBudget="20Gi").model_copy(
        update={"status": InferenceServer.model_validate(
            {"kind": "InferenceServer", "metadata": {"name": "a", "namespace": "ai"},
             "spec": {"engine": "generic", "image": "i", "vramBudget": "20Gi"},
             "status": {"placement": first.servers["ai/a"].placement.wire()}}  # type: ignore[union-attr]
        ).status}
    )  # fmt: skip
    second = decide([server("b", engine="generic", vramBudget="20Gi")], fleet, reserved=[placed])
    a_gpu = first.servers["ai/a"].placement.gpus[0].uuid  # type: ignore[union-attr]
    b_place = second.servers["ai/b"].placement
    assert b_place is not None
    assert b_place.gpus[0].uuid != a_gpu


budgets = st.lists(st.integers(min_value=200, max_value=30_000), min_size=1, max_size=12)
fleets = st.lists(
    st.tuples(st.sampled_from([4094, 12288, 24564, 81559]), st.integers(min_value=0, max_value=2000)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(budgets, fleets)
def test_no_gpu_is_over_committed(sizes: list[int], gpus: list[tuple[int, int]]) -> None:
    nodes = [node("n", *[("GPU", float(total), float(min(foreign, total - 1))) for total, foreign in gpus])]
    servers = [server(f"s{i}", engine="generic", vramBudget=f"{size}Mi") for i, size in enumerate(sizes)]
    decision = decide(servers, nodes, margin_mib=256)
    for gpu in decision.plan.gpus:
        assert gpu.reserved_mib + gpu.foreign_mib + 256 <= gpu.total_mib + 1e-6
    for key in (s.key for s in servers):
        d = decision.servers[key]
        assert (d.placement is None) == (d.unplaced_reason is not None)


def test_llamacpp_launch_is_fitted_to_its_gpu() -> None:
    arch = {"numLayers": 32, "numKVHeads": 8, "headDim": 128, "hiddenSize": 4096, "vocabSize": 128256,
            "intermediateSize": 14336, "paramsB": 8.0}  # fmt: skip
    llm = server("llm", engine="llamacpp", model={"name": "llama", "architecture": arch, "weightsMiB": 4700},
                 maxModelLen=8192)  # fmt: skip
    decision = decide([llm], [node("n", ("NVIDIA RTX A5500", 24564, 0))]).servers["ai/llm"]
    launch = decision.llamacpp_launch
    assert launch is not None
    assert launch.n_gpu_layers == 33  # every layer and the output layer
    assert launch.context_length == 8192


def test_auto_utilization_is_explained_with_a_tier() -> None:
    decision = decide([qwen("llm")], [node("n", ("NVIDIA L40S", 46068, 600))], config_maps=CONFIG_MAPS)
    llm = decision.servers["ai/llm"]
    assert llm.utilization_tier == "standard"
    assert any("KV floor" in line for line in llm.utilization_explanation)
    assert llm.placement is not None and llm.gpu_memory_utilization is not None
    assert llm.gpu_memory_utilization * 46068 <= llm.placement.budget_mib
