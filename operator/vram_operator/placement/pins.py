"""Manual assignments and spec.placement pins: the GPUs a pin names, and placing a server there.

A pin is honoured or the server is unplaced with a reason (PinError); only a Manual assignment (or a
pin allowed to) over-commits, and then with a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_operator.placement.demand import GpuRef, ServerDemand
from vram_operator.placement.diagnosis import (
    MIG_TENSOR_PARALLEL,
    OTHER_NAMESPACE,
    floor_text,
    other_namespace_text,
    refusal,
    where_group,
)
from vram_operator.placement.explain import GpuView
from vram_operator.placement.occupancy import GpuState, Group, Occupancy, groupable

if TYPE_CHECKING:
    from vram_operator.placement.planner import Planner


class PinError(Exception):
    """A pinned server that cannot go where it is pinned."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def resolve_pins(occupancy: Occupancy, demand: ServerDemand) -> Group:
    """The GPUs `demand` is pinned to, or a PinError saying why they cannot be used."""
    node = demand.pin_node
    if node is not None and node not in occupancy.by_node:
        raise PinError("PinnedGpuNotFound", f"pinned node {node} has no GPUs in the inventory")
    group: Group = []
    for ref in demand.pin_gpus:
        gpu = find_gpu(occupancy, node, ref)
        if gpu is None:
            on = f" on {node} (GPUs {', '.join(str(g.slot.index) for g in occupancy.by_node[node])})" if node else ""
            raise PinError("PinnedGpuNotFound", f"pinned GPU {ref}{on} not found")
        if gpu in group:
            raise PinError("PinnedGpuNotFound", f"pinned GPU {ref} listed twice")
        group.append(gpu)
    if len({g.slot.node for g in group}) > 1:
        raise PinError("TensorParallelSpansNodes", "pinned GPUs are on different nodes; tensor parallel needs one node")
    if len(group) > 1 and any(g.slot.mig for g in group):
        raise PinError("TensorParallelOnMig", f"pinned GPUs include MIG devices; {MIG_TENSOR_PARALLEL}")
    return group


def find_gpu(occupancy: Occupancy, node: str | None, ref: GpuRef) -> GpuState | None:
    if isinstance(ref, int) or ref.isdigit():
        if node is None:
            raise PinError("PinnedGpuNotFound", f"pinned GPU index {ref} needs a node")
        found = [g for g in occupancy.by_node[node] if g.slot.index == int(ref)]
        if len(found) > 1:
            raise PinError(
                "PinnedGpuNotFound",
                f"GPU index {ref} on {node} is in MIG mode; pin one of its MIG devices by UUID "
                f"({', '.join(g.slot.uuid for g in found)})",
            )
        return found[0] if found else None
    gpu = occupancy.by_uuid.get(ref)
    return gpu if gpu is not None and node in (None, gpu.slot.node) else None


def place_pinned(planner: Planner, demand: ServerDemand) -> None:
    """Place `demand` where it is pinned, or raise PinError with the reason (Manual may over-commit)."""
    group = resolve_pins(planner.occupancy, demand)
    why = "pinned"
    if not group:
        assert demand.pin_node is not None  # pinned with no GPUs means pinned to a node
        for hidden in planner.spread(demand):
            with planner.occupancy.hidden(hidden), planner.occupancy.serving(demand.namespace):
                groups = planner.groups(demand, [demand.pin_node], shrink=True)
            if groups:
                break
        if groups:
            _, best, on_node = groups[0]
            planner.commit(demand, best, on_node, runners_up=[], too_small=[], why=f"pinned to node {demand.pin_node}")
            return
        group = fallback_on_node(planner.occupancy, demand)
        why = f"pinned to node {demand.pin_node}"
    for gpu in group:
        if not gpu.slot.usable and not (demand.pin_standing and gpu.slot.healthy):
            state = "unhealthy" if not gpu.slot.healthy else "unschedulable (node cordoned or agent stale)"
            raise PinError("PinnedGpuUnavailable", f"pinned {gpu.slot.label} is {state}")
        if gpu.dedicated or (demand.dedicated and not gpu.vacant):
            holders = ", ".join(sorted(gpu.tenants))
            raise PinError("DedicatedUnavailable", f"pinned {gpu.slot.label} is not available alone (holds {holders})")
        if planner.occupancy.holds_other_namespace(gpu, demand.namespace):
            raise PinError(OTHER_NAMESPACE, other_namespace_text([gpu], demand))
    budget = planner.budget(demand, group, shrink=True)
    warnings: list[str] = []
    overcommit = budget is None
    if budget is None:
        need = demand.budget_on(tuple(g.slot.total_mib for g in group))
        tight = min(group, key=lambda g: g.free)
        if not (planner.strategy.allows_overcommit or demand.pin_overcommit):  # pins hold unless Manual
            raise PinError(
                "InsufficientMemory",
                f"needs {need:.0f}MiB per GPU{floor_text(demand)}; pinned {tight.slot.label} has "
                f"{tight.free:.0f}MiB free ({GpuView.of(tight).breakdown(planner.margin)})",
            )
        budget = need
        warnings.append(
            f"{demand.key}: budget {need:.0f}MiB over-commits {tight.slot.label} by {need - tight.free:.0f}MiB "
            f"(free {tight.free:.0f}MiB); allowed because the assignment is Manual"
        )
    # A Manual over-commit is allowed (with a warning): only what the engine cannot do on these GPUs
    # even with the co-tenants gone refuses it.
    refused = refusal(demand, group, budget, alone=overcommit)
    if refused is not None:
        raise PinError(
            "InsufficientMemory", f"the engine would fail on pinned {where_group(planner.occupancy, group)}: {refused}"
        )
    planner.commit(demand, group, budget, runners_up=[], too_small=[], why=why, warnings=warnings)


def fallback_on_node(occupancy: Occupancy, demand: ServerDemand) -> Group:
    """Nothing fits on the pinned node: its most-free GPUs, so the pin fails (or Manual over-commits) there."""
    assert demand.pin_node is not None
    usable = sorted(
        (g for g in groupable(occupancy.by_node[demand.pin_node], demand.tensor_parallel) if g.slot.usable),
        key=lambda g: (-g.free, g.slot.index),
    )
    if len(usable) < demand.tensor_parallel:
        raise PinError(
            "TensorParallelTooLarge" if demand.tensor_parallel > 1 else "NoHealthyGpu",
            f"needs {demand.tensor_parallel} usable GPU(s) on pinned node {demand.pin_node}; it has {len(usable)}",
        )
    return sorted(usable[: demand.tensor_parallel], key=lambda g: g.slot.index)
