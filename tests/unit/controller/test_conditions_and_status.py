from __future__ import annotations

from vram_operator.api.inference_server import (
    EstimateStatus,
    InferenceServerStatus,
    MeasuredGpuMemory,
    MeasuredMemory,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller.conditions import condition_status, set_condition
from vram_operator.controller.server_status import (
    Observation,
    Outcome,
    decided_status,
    observed_status,
    status_patch,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def placement(budget: float = 8000.0) -> PlacementStatus:
    gpus = [PlacedGpu(index=0, uuid="GPU-a", name="A5500", total_mib=24564)]
    return PlacementStatus(node="ws", gpus=gpus, budget_mib=budget, strategy="VRAMBased")


def test_transition_time_kept_while_status_unchanged_and_moved_on_flip() -> None:
    first = set_condition([], "Placed", True, "Placed", "a", generation=1, now=T0)
    same = set_condition(first, "Placed", True, "Placed", "b", generation=2, now=T1)
    assert same[0].last_transition_time == T0
    assert same[0].message == "b"
    assert same[0].observed_generation == 2
    flipped = set_condition(same, "Placed", False, "NoGpus", "none", generation=2, now=T1)
    assert flipped[0].last_transition_time == T1
    assert condition_status(flipped, "Placed") == "False"


def test_conditions_have_a_stable_order_and_one_entry_per_type() -> None:
    conditions = set_condition([], "Ready", None, "Unknown", "", generation=1, now=T0)
    conditions = set_condition(conditions, "Estimated", True, "Estimated", "", generation=1, now=T0)
    conditions = set_condition(conditions, "Estimated", False, "InvalidSpec", "", generation=1, now=T0)
    assert [c.type for c in conditions] == ["Estimated", "Ready"]
    assert conditions[1].status == "Unknown"


def test_placed_outcome_fills_printer_columns_and_phase() -> None:
    outcome = Outcome(
        estimate=EstimateStatus(total_mib=8000, source="config"),
        placement=placement(),
        utilization=0.33,
        utilization_mode="auto",
        warnings=("w",),
    )
    status = decided_status(None, outcome, generation=3, now=T0)
    assert status.phase == "Placed"
    assert status.placement is not None
    assert status.placement.gpu_summary == "ws:0"
    assert status.observed_generation == 3
    assert status.warnings == ["w"]
    assert condition_status(status.conditions, "Estimated") == "True"


def test_bad_spec_is_failed_with_reason() -> None:
    outcome = Outcome(
        estimate_error="config.json: field num_attention_heads missing", estimate_error_reason="BadConfig"
    )
    status = decided_status(None, outcome, generation=1, now=T0)
    assert status.phase == "Failed"
    estimated = next(c for c in status.conditions if c.type == "Estimated")
    assert (estimated.status, estimated.reason) == ("False", "BadConfig")
    assert "num_attention_heads" in estimated.message
    assert status.placement is None


def test_unplaced_is_pending_with_the_planner_reason() -> None:
    outcome = Outcome(estimate=EstimateStatus(total_mib=1), unplaced_reason="NoGpus", unplaced_message="no GPUs")
    status = decided_status(None, outcome, generation=1, now=T0)
    assert status.phase == "Pending"
    placed = next(c for c in status.conditions if c.type == "Placed")
    assert (placed.status, placed.reason) == ("False", "NoGpus")


def measured(used: float) -> MeasuredMemory:
    return MeasuredMemory(
        used_mib=used,
        total_mib=24564,
        percent=0.0,
        per_gpu=[MeasuredGpuMemory(uuid="GPU-a", used_mib=used, total_mib=24564)],
    )


def test_a_move_resets_ready_and_measured_memory_until_the_new_pod_reports() -> None:
    base = decided_status(None, Outcome(estimate=EstimateStatus(), placement=placement()), generation=1, now=T0)
    running = observed_status(base, Observation(ready=True, memory=measured(6000)), generation=1, now=T1)
    assert running.phase == "Running" and running.memory is not None
    same = decided_status(running, Outcome(estimate=EstimateStatus(), placement=placement()), generation=2, now=T1)
    assert same.phase == "Running" and same.memory == running.memory  # a re-decision in place keeps both
    elsewhere = placement().model_copy(
        update={"node": "h100-1", "gpus": [PlacedGpu(index=3, uuid="GPU-b", name="H100", total_mib=81559)]}
    )
    moved = decided_status(running, Outcome(estimate=EstimateStatus(), placement=elsewhere), generation=2, now=T1)
    ready = next(c for c in moved.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "Moving", "waiting for the pods on h100-1:3")
    assert moved.phase == "Placed" and moved.memory is None
    resized = decided_status(
        running, Outcome(estimate=EstimateStatus(), placement=placement(9000)), generation=2, now=T1
    )
    assert resized.phase == "Placed"  # a new budget restarts the pod too


def test_observed_running_within_budget() -> None:
    base = decided_status(None, Outcome(estimate=EstimateStatus(), placement=placement()), generation=1, now=T0)
    status = observed_status(base, Observation(ready=True, memory=measured(6000)), generation=1, now=T1)
    assert status.phase == "Running"
    assert condition_status(status.conditions, "MemoryFits") == "True"


def test_observed_above_budget_and_unknown_memory() -> None:
    base = decided_status(None, Outcome(estimate=EstimateStatus(), placement=placement(5000)), generation=1, now=T0)
    above = observed_status(base, Observation(ready=True, memory=measured(6000)), generation=1, now=T1)
    fits = next(c for c in above.conditions if c.type == "MemoryFits")
    assert (fits.status, fits.reason) == ("False", "MeasuredAboveBudget")
    unknown = observed_status(base, Observation(ready=False), generation=1, now=T1)
    fits = next(c for c in unknown.conditions if c.type == "MemoryFits")
    assert (fits.status, fits.reason) == ("Unknown", "NoAgentData")
    assert unknown.memory is None
    assert unknown.phase == "Placed"


def test_degraded_wins_over_running() -> None:
    base = decided_status(None, Outcome(estimate=EstimateStatus(), placement=placement()), generation=1, now=T0)
    status = observed_status(
        base, Observation(ready=True, failure_reason="NoCacheBlocks", failure_message="x"), generation=1, now=T1
    )
    assert status.phase == "Degraded"


def test_status_patch_clears_dropped_fields() -> None:
    patch = status_patch(InferenceServerStatus(phase="Pending"))
    body = patch["status"]
    assert isinstance(body, dict)
    assert body["placement"] is None
    assert body["phase"] == "Pending"


def test_predicted_engine_failure_sets_memory_fits_false_until_measured() -> None:
    placed = PlacementStatus(node="ws", gpus=[PlacedGpu(index=0, uuid="G0")], budget_mib=4000)
    outcome = Outcome(placement=placed, predicted_fit_reason="NoCacheBlocks", predicted_fit_message="no KV blocks")
    decided = decided_status(None, outcome, generation=1, now=T1)
    fits = next(c for c in decided.conditions if c.type == "MemoryFits")
    assert (fits.status, fits.reason) == ("False", "NoCacheBlocks")
    unmeasured = observed_status(decided, Observation(ready=False), generation=1, now=T1)
    assert next(c for c in unmeasured.conditions if c.type == "MemoryFits").reason == "NoCacheBlocks"
    memory = MeasuredMemory(used_mib=100, total_mib=24564, percent=0.4, per_gpu=[
        MeasuredGpuMemory(uuid="G0", used_mib=100, total_mib=24564)])  # fmt: skip
    measured = observed_status(decided, Observation(ready=True, memory=memory), generation=1, now=T1)
    assert next(c for c in measured.conditions if c.type == "MemoryFits").reason == "WithinBudget"
