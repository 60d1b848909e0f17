"""Environmental conditions are statuses with reasons, never permanent failures (issue 9: 1, 2, 9, 10, 11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from controller_builders import generic, gpu, node
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode
from vram_operator.api.inference_server import (
    EstimateStatus,
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller import decision
from vram_operator.controller.decision import Inputs, decide
from vram_operator.controller.failures import FailureKind, classify
from vram_operator.controller.gpu_health import capacity_grew, placement_health
from vram_operator.controller.room import REASON, beyond_share_mib, room_shortfall, startup_check_passes
from vram_operator.controller.server_status import (
    Observation,
    decided_status,
    observed_status,
    with_refused_child,
)
from vram_operator.fit.utilization import AUTO_MAX, GpuRoom, Tier, auto_utilization
from vram_operator.placement.agent_data import usable_agent_data
from vram_operator.placement.inventory import Inventory
from vram_operator.placement.ownership import ProcessOwners
from vram_operator.sizing import vllm as vllm_sizing
from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.errors import SizingError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STAMP = "2026-01-01T12:00:00Z"
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16",
}


def vllm(name: str, **spec: object) -> InferenceServer:
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ns", generation=1),
        spec=InferenceServerSpec.model_validate({"engine": "vllm", "image": "vllm", **spec}),
    )


def standing(name: str, node_name: str, uuid: str, budget: float) -> InferenceServer:
    server = generic(name, f"{budget:.0f}Mi")
    placement = PlacementStatus(node=node_name, gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=budget)
    return server.model_copy(update={"status": InferenceServerStatus(placement=placement)})


def phase(outcome: decision.Outcome) -> str:
    return decided_status(None, outcome, generation=1, now=STAMP).phase or ""


# --- 1: no room is Pending, never Failed -----------------------------------------------------------


def test_vllm_auto_on_a_nearly_full_fleet_is_pending_not_failed() -> None:
    """The reproduction of defect 1: a planning run that cannot size against the room left."""
    ws = node("ws", gpu("GPU-ws-0", 24564))
    filler = standing("filler", "ws", "GPU-ws-0", 24564 - 256 - 100)
    server = vllm("qwen", model={"name": "Qwen/Qwen2.5-0.5B-Instruct"}, maxModelLen=4096)
    outcome = decide([server], Inputs(nodes=[ws], reserved=[filler])).outcomes["ns/qwen"]
    assert outcome.placement is None
    assert not outcome.spec_error and outcome.estimate_error is None
    assert outcome.unplaced_reason and outcome.unplaced_message
    assert phase(outcome) == "Pending"
    roomy = decide([server], Inputs(nodes=[ws], reserved=[])).outcomes["ns/qwen"]
    assert roomy.placement is not None  # the same spec is placed once the room is there


def test_a_planning_run_that_fails_is_pending_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise SizingError("utilization 0.0 must be in (0, 1]", field="gpuMemoryUtilization")

    monkeypatch.setattr(decision.fleet_decisions, "decide", broken)
    decided = decide([generic("a", "1Gi")], Inputs(nodes=[node("ws", gpu("GPU-ws-0"))], reserved=[]))
    outcome = decided.outcomes["ns/a"]
    assert decided.run_error is not None
    assert (outcome.unplaced_reason, outcome.spec_error, phase(outcome)) == ("PlanningFailed", False, "Pending")
    assert "utilization 0.0" in outcome.unplaced_message


def test_a_spec_that_can_never_work_is_a_permanent_estimate_error() -> None:
    """Tensor parallel 3 over 8 KV heads: no fleet can change that."""
    server = vllm("llama", model={"configMapRef": {"name": "cfg"}}, tensorParallelSize=3)
    inputs = Inputs(nodes=[node("ws", gpu("GPU-ws-0"))], reserved=[], config_maps={("ns", "cfg"): _config()})
    outcome = decide([server], inputs).outcomes["ns/llama"]
    assert outcome.spec_error and outcome.estimate_error_reason == "EstimateFailed"
    assert "tensor parallel" in (outcome.estimate_error or "")
    assert phase(outcome) == "Failed"


def test_tensor_parallel_larger_than_the_kv_heads_replicates_them() -> None:
    config = {**LLAMA_CONFIG, "num_key_value_heads": 2}
    server = vllm("llama", model={"configMapRef": {"name": "cfg"}}, tensorParallelSize=4)
    gpus = [gpu(f"GPU-h-{i}", 81559) for i in range(4)]
    inputs = Inputs(nodes=[node("h", *gpus)], reserved=[], config_maps={("ns", "cfg"): _config(config)})
    outcome = decide([server], inputs).outcomes["ns/llama"]
    assert outcome.estimate_error is None and outcome.placement is not None
    assert len(outcome.placement.gpus) == 4


def _config(config: dict[str, object] | None = None) -> dict[str, str]:
    return {"config.json": json.dumps(config or LLAMA_CONFIG)}


# --- 11: a missing ConfigMap is waited for -------------------------------------------------------


def test_missing_config_map_is_pending_and_bad_content_waits_for_a_fix() -> None:
    server = vllm("llm", model={"configMapRef": {"name": "cfg"}})
    nodes = [node("ws", gpu("GPU-ws-0"))]
    missing = decide([server], Inputs(nodes=nodes, reserved=[])).outcomes["ns/llm"]
    assert (missing.unplaced_reason, missing.spec_error, phase(missing)) == ("ConfigMapNotFound", False, "Pending")
    assert "ns/cfg" in missing.unplaced_message
    status = decided_status(None, missing, generation=1, now=STAMP)
    estimated = next(c for c in status.conditions if c.type == "Estimated")
    assert (estimated.status, estimated.reason) == ("Unknown", "ConfigMapNotFound")
    broken = Inputs(nodes=nodes, reserved=[], config_maps={("ns", "cfg"): {"config.json": "{nope"}})
    invalid = decide([server], broken).outcomes["ns/llm"]
    assert (invalid.estimate_error_reason, invalid.spec_error) == ("ConfigMapInvalid", False)
    fixed = Inputs(nodes=nodes, reserved=[], config_maps={("ns", "cfg"): _config()})
    assert decide([server], fixed).outcomes["ns/llm"].placement is not None


# --- 2: odd agent data makes a GPU unusable, not the plan impossible -----------------------------


def test_a_gpu_with_no_memory_is_unusable_and_the_rest_is_planned() -> None:
    nodes = [node("ws", gpu("GPU-ws-0", 0), gpu("GPU-ws-1", 24564))]
    _, unusable = usable_agent_data(nodes)
    assert [(u.node, u.uuid) for u in unusable] == [("ws", "GPU-ws-0")]
    assert "0MiB" in unusable[0].message
    outcome = decide([generic("a", "1Gi")], Inputs(nodes=nodes, reserved=[])).outcomes["ns/a"]
    assert outcome.placement is not None and outcome.placement.gpus[0].uuid == "GPU-ws-1"


def test_a_uuid_reported_twice_is_kept_by_the_first_node_only() -> None:
    cleaned, unusable = usable_agent_data([node("b", gpu("GPU-x-0")), node("a", gpu("GPU-x-0"))])
    assert [(u.node, u.uuid) for u in unusable] == [("b", "GPU-x-0")]
    assert "node a" in unusable[0].message
    assert [len(n.status.gpus) for n in cleaned if n.status] == [1, 0]


gpus_reported = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]), st.sampled_from(["G0", "G1", "G2"]), st.sampled_from([0.0, 8.0, 24564.0])
    ),
    max_size=8,
)


@given(gpus_reported)
def test_usable_agent_data_always_makes_a_valid_inventory(reported: list[tuple[str, str, float]]) -> None:
    by_node: dict[str, list[GpuDeviceStatus]] = {}
    for name, uuid, total in reported:
        index = len(by_node.setdefault(name, []))
        by_node[name].append(gpu(uuid, total).model_copy(update={"index": index}))
    nodes = [node(name, *gpus) for name, gpus in by_node.items()]
    cleaned, unusable = usable_agent_data(nodes)
    Inventory.from_gpu_nodes(cleaned, lambda _node, _process: None)  # never raises
    kept = sum(len(n.status.gpus) for n in cleaned if n.status)
    assert kept + len(unusable) == len(reported)  # every GPU is kept or said to be unusable


def placed_on(node_name: str, *uuids: str) -> PlacementStatus:
    return PlacementStatus(
        node=node_name, gpus=[PlacedGpu(index=i, uuid=u) for i, u in enumerate(uuids)], budget_mib=4096
    )


def test_a_gpu_that_loses_its_memory_is_lost_with_a_reason() -> None:
    health = placement_health(
        placed_on("ws", "GPU-ws-0"),
        [node("ws", gpu("GPU-ws-0", 0))],
        missing_since=None,
        now=NOW,
        grace=timedelta(seconds=60),
    )
    assert health.state == "lost" and health.lost == ("GPU-ws-0",)
    assert "0MiB" in health.message
    unhealthy = placement_health(
        placed_on("ws", "GPU-ws-0"),
        [node("ws", gpu("GPU-ws-0", healthy=False))],
        missing_since=None,
        now=NOW,
        grace=timedelta(seconds=60),
    )
    assert unhealthy.state == "lost" and "unhealthy" in unhealthy.message
    fine = placement_health(
        placed_on("ws", "GPU-ws-0"), [node("ws", gpu("GPU-ws-0"))], missing_since=None, now=NOW, grace=timedelta(0)
    )
    assert fine.state == "healthy"
    starting = GpuNode(metadata=ObjectMeta(name="ws"))
    assert placement_health(placed_on("ws", "GPU-ws-9"), [starting], missing_since=None, now=NOW, grace=timedelta(0))


# --- 9: a missing GpuNode is unknown for a grace period --------------------------------------------


@pytest.mark.parametrize(("missing_for", "state"), [(0, "unknown"), (59, "unknown"), (60, "lost"), (300, "lost")])
def test_a_missing_gpu_node_is_unknown_until_the_grace_period_ends(missing_for: int, state: str) -> None:
    health = placement_health(
        placed_on("ws", "GPU-ws-0", "GPU-ws-1"),
        [node("other", gpu("GPU-o-0"))],
        missing_since=NOW - timedelta(seconds=missing_for),
        now=NOW,
        grace=timedelta(seconds=60),
    )
    assert health.state == state
    assert health.lost == (("GPU-ws-0", "GPU-ws-1") if state == "lost" else ())
    assert "GpuNode ws missing" in health.message


def test_a_node_just_noticed_missing_is_unknown() -> None:
    health = placement_health(placed_on("ws", "GPU-ws-0"), [], missing_since=None, now=NOW, grace=timedelta(1))
    assert health.state == "unknown"


def test_capacity_grows_when_a_gpu_appears_or_gains_a_step() -> None:
    assert capacity_grew({}, {"G0": 100.0})
    assert capacity_grew({"G0": 100.0}, {"G0": 356.0})
    assert not capacity_grew({"G0": 100.0}, {"G0": 355.0})
    assert not capacity_grew({"G0": 100.0, "G1": 5.0}, {"G0": 90.0})


# --- 10: foreign memory that grows re-evaluates the fit ---------------------------------------------


def test_vllm_startup_check_boundary() -> None:
    assert startup_check_passes(free_mib=0.5 * 8192, utilization=0.5, total_mib=8192)
    assert not startup_check_passes(free_mib=0.5 * 8192 - 1, utilization=0.5, total_mib=8192)


@pytest.mark.parametrize(("foreign", "fits"), [(8192 - 4096 - 1000, True), (8192 - 4096 - 1000 + 1, False)])
def test_foreign_growth_is_a_shortfall_at_the_startup_check_boundary(foreign: float, fits: bool) -> None:
    """8192 MiB GPU, another server reserves 1000, this one starts at 0.5 (4096 MiB)."""
    nodes = [node("ws", gpu("GPU-ws-0", 8192, foreign=foreign))]
    shortfall = room_shortfall(placed_on("ws", "GPU-ws-0"), 0.5, nodes, {"GPU-ws-0": 1000.0}, ProcessOwners())
    assert (shortfall is None) is fits
    if shortfall is not None:
        assert (shortfall.needed_mib, shortfall.free_mib) == (4096, 4095)
        assert "4095MiB free" in shortfall.message and "4096MiB needed" in shortfall.message


@pytest.mark.parametrize(("foreign", "fits"), [(8192 - 4096 - 600 - 1000, True), (8192 - 4096 - 600 - 1000 + 1, False)])
def test_foreign_growth_is_a_shortfall_when_the_cuda_graphs_no_longer_fit(foreign: float, fits: bool) -> None:
    """vLLM < 0.21 at 0.5 of 8192 MiB captures 600 MiB of CUDA graphs beyond its share after the start-up
    check: the start-up check passing is not enough, the graphs need their room too."""
    nodes = [node("ws", gpu("GPU-ws-0", 8192, foreign=foreign))]
    shortfall = room_shortfall(
        placed_on("ws", "GPU-ws-0"), 0.5, nodes, {"GPU-ws-0": 1000.0}, ProcessOwners(), beyond_share=600
    )
    assert (shortfall is None) is fits
    if shortfall is not None:
        assert (shortfall.needed_mib, shortfall.free_mib) == (4696, 4695)


def test_the_graphs_beyond_the_share_come_from_the_estimate_the_server_was_placed_with() -> None:
    placement = placed_on("ws", "GPU-ws-0")
    placement.gpus[0].total_mib = 8192
    estimate = EstimateStatus(total_mib=0.5 * 8192 + 637.5)
    status = InferenceServerStatus(placement=placement, estimate=estimate, gpu_memory_utilization=0.5)
    assert beyond_share_mib(status) == 637.5
    assert beyond_share_mib(status.model_copy(update={"gpu_memory_utilization": None})) == 0.0  # not vLLM
    inside = status.model_copy(update={"estimate": EstimateStatus(total_mib=0.5 * 8192)})  # vLLM 0.21+
    assert beyond_share_mib(inside) == 0.0


def test_a_server_without_utilization_needs_its_budget() -> None:
    nodes = [node("ws", gpu("GPU-ws-0", 8192, foreign=4096))]
    assert (
        room_shortfall(placed_on("ws", "GPU-ws-0"), None, nodes, {}, ProcessOwners()) is None
    )  # 4096 free == 4096 budget
    grown = [node("ws", gpu("GPU-ws-0", 8192, foreign=4097))]
    assert room_shortfall(placed_on("ws", "GPU-ws-0"), None, grown, {}, ProcessOwners()) is not None


def test_foreign_growth_sets_memory_fits_false_and_clears_when_it_shrinks() -> None:
    placement = placed_on("ws", "GPU-ws-0")
    start = InferenceServerStatus(placement=placement)
    grew = observed_status(start, Observation(ready=True, room_message="eaten"), generation=1, now=STAMP)
    fits = next(c for c in grew.conditions if c.type == "MemoryFits")
    assert (fits.status, fits.reason, fits.message) == ("False", REASON, "eaten")
    shrank = observed_status(grew, Observation(ready=True), generation=1, now=STAMP)
    assert next(c for c in shrank.conditions if c.type == "MemoryFits").status == "Unknown"


# --- 12: a refused child is reported -----------------------------------------------------------------


def test_a_refused_child_degrades_the_server_until_applied() -> None:
    running = observed_status(
        InferenceServerStatus(placement=placed_on("ws", "GPU-ws-0")),
        Observation(ready=True),
        generation=1,
        now=STAMP,
    )
    running = decided_status(running, decision.Outcome(placement=placed_on("ws", "GPU-ws-0")), generation=1, now=STAMP)
    assert running.phase == "Running"
    refused = with_refused_child(running, "Service a.b refused (422): invalid name", generation=1, now=STAMP)
    degraded = next(c for c in refused.conditions if c.type == "Degraded")
    assert (refused.phase, degraded.reason) == ("Degraded", "ChildRejected")
    assert "invalid name" in degraded.message
    cleared = with_refused_child(refused, None, generation=1, now=STAMP)
    assert cleared.phase == "Running"
    assert with_refused_child(running, None, generation=1, now=STAMP) is running


# --- a start-up failure line without numbers -------------------------------------------------------


def test_a_startup_failure_without_numbers_is_still_recognised() -> None:
    line = "ValueError: Free memory on device on startup is less than desired GPU memory utilization."
    failure = classify(line)
    assert failure is not None and failure.kind is FailureKind.STARTUP_FREE_MEMORY
    assert (failure.free_mib, failure.total_mib) == (None, None)


# --- the 0.95 auto cap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["conservative", "standard", "aggressive"])
def test_auto_utilization_never_passes_the_cap_however_much_is_free(tier: Tier) -> None:
    arch = from_config(LLAMA_CONFIG)
    settings = vllm_sizing.VllmSettings(max_model_len=8192)
    weights = weights_bytes_for_architecture(arch, settings.dtype, None)
    profile = vllm_sizing.profile(arch, vllm_sizing.weights_per_rank(weights, arch, 1), settings, 81559)
    room = GpuRoom(label="H100", total_mib=81559, foreign_mib=0, reserved_by_others_mib=0, margin_mib=0)
    choice = auto_utilization(profile, room, tier=tier, target_kv_tokens=10**9)  # wants every MiB
    assert choice.fits
    assert choice.utilization <= AUTO_MAX
    if tier == "aggressive":
        assert choice.utilization == AUTO_MAX
