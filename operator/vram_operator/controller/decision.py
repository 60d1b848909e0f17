"""The one door into the planner: the call into decide (the fleet facade), turned into what the handlers
write and render.

What the environment causes (no room, odd agent data, a missing ConfigMap, a planning run that
fails on what the fleet looks like now) becomes an unplaced outcome with a reason, re-evaluated
later; only what the spec causes becomes an estimate error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from vram_operator import decide as fleet_decisions
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller.server_status import Outcome
from vram_operator.placement.demand import ManualAssignment
from vram_operator.placement.inventory import SlotCache
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.placement.result import GpuSummary
from vram_operator.render import LlamaCppLaunch
from vram_operator.sizing.measured import MeasuredRun


@dataclass(frozen=True)
class Inputs:
    """Everything a decision depends on besides the servers being decided."""

    nodes: Sequence[GpuNode]
    reserved: Sequence[InferenceServer]
    stale_nodes: frozenset[str] = frozenset()
    config_maps: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    strategy: str = "VRAMBased"
    margin_mib: float = float(DEFAULT_MARGIN_MIB)
    # "namespace/name" -> UIDs of the server's pods: which GPU processes are ours (None: not known yet).
    pod_uids: Mapping[str, Collection[str]] | None = None
    # Measured runs by settings key (sizing.measured.settings_key): what servers of those settings used.
    measured: Mapping[str, Sequence[MeasuredRun]] = field(default_factory=dict)
    # The GPUs of unchanged nodes, kept from one decision to the next (None: built afresh).
    slot_cache: SlotCache | None = None
    # dra pinning: servers of different namespaces never share a GPU (placement.occupancy).
    one_namespace_per_gpu: bool = False


@dataclass(frozen=True)
class Decided:
    """Per server: the Outcome for its status and, for llama.cpp, how to launch it."""

    outcomes: dict[str, Outcome]
    launches: dict[str, LlamaCppLaunch]
    plan_warnings: tuple[str, ...]
    run_error: str | None = None  # the planning run failed as a whole (every outcome carries it)
    gpus: tuple[GpuSummary, ...] = ()  # every GPU after the plan (free_after_mib < 0: over-committed)


def no_gpus(inputs: Inputs) -> bool:
    """No healthy GPU on any node with a live agent: nothing can be placed anywhere."""
    return not any(
        gpu.healthy
        for node in inputs.nodes
        if node.metadata.name not in inputs.stale_nodes and node.status
        for gpu in node.status.gpus
    )


CONFIG_MAP_FIELD = "model.configMapRef"


def sizing_failure(error: str, field: str | None) -> Outcome:
    """A server that could not be sized: a missing ConfigMap is waited for (Pending), a ConfigMap
    with bad content is reported until it changes, anything else is the spec's own error."""
    if field is not None and field.startswith(CONFIG_MAP_FIELD):
        if error.endswith("not found"):
            return Outcome(unplaced_reason="ConfigMapNotFound", unplaced_message=f"{error}: waiting for it")
        return Outcome(estimate_error=error, estimate_error_reason="ConfigMapInvalid")
    return Outcome(estimate_error=error, estimate_error_reason="EstimateFailed")


def outcome_of(decision: fleet_decisions.ServerDecision, *, no_gpus_anywhere: bool) -> Outcome:
    if decision.sizing_error is not None:
        return sizing_failure(decision.sizing_error, decision.sizing_field)
    reason = decision.unplaced_reason or "Unschedulable"
    message = decision.unplaced_message or ""
    if decision.placement is None and no_gpus_anywhere:
        reason, message = "NoGpus", "no healthy GPU is reported by any node agent with a live heartbeat"
    warnings = list(decision.warnings)
    if decision.placement is not None and not decision.fits and decision.fit_message:
        warnings.append(decision.fit_message)
    return Outcome(
        estimate=decision.estimate,
        placement=decision.placement,
        utilization=decision.gpu_memory_utilization,
        utilization_mode=decision.utilization_mode,
        utilization_tier=decision.utilization_tier,
        utilization_explanation=decision.utilization_explanation,
        warnings=tuple(dict.fromkeys(warnings)),
        unplaced_reason=reason,
        unplaced_message=message,
        predicted_fit_reason=decision.fit_reason if decision.placement is not None else "",
        predicted_fit_message=decision.fit_message,
        replicas=tuple(fleet_decisions.placed_replicas(decision)),
        replicas_wanted=decision.replicas_wanted,
    )


def decide(servers: Sequence[InferenceServer], inputs: Inputs, manual: Sequence[ManualAssignment] = ()) -> Decided:
    """Decide `servers` against the standing reservations; bad specs become estimate errors.

    GPUs whose agent data the planner cannot use are left out by fleet_decisions.decide. A planning
    run that fails as a whole depends on the fleet as it is now: every server in it stays unplaced
    with reason PlanningFailed and is tried again later.
    """
    try:
        result = fleet_decisions.decide(
            servers,
            inputs.nodes,
            strategy=inputs.strategy,
            margin_mib=inputs.margin_mib,
            reserved=inputs.reserved,
            config_maps=inputs.config_maps,
            stale_nodes=inputs.stale_nodes,
            manual=manual,
            pod_uids=inputs.pod_uids,
            measured=inputs.measured,
            slot_cache=inputs.slot_cache,
            one_namespace_per_gpu=inputs.one_namespace_per_gpu,
        )
    except ValueError as error:  # sizing, placement and input errors all derive from ValueError
        failed = Outcome(
            unplaced_reason="PlanningFailed", unplaced_message=f"{error} (tried again when the fleet changes)"
        )
        return Decided({s.key: failed for s in servers}, {}, (), run_error=str(error))
    empty = no_gpus(inputs)
    outcomes = {key: outcome_of(d, no_gpus_anywhere=empty) for key, d in result.servers.items()}
    launches = {
        key: launch
        for key, d in result.servers.items()
        if d.placement is not None and (launch := d.llamacpp_launch) is not None
    }
    return Decided(outcomes, launches, tuple(result.plan.warnings), gpus=result.plan.gpus)
