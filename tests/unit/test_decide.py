"""The fleet facade: sizing + placement + fitting each engine to its GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api import GpuNode, InferenceServer
from vram_operator.decide import decide
from vram_operator.placement.demand import ManualAssignment
from vram_operator.sizing.server import size_server

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
    return server(name, engine="vllm", **({"maxModelLen": 8192} | base | spec))


def test_auto_utilization_stays_within_the_reserved_budget() -> None:
    decision = decide([qwen("llm")], [node("n", ("NVIDIA RTX A5500", 24564, 1200))], config_maps=CONFIG_MAPS)
    llm = decision.servers["ai/llm"]
    assert llm.placement is not None and llm.gpu_memory_utilization is not None
    assert llm.utilization_mode == "auto"
    assert llm.fits, llm.fit_message
    # The budget holds vLLM's share and the CUDA graphs 0.19 captures beyond it.
    spec = qwen("llm").spec
    sizing = size_server(spec, json.loads(CONFIG_MAPS[("ai", "qwen")]["config.json"]), gpu_total_mib=24564)
    graphs = sizing.beyond_share_mib
    assert graphs > 0
    assert llm.gpu_memory_utilization * 24564 + graphs <= llm.placement.budget_mib
    assert llm.estimate is not None
    assert llm.estimate.total_mib == pytest.approx(llm.gpu_memory_utilization * 24564 + graphs, abs=0.1)
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
    # Refused, it still says its hand-set value is unusual (the warning a placed 0.40 gets).
    assert llm.warnings == ("gpuMemoryUtilization 0.4 is outside the usual 0.5-0.95",)


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


# --- no room is never a spec error ----------------------------------------------------------

A400 = ("NVIDIA RTX A400", 4094.0)


def qwen_small(name: str, **spec: Any) -> InferenceServer:
    return server(name, engine="vllm", model={"name": "Qwen/Qwen2.5-0.5B-Instruct"}, maxModelLen=4096, **spec)


@pytest.mark.parametrize("free", [0.0, 30.0, 40.0])
def test_a_full_gpu_leaves_a_vllm_server_unplaced_for_memory_not_failed(free: float) -> None:
    # Before: "utilization 0.0 must be in (0, 1]" raised out of decide when under 1% of the GPU was free
    # (40 MiB of 4094 is 0.0097): the operator reported InvalidSpec and failed the server for good.
    total = A400[1]
    nodes = [node("n", (A400[0], total, total - 256 - free))]
    decision = decide([qwen_small("q")], nodes, margin_mib=256).servers["ai/q"]
    assert decision.sizing_error is None and decision.sizing_field is None
    assert decision.placement is None
    assert decision.unplaced_reason == "InsufficientMemory"
    assert f"the most free is {free:.0f}MiB" in (decision.unplaced_message or "")
    # 4 MiB of rotary tables included; vLLM 0.19 captures 734 MiB of CUDA graphs (51 sizes x (5.9 + 0.34 x 25
    # pieces)) beyond its share: 1954 + 734 and 1810 + 734 MiB.
    assert "needs 2689MiB per GPU" in (decision.unplaced_message or "")
    assert decision.fit_reason == "InsufficientMemory"
    assert "vLLM needs 2545 MiB per GPU" in decision.fit_message
    assert "CUDA graphs 734 MiB beyond its utilization share" in decision.fit_message
    assert decision.estimate is not None and decision.estimate.total_mib == pytest.approx(2545, abs=1)


def test_room_for_one_hundredth_of_the_gpu_is_the_engine_failing_there_not_a_spec_error() -> None:
    # The first utilization vLLM can be given (0.01, 41 MiB) with its 734 MiB of CUDA graphs beyond it: the
    # engine's own failure, still not placed.
    total = A400[1]
    nodes = [node("n", (A400[0], total, total - 256 - 41 - 735))]
    decision = decide([qwen_small("q")], nodes, margin_mib=256).servers["ai/q"]
    assert (decision.sizing_error, decision.unplaced_reason) == (None, "InsufficientMemory")
    assert (decision.gpu_memory_utilization, decision.fit_reason) == (0.01, "NoCacheBlocks")


def test_a_manual_pin_on_a_gpu_smaller_than_the_model_is_no_placement() -> None:
    # Manual may over-commit, but vLLM needs 15.8 GB for one request: it can never start on a 4 GB GPU.
    pin = ManualAssignment(server="ai/big", node="n", gpus=("0",), budget_override_mib=None)
    decision = decide(
        [qwen("big")], [node("n", (*A400, 0.0))], strategy="Manual", manual=[pin], config_maps=CONFIG_MAPS
    )
    big = decision.servers["ai/big"]
    assert (big.sizing_error, big.placement, big.unplaced_reason) == (None, None, "InsufficientMemory")
    assert "n GPU 0" in (big.unplaced_message or "") and "vLLM needs" in (big.unplaced_message or "")
    # With 8 MiB of rotary tables, and 804 MiB of CUDA graphs (51 sizes x (5.9 + 0.34 x 29 pieces)) beyond the share.
    assert "vLLM needs 16612 MiB per GPU" in (big.unplaced_message or "")
    assert decision.plan.placements == ()
    assert [u.server for u in decision.plan.unplaced] == ["ai/big"]
    assert decision.plan.gpus[0].reserved_mib == 0 and decision.plan.gpus[0].servers == ()


SPECS = [
    {"engine": "vllm", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "maxModelLen": 4096},
    {"engine": "vllm", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "maxModelLen": 32768},
    {"engine": "vllm", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "gpuMemoryUtilization": 0.5},
    {"engine": "vllm", "model": {"name": "q", "configMapRef": {"name": "qwen"}}, "maxModelLen": 8192},
    {"engine": "vllm", "model": {"name": "q", "configMapRef": {"name": "qwen"}}, "tensorParallelSize": 2},
    {"engine": "vllm", "model": {"name": "q", "configMapRef": {"name": "qwen"}}, "gpuMemoryUtilization": 0.9},
    {"engine": "llamacpp", "model": {"name": "org/model-8B-Q4_K_M.gguf"}, "maxModelLen": 8192},
    {"engine": "generic", "vramBudget": "650Mi"},
]
# Share of a GPU used by others: nearly full (under 1% left after the margin, or nothing) three times in four.
nearly_full = st.sampled_from([0.93, 0.935, 0.96, 0.99, 1.0])
gpu_states = st.lists(
    st.tuples(
        st.sampled_from([4094, 12288, 24564, 46068, 81559]),
        st.one_of(nearly_full, nearly_full, nearly_full, st.floats(min_value=0.0, max_value=1.0)),
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(SPECS),
    gpu_states,
    st.lists(st.integers(min_value=100, max_value=40_000), max_size=4),
    st.sampled_from(["VRAMBased", "Balanced", "IsolationFirst"]),
)
def test_a_spec_that_sizes_on_an_empty_fleet_is_never_a_sizing_error_on_a_full_one(
    spec: dict[str, Any], gpus: list[tuple[int, float]], others: list[int], strategy: str
) -> None:
    """However full the same GPUs are (foreign memory, other servers), no room is a reason, not a spec error."""
    empty = [node("n", *[("NVIDIA GPU", float(total), 0.0) for total, _ in gpus])]
    full = [node("n", *[("NVIDIA GPU", float(total), round(total * share)) for total, share in gpus])]
    subject = server("subject", **spec)
    if decide([subject], empty, strategy=strategy, config_maps=CONFIG_MAPS).servers["ai/subject"].sizing_error:
        return
    fillers = [server(f"f{i}", engine="generic", vramBudget=f"{mib}Mi") for i, mib in enumerate(others)]
    decision = decide([*fillers, subject], full, strategy=strategy, config_maps=CONFIG_MAPS)
    for d in decision.servers.values():
        assert d.sizing_error is None, d.sizing_error
        assert (d.placement is None) == (d.unplaced_reason is not None)
        if d.placement is not None and d.utilization_mode is not None:
            assert d.gpu_memory_utilization is not None and 0 < d.gpu_memory_utilization <= 1


# --- spec errors and warnings of the engine model -------------------------------------------


def test_max_model_len_beyond_the_context_is_a_spec_error_not_insufficient_memory() -> None:
    # Qwen2.5-7B's context is 32768; before, 131072 came out as InsufficientMemory on every GPU.
    fleet = [node("n", ("NVIDIA H100 80GB HBM3", 81559, 0))]
    too_long = decide([qwen("llm", maxModelLen=131072)], fleet, config_maps=CONFIG_MAPS).servers["ai/llm"]
    assert (too_long.sizing_field, too_long.unplaced_reason) == ("maxModelLen", None)
    assert "maxModelLen 131072 exceeds the model's context (32768)" in (too_long.sizing_error or "")
    at_context = decide([qwen("llm", maxModelLen=32768)], fleet, config_maps=CONFIG_MAPS).servers["ai/llm"]
    assert at_context.sizing_error is None and at_context.placement is not None
    forced = qwen("llm", maxModelLen=32769, env=[{"name": "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "value": "1"}])
    assert decide([forced], fleet, config_maps=CONFIG_MAPS).servers["ai/llm"].sizing_error is None


def test_an_unknown_engine_version_is_a_warning_saying_what_is_assumed() -> None:
    fleet = [node("n", ("NVIDIA L40S", 46068, 0))]
    decision = decide([qwen("llm", engineVersion="9.9.9")], fleet, config_maps=CONFIG_MAPS).servers["ai/llm"]
    assert decision.placement is not None
    assert any("engineVersion 9.9.9" in w and "assuming 0.33 behaviour" in w for w in decision.warnings)
    known = decide([qwen("llm", engineVersion="0.21.0")], fleet, config_maps=CONFIG_MAPS).servers["ai/llm"]
    assert not any("engineVersion" in w for w in known.warnings)


def test_a_gguf_without_a_size_is_a_spec_error_naming_weights_mib() -> None:
    fleet = [node("n", ("NVIDIA L4", 23034, 0))]
    unsized = server("llm", engine="llamacpp", model={"name": "org/finetune-Q4_K_M.gguf"})
    decision = decide([unsized], fleet).servers["ai/llm"]
    assert decision.sizing_field == "model.weightsMiB"
    assert "nothing tells the size" in (decision.sizing_error or "")
    sized = server("llm", engine="llamacpp", model={"name": "org/finetune-Q4_K_M.gguf", "weightsMiB": 4700})
    assert decide([sized], fleet).servers["ai/llm"].placement is not None


def test_each_replica_is_fitted_to_its_own_gpu() -> None:
    nodes = [node("a", ("NVIDIA RTX A5500", 24564, 0)), node("b", ("NVIDIA L40S", 46068, 0))]
    decision = decide([qwen("llm", replicas=2)], nodes, config_maps=CONFIG_MAPS)
    llm = decision.servers["ai/llm"]
    assert llm.replicas_wanted == 2 and [r.replica for r in llm.replicas] == [0, 1]
    statuses = llm.replica_placements
    assert {s.node for s in statuses} == {"a", "b"}  # one replica per GPU, each with its own budget
    for status in statuses:
        total = status.gpus[0].total_mib
        assert status.gpu_memory_utilization is not None
        # Rounded down: vLLM never takes more than the replica's own reservation on its own GPU.
        assert status.gpu_memory_utilization * total <= status.budget_mib + 1e-6
    by_node = {s.node: s.gpu_memory_utilization for s in statuses}
    assert by_node["a"] != by_node["b"]
    assert llm.placement == decision.replica_decision("ai/llm", 0).placement


def test_partial_placement_places_what_fits_and_says_which_replicas_wait() -> None:
    decision = decide(
        [server("det", engine="generic", vramBudget="10000Mi", replicas=3)],
        [node("a", ("NVIDIA RTX A5500", 24564, 0))],
    )
    det = decision.servers["ai/det"]
    assert det.placement is not None
    assert [r.replica for r in det.replicas] == [0, 1] and det.replicas_wanted == 3
    assert det.unplaced_reason == "InsufficientMemory"
    assert any(w.startswith("2/3 replicas placed; replica 2 not: InsufficientMemory") for w in det.warnings)
    assert any("replicas 0, 1 share GPU GPU-a-0" in w for w in det.warnings)
    reserved = next(g.reserved_mib for g in decision.plan.gpus if g.uuid == "GPU-a-0")
    assert reserved == 20000


def test_every_replica_reserves_its_own_budget_on_its_own_gpu() -> None:
    nodes = [node(name, ("NVIDIA RTX A5500", 24564, 0)) for name in ("a", "b", "c")]
    decision = decide([server("det", engine="generic", vramBudget="8000Mi", replicas=3)], nodes)
    assert {g.uuid: g.reserved_mib for g in decision.plan.gpus} == {"GPU-a-0": 8000, "GPU-b-0": 8000, "GPU-c-0": 8000}


# --- odd agent data is left out with a reason, offline and in the operator alike -----------------


def test_a_gpu_reporting_no_memory_is_left_out_and_the_rest_is_planned() -> None:
    yolo = server("yolo", engine="generic", vramBudget="2Gi")
    fleet = [node("lost", ("NVIDIA L40S", 0.0, 0.0)), node("ok", ("NVIDIA L40S", 46068, 0.0))]
    decision = decide([yolo], fleet)
    placed = decision.servers["ai/yolo"]
    assert placed.sizing_error is None and placed.placement is not None
    assert placed.placement.node == "ok"
    assert any("GPU-lost-0 on lost left out" in w and "0MiB of memory" in w for w in decision.plan.warnings)
    # The only GPU reporting no memory: nothing to place on, which is a reason, not an error.
    alone = decide([yolo], [fleet[0]]).servers["ai/yolo"]
    assert (alone.sizing_error, alone.placement) == (None, None) and alone.unplaced_reason


def test_a_uuid_reported_by_two_nodes_stays_with_the_first_by_name() -> None:
    twin = node("b", ("NVIDIA L40S", 46068, 0.0)).model_copy(deep=True)
    assert twin.status is not None
    twin.status.gpus[0].uuid = "GPU-a-0"
    decision = decide(
        [server("yolo", engine="generic", vramBudget="2Gi")], [twin, node("a", ("NVIDIA L40S", 46068, 0))]
    )
    placed = decision.servers["ai/yolo"].placement
    assert placed is not None and placed.node == "a"
    assert any("GPU-a-0 on b left out" in w and "also reported by node a" in w for w in decision.plan.warnings)
