"""InferenceServer status from a decision and from what runs: conditions, phase, printer columns.

Two builders share one status: `decided_status` (what reconcile decided: estimate, placement,
utilization) and `observed_status` (what runs: readiness, measured memory, degradation). The
phase is derived from the conditions only, so both builders agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vram_operator.api.base import Condition
from vram_operator.api.inference_server import (
    EstimateStatus,
    InferenceServerStatus,
    MeasuredMemory,
    Phase,
    PlacementStatus,
    ReplicaPlacementStatus,
)
from vram_operator.controller.conditions import condition_status, set_condition
from vram_operator.render import PlacedReplica


@dataclass(frozen=True)
class Outcome:
    """What reconcile decided for one server (the parts of the fleet decision the status shows)."""

    estimate: EstimateStatus | None = None
    estimate_error: str | None = None  # why the server could not be sized (bad spec or ConfigMap)
    estimate_error_reason: str = "InvalidSpec"
    placement: PlacementStatus | None = None
    utilization: float | None = None
    utilization_mode: Literal["auto", "manual"] | None = None
    utilization_tier: Literal["conservative", "standard", "aggressive"] | None = None
    utilization_explanation: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unplaced_reason: str = "Unschedulable"
    unplaced_message: str = ""
    # What the engine is predicted to do where it is placed (sizing.vllm.fit's reason; "Fits" or "").
    predicted_fit_reason: str = ""
    predicted_fit_message: str = ""
    # Every placed replica (replica 0 first; its placement is `placement`) and how many the spec asks for.
    replicas: tuple[PlacedReplica, ...] = ()
    replicas_wanted: int = 1

    @property
    def replicas_missing(self) -> int:
        """Replicas the spec asks for that are not placed (0 when unplaced as a whole: Placed is False)."""
        if self.placement is None:
            return 0
        return max(0, self.replicas_wanted - max(1, len(self.replicas)))  # `placement` alone is replica 0

    @property
    def fully_placed(self) -> bool:
        """Every replica the spec asks for is placed (else the server is retried on a backoff)."""
        return self.placement is not None and not self.replicas_missing

    @property
    def spec_error(self) -> bool:
        """Only a change of the spec can fix this outcome (a ConfigMap's content is fixed in the ConfigMap)."""
        return self.estimate_error is not None and self.estimate_error_reason != "ConfigMapInvalid"


def replica_statuses(outcome: Outcome) -> list[ReplicaPlacementStatus]:
    """status.replicaPlacements of a decision: replica 0 as `placement` shows it, then the others."""
    statuses = []
    for placed in outcome.replicas:
        where = outcome.placement if placed.replica == 0 and outcome.placement is not None else placed.placement
        statuses.append(
            ReplicaPlacementStatus(
                **where.model_dump(), replica=placed.replica, gpu_memory_utilization=placed.utilization
            )
        )
    return statuses


@dataclass(frozen=True)
class Observation:
    """What runs: pod readiness, measured memory, a detected failure."""

    ready: bool
    ready_message: str = ""
    memory: MeasuredMemory | None = None
    memory_unknown_reason: str = "NoAgentData"
    failure_reason: str | None = None  # CamelCase, e.g. NoCacheBlocks (the reasons sizing.vllm.fit predicts)
    failure_message: str = ""
    # The GPU no longer holds what the server needs to start (foreign use grew): a message, or None.
    room_message: str | None = None
    extra_warnings: tuple[str, ...] = field(default_factory=tuple)


# MemoryFits reasons that come from measurement (the others are predictions from sizing).
MEASURED_REASONS = frozenset({"MeasuredAboveBudget", "WithinBudget", "ForeignMemoryGrew"})


def gpu_summary(placement: PlacementStatus) -> str:
    """Printer column text, e.g. "workstation:0" or "h100-3:0,1"."""
    return f"{placement.node}:{','.join(str(gpu.index) for gpu in placement.gpus)}"


def phase_of(conditions: list[Condition]) -> Phase:
    """Failed > Pending > Degraded > Running > Placed, read from the conditions."""
    if condition_status(conditions, "Estimated") == "False":
        return "Failed"
    if condition_status(conditions, "Placed") != "True":
        return "Pending"
    if condition_status(conditions, "Degraded") == "True":
        return "Degraded"
    if condition_status(conditions, "Ready") == "True":
        return "Running"
    return "Placed"


def decided_status(
    previous: InferenceServerStatus | None, outcome: Outcome, *, generation: int | None, now: str
) -> InferenceServerStatus:
    """The status after a reconcile decision; keeps measured memory and runtime conditions."""
    base = previous or InferenceServerStatus()
    conditions = list(base.conditions)
    if outcome.estimate_error is not None:
        conditions = set_condition(
            conditions,
            "Estimated",
            False,
            outcome.estimate_error_reason,
            outcome.estimate_error,
            generation=generation,
            now=now,
        )
        conditions = set_condition(
            conditions, "Placed", False, "NotEstimated", "the server could not be sized", generation=generation, now=now
        )
    else:
        if outcome.estimate is None and outcome.placement is None:  # not sized yet (e.g. its ConfigMap is missing)
            conditions = set_condition(
                conditions,
                "Estimated",
                None,
                outcome.unplaced_reason,
                outcome.unplaced_message,
                generation=generation,
                now=now,
            )
        else:
            source = outcome.estimate.source if outcome.estimate else "unknown"
            told = f"sized from {source}"
            if source == "measured" and outcome.predicted_fit_message:
                told = outcome.predicted_fit_message  # which run, where and when
            conditions = set_condition(conditions, "Estimated", True, "Estimated", told, generation=generation, now=now)
        if outcome.placement is None:
            conditions = set_condition(
                conditions,
                "Placed",
                False,
                outcome.unplaced_reason,
                outcome.unplaced_message,
                generation=generation,
                now=now,
            )
        elif outcome.replicas_missing:
            # Placed (what fits runs), and the missing replicas are retried like an unplaced server.
            placed = outcome.replicas_wanted - outcome.replicas_missing
            conditions = set_condition(
                conditions,
                "Placed",
                True,
                "PartiallyPlaced",
                f"{placed}/{outcome.replicas_wanted} replicas placed; the others: {outcome.unplaced_reason}: "
                f"{outcome.unplaced_message}",
                generation=generation,
                now=now,
            )
        else:
            conditions = set_condition(
                conditions,
                "Placed",
                True,
                "Placed",
                outcome.placement.reason or gpu_summary(outcome.placement),
                generation=generation,
                now=now,
            )
    if outcome.placement is not None and outcome.predicted_fit_reason not in ("", "Fits"):
        # Known before anything runs: say so now rather than after a crash loop.
        conditions = set_condition(
            conditions,
            "MemoryFits",
            False,
            outcome.predicted_fit_reason,
            outcome.predicted_fit_message,
            generation=generation,
            now=now,
        )
    placement = outcome.placement
    moved = moved_replicas(base, outcome)
    if moved:  # what was observed ran elsewhere: the server is Ready again when its new pods are
        conditions = set_condition(
            conditions,
            "Ready",
            False,
            "Moving",
            f"waiting for the pods on {', '.join(moved)}",
            generation=generation,
            now=now,
        )
    if placement is not None and not placement.gpu_summary:
        placement = placement.model_copy(update={"gpu_summary": gpu_summary(placement)})
    return base.model_copy(
        update={
            "observed_generation": generation,
            "estimate": outcome.estimate,
            "placement": placement,
            "replica_placements": replica_statuses(outcome) if placement is not None else [],
            "gpu_memory_utilization": outcome.utilization,
            "utilization_mode": outcome.utilization_mode,
            "utilization_tier": outcome.utilization_tier,
            "utilization_explanation": list(outcome.utilization_explanation),
            "warnings": list(outcome.warnings),
            "conditions": conditions,
            "phase": phase_of(conditions),
            "memory": base.memory if placement is not None and not moved else None,
            "engine_report": base.engine_report if placement is not None and not moved else None,
        }
    )


def moved_replicas(previous: InferenceServerStatus, outcome: Outcome) -> list[str]:
    """Where the replicas that a decision moves (new node, GPUs or budget) now go, e.g. "h100-1:3"."""
    before = {placed.replica: placed for placed in previous.placed_replicas()}
    placement = outcome.placement
    after = replica_statuses(outcome) or (
        [ReplicaPlacementStatus(**placement.model_dump(), replica=0)] if placement is not None else []
    )
    return [
        gpu_summary(placed)
        for placed in after
        if placed.replica in before
        and (
            (placed.node, [g.uuid for g in placed.gpus], round(placed.budget_mib))
            != (
                before[placed.replica].node,
                [g.uuid for g in before[placed.replica].gpus],
                round(before[placed.replica].budget_mib),
            )
        )
    ]


def observed_status(
    previous: InferenceServerStatus, observation: Observation, *, generation: int | None, now: str
) -> InferenceServerStatus:
    """The status with readiness, measured memory and degradation from what runs."""
    conditions = set_condition(
        previous.conditions,
        "Ready",
        observation.ready,
        "PodsReady" if observation.ready else "PodsNotReady",
        observation.ready_message,
        generation=generation,
        now=now,
    )
    budgets = budgets_per_gpu(previous)
    memory = observation.memory
    predicted_failure = any(
        c.type == "MemoryFits" and c.status == "False" and c.reason not in MEASURED_REASONS for c in conditions
    )
    over = (
        [gpu for gpu in memory.per_gpu if budgets.get(gpu.uuid) and gpu.used_mib > budgets[gpu.uuid]] if memory else []
    )
    if over:
        worst = max(over, key=lambda g: g.used_mib - budgets[g.uuid])
        conditions = set_condition(
            conditions,
            "MemoryFits",
            False,
            "MeasuredAboveBudget",
            f"measured {worst.used_mib:.0f}MiB above the {budgets[worst.uuid]:.0f}MiB budget",
            generation=generation,
            now=now,
        )
    elif observation.room_message is not None:
        conditions = set_condition(
            conditions,
            "MemoryFits",
            False,
            "ForeignMemoryGrew",
            observation.room_message,
            generation=generation,
            now=now,
        )
    elif memory is not None:
        conditions = set_condition(
            conditions,
            "MemoryFits",
            True,
            "WithinBudget",
            f"measured within the {max(budgets.values(), default=0.0):.0f}MiB budget per GPU",
            generation=generation,
            now=now,
        )
    elif not predicted_failure:  # a predicted failure stands until something is measured
        conditions = set_condition(
            conditions,
            "MemoryFits",
            None,
            observation.memory_unknown_reason,
            "no agent data for this server's processes",
            generation=generation,
            now=now,
        )
    failed = observation.failure_reason is not None
    conditions = set_condition(
        conditions,
        "Degraded",
        failed,
        observation.failure_reason or "Healthy",
        observation.failure_message,
        generation=generation,
        now=now,
    )
    return previous.model_copy(update={"conditions": conditions, "phase": phase_of(conditions), "memory": memory})


def with_nothing_running(
    status: InferenceServerStatus, replicas: int, *, generation: int | None, now: str
) -> InferenceServerStatus:
    """A first placement's status with what the runtime check observes while nothing runs yet (no pod
    ready, nothing measured, nothing degraded): written with the decision, the check's first pass has
    nothing to write (one status write per decision, not two)."""
    if status.placement is None or condition_status(status.conditions, "Ready") is not None:
        return status
    nothing = Observation(ready=False, ready_message=f"0/{replicas} pods ready")
    return observed_status(status, nothing, generation=generation, now=now)


def budgets_per_gpu(status: InferenceServerStatus) -> dict[str, float]:
    """MiB the server reserves on each of its GPUs: the budgets of the replicas placed there, summed."""
    budgets: dict[str, float] = {}
    for placement in status.placed_replicas():
        for gpu in placement.gpus:
            budgets[gpu.uuid] = budgets.get(gpu.uuid, 0.0) + placement.budget_mib
    return budgets


CHILD_REJECTED = "ChildRejected"


def with_refused_child(
    status: InferenceServerStatus, refused: str | None, *, generation: int | None, now: str
) -> InferenceServerStatus:
    """Degraded=True ChildRejected with the API server's message while a child is refused; cleared
    (Healthy) once every child was applied."""
    reason = next((c.reason for c in status.conditions if c.type == "Degraded"), None)
    if refused is None and reason != CHILD_REJECTED:
        return status
    conditions = set_condition(
        status.conditions,
        "Degraded",
        refused is not None,
        CHILD_REJECTED if refused is not None else "Healthy",
        refused or "",
        generation=generation,
        now=now,
    )
    return status.model_copy(update={"conditions": conditions, "phase": phase_of(conditions)})


def status_patch(status: InferenceServerStatus) -> dict[str, object]:
    """A merge patch that sets status to exactly `status` (cleared fields become null)."""
    wire = status.wire()
    cleared = {
        name: None
        for name in ("estimate", "engineReport", "placement", "memory", "gpuMemoryUtilization", "utilizationMode")
    }
    return {"status": {**cleared, **wire}}
