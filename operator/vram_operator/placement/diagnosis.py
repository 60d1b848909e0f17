"""Why a server is unplaced or refused: the engine's refusal on a group of GPUs, the diagnosis of what
stays unplaced (a CamelCase reason with the numbers), and the texts that name GPUs."""

from __future__ import annotations

from collections.abc import Sequence

from vram_operator.fit.offer import GpuOffer
from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.occupancy import EPS, GpuState, Group, Occupancy, groupable

# The reason of a server no GPU takes because each one with room holds servers of another namespace.
OTHER_NAMESPACE = "OtherNamespaceOnGpu"
# Why, in dra pinning, servers of two namespaces never share a GPU.
ONE_NAMESPACE_PER_GPU = (
    "dra pinning keeps one namespace per GPU (ResourceClaims are namespaced and the NVIDIA DRA driver "
    "gives a device to one claim)"
)
# Why a tensor-parallel server never goes onto MIG devices.
MIG_TENSOR_PARALLEL = "tensor parallel across MIG devices is not supported (vLLM/NCCL cannot use them as one group)"


def refusal(demand: ServerDemand, group: Group, budget: float, *, alone: bool = False) -> str | None:
    """Why the engine of `demand` would fail with `budget` on `group` as it stands now (with `alone`: with
    no other server there), or None."""
    if demand.engine_check is None:
        return None
    smallest = min(group, key=lambda g: (g.slot.total_mib, g.slot.index))

    def others_on(gpu: GpuState) -> float:
        return 0.0 if alone else gpu.reserved - _own_budget(demand, gpu)

    offer = GpuOffer(
        name=smallest.slot.name,
        total_mib=smallest.slot.total_mib,
        foreign_mib=smallest.slot.foreign_mib,
        reserved_by_others_mib=others_on(smallest),
        free_at_start_mib=max(0.0, min(g.slot.total_mib - g.slot.foreign_mib - others_on(g) for g in group)),
    )
    return demand.engine_check(budget, offer)


def _own_budget(demand: ServerDemand, gpu: GpuState) -> float:
    tenant = gpu.tenants.get(demand.key)
    return tenant.budget_mib if tenant is not None else 0.0


def where(occupancy: Occupancy, uuids: tuple[str, ...]) -> str:
    """One GPU by its label; a group as "node GPUs i,j"."""
    gpus = [occupancy.by_uuid[u].slot for u in uuids]
    if len(gpus) == 1:
        return gpus[0].label
    return f"{gpus[0].node} GPUs {','.join(str(g.index) for g in gpus)}"


def where_group(occupancy: Occupancy, group: Group) -> str:
    return where(occupancy, tuple(g.slot.uuid for g in group))


def floor_text(demand: ServerDemand) -> str:
    """How far the demand may shrink, for a refusal text ("" when it may not)."""
    return f" (can shrink to {demand.min_mib:.0f}MiB)" if demand.shrinkable else ""


def diagnose(occupancy: Occupancy, demand: ServerDemand) -> tuple[str, str]:
    """Why `demand` stays unplaced: a CamelCase reason and a message with the numbers."""
    usable = [g for g in occupancy.gpus if g.slot.usable and not g.dedicated]
    if not usable:
        return (
            "NoHealthyGpu",
            f"none of the {len(occupancy.gpus)} GPUs is healthy, schedulable and not dedicated",
        )
    size = demand.tensor_parallel
    need = demand.budget_on((max(g.slot.total_mib for g in usable),))
    floor = demand.min_mib if demand.shrinkable else need
    per_node: dict[str, list[GpuState]] = {}
    for gpu in groupable(usable, size):
        per_node.setdefault(gpu.slot.node, []).append(gpu)
    widest = max(per_node.items(), key=lambda kv: (len(kv[1]), kv[0]), default=("-", []))
    with_mig: dict[str, int] = {}
    for gpu in usable:
        with_mig[gpu.slot.node] = with_mig.get(gpu.slot.node, 0) + 1
    if size > len(widest[1]) and max(with_mig.values()) >= size:
        return (
            "TensorParallelOnMig",
            f"needs {size} GPUs on one node; the most any node has usable outside MIG is {len(widest[1])} "
            f"({widest[0]}); {MIG_TENSOR_PARALLEL}",
        )
    if size > len(widest[1]):
        return (
            "TensorParallelTooLarge",
            f"needs {size} GPUs on one node; the most any node has usable is {len(widest[1])} ({widest[0]})",
        )
    refused = engine_diagnosis(demand, usable)
    if refused is not None:
        return "InsufficientMemory", refused
    elsewhere = other_namespace_gpus(occupancy, demand, usable)
    if elsewhere:
        return OTHER_NAMESPACE, other_namespace_text(elsewhere, demand)
    if demand.dedicated and any(g.capacity >= floor for g in usable if not g.dedicated):
        return (
            "DedicatedUnavailable",
            f"needs a GPU alone with {floor:.0f}MiB; every GPU large enough already has servers",
        )
    if size == 1:
        best = max(usable, key=lambda g: (g.free, g.slot.node, -g.slot.index))
        return (
            "InsufficientMemory",
            f"needs {need:.0f}MiB per GPU{floor_text(demand)}; the most free is {best.free:.0f}MiB on "
            f"{best.slot.label}",
        )
    node, gpus = max(
        ((n, gs) for n, gs in per_node.items() if len(gs) >= size),
        key=lambda kv: (sorted((g.free for g in kv[1]), reverse=True)[size - 1], kv[0]),
    )
    frees = sorted((g.free for g in gpus), reverse=True)[:size]
    return (
        "InsufficientMemory",
        f"needs {size} GPUs on one node with {need:.0f}MiB each{floor_text(demand)}; the best node, {node}, "
        f"has {', '.join(f'{f:.0f}' for f in frees)}MiB free",
    )


def engine_diagnosis(demand: ServerDemand, usable: Sequence[GpuState]) -> str | None:
    """When GPUs have room for the budget but the engine would fail on each: what it says on the largest."""
    if demand.engine_check is None or demand.tensor_parallel != 1:
        return None
    roomy = [
        g
        for g in usable
        if g.free >= demand.budget_on((g.slot.total_mib,)) - EPS and (g.vacant or not demand.dedicated)
    ]
    if not roomy:
        return None
    # One look per product and size (the roomiest of each): alike GPUs get the same answer.
    kinds: dict[tuple[str, float], GpuState] = {}
    for gpu in sorted(roomy, key=lambda g: (-g.free, g.slot.node, g.slot.index)):
        kinds.setdefault((gpu.slot.name, gpu.slot.total_mib), gpu)
    refusals = [(g, refusal(demand, [g], demand.budget_on((g.slot.total_mib,)))) for g in kinds.values()]
    if any(why is None for _, why in refusals):
        return None
    gpu, why = max(refusals, key=lambda item: (item[0].slot.total_mib, item[0].free, item[0].slot.node))
    return (
        f"{len(roomy)} GPU(s) have room for its budget but the engine would fail on each; "
        f"on the largest, {gpu.slot.label}: {why}"
    )


def other_namespace_gpus(occupancy: Occupancy, demand: ServerDemand, usable: Sequence[GpuState]) -> list[GpuState]:
    """With one namespace per GPU: when no GPU of its namespace (or vacant) has room for `demand` but
    some of another namespace do, those (most free first); else none."""
    if not occupancy.one_namespace_per_gpu:
        return []
    roomy = [
        g
        for g in groupable(usable, demand.tensor_parallel)
        if g.free >= demand.budget_on((g.slot.total_mib,)) - EPS and (g.vacant or not demand.dedicated)
    ]
    per_node: dict[str, int] = {}
    for gpu in roomy:
        if not occupancy.holds_other_namespace(gpu, demand.namespace):
            per_node[gpu.slot.node] = per_node.get(gpu.slot.node, 0) + 1
    if any(count >= demand.tensor_parallel for count in per_node.values()):
        return []  # room in its own namespace: something else kept it out
    others = [g for g in roomy if occupancy.holds_other_namespace(g, demand.namespace)]
    return sorted(others, key=lambda g: (-g.free, g.slot.node, g.slot.index))


def other_namespace_text(gpus: Sequence[GpuState], demand: ServerDemand) -> str:
    """The refusal of GPUs that hold servers of another namespace than `demand`'s."""
    shown = "; ".join(f"{g.slot.label} holds {', '.join(sorted(g.namespaces))}" for g in gpus[:3])
    more = f" and {len(gpus) - 3} more" if len(gpus) > 3 else ""
    return (
        f"{ONE_NAMESPACE_PER_GPU}: {len(gpus)} GPU(s) with room for its {demand.preferred_mib:.0f}MiB hold "
        f"servers of another namespace than {demand.namespace} ({shown}{more})"
    )
