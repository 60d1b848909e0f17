"""Why a server is unplaced or refused: the engine's refusal on a group of GPUs, the diagnosis of what
stays unplaced (a CamelCase reason with the numbers), and the texts that name GPUs."""

from __future__ import annotations

from bisect import bisect_right
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


class Diagnosis:
    """Why servers stay unplaced, for any number of them on one final occupancy: the fleet-wide figures
    each reason looks at (usable GPUs, the widest node, the most free GPU, per-node frees, per product
    the GPUs with room) are gathered once, so one more unplaced server costs per node, not per GPU."""

    def __init__(self, occupancy: Occupancy) -> None:
        self.occupancy = occupancy
        self.usable = [g for g in occupancy.gpus if g.slot.usable and not g.dedicated]
        self._per_node: dict[bool, dict[str, list[GpuState]]] = {}
        self._widest: dict[bool, tuple[str, int]] = {}
        self._best_node: dict[int, tuple[str, list[float]] | None] = {}
        self._kinds: dict[tuple[str, float, bool], tuple[list[GpuState], list[float]]] | None = None
        if not self.usable:
            return
        self.largest_total = max(g.slot.total_mib for g in self.usable)
        self.largest_capacity = max(g.capacity for g in self.usable)
        self.most_free = max(self.usable, key=lambda g: (g.free, g.slot.node, -g.slot.index))
        with_mig: dict[str, int] = {}
        for gpu in self.usable:
            with_mig[gpu.slot.node] = with_mig.get(gpu.slot.node, 0) + 1
        self.most_on_a_node = max(with_mig.values())

    def per_node(self, size: int) -> dict[str, list[GpuState]]:
        """The usable GPUs a group of `size` may use, per node (in inventory order)."""
        grouped = size > 1
        found = self._per_node.get(grouped)
        if found is None:
            found = {}
            for gpu in groupable(self.usable, size):
                found.setdefault(gpu.slot.node, []).append(gpu)
            self._per_node[grouped] = found
            self._widest[grouped] = max(
                ((node, len(gpus)) for node, gpus in found.items()), key=lambda kv: (kv[1], kv[0]), default=("-", 0)
            )
        return found

    def widest(self, size: int) -> tuple[str, int]:
        """The node with the most usable GPUs a group of `size` may use (ties: the last name), and how many."""
        self.per_node(size)
        return self._widest[size > 1]

    def best_node(self, size: int) -> tuple[str, list[float]] | None:
        """The node whose size-th most free usable GPU has the most free memory, and its `size` largest frees."""
        if size not in self._best_node:
            ranked = [
                (frees[size - 1], node, frees[:size])
                for node, gpus in self.per_node(size).items()
                if len(frees := sorted((g.free for g in gpus), reverse=True)) >= size
            ]
            best = max(ranked, key=lambda item: item[:2], default=None)
            self._best_node[size] = None if best is None else (best[1], best[2])
        return self._best_node[size]

    def of(self, demand: ServerDemand) -> tuple[str, str]:
        """Why `demand` stays unplaced: a CamelCase reason and a message with the numbers."""
        usable = self.usable
        if not usable:
            return (
                "NoHealthyGpu",
                f"none of the {len(self.occupancy.gpus)} GPUs is healthy, schedulable and not dedicated",
            )
        size = demand.tensor_parallel
        need = demand.budget_on((self.largest_total,))
        floor = demand.min_mib if demand.shrinkable else need
        widest = self.widest(size)
        if size > widest[1] and self.most_on_a_node >= size:
            return (
                "TensorParallelOnMig",
                f"needs {size} GPUs on one node; the most any node has usable outside MIG is {widest[1]} "
                f"({widest[0]}); {MIG_TENSOR_PARALLEL}",
            )
        if size > widest[1]:
            return (
                "TensorParallelTooLarge",
                f"needs {size} GPUs on one node; the most any node has usable is {widest[1]} ({widest[0]})",
            )
        refused = self.engine_refusal(demand)
        if refused is not None:
            return "InsufficientMemory", refused
        elsewhere = other_namespace_gpus(self.occupancy, demand, usable)
        if elsewhere:
            return OTHER_NAMESPACE, other_namespace_text(elsewhere, demand)
        if demand.dedicated and self.largest_capacity >= floor:
            return (
                "DedicatedUnavailable",
                f"needs a GPU alone with {floor:.0f}MiB; every GPU large enough already has servers",
            )
        if size == 1:
            best = self.most_free
            return (
                "InsufficientMemory",
                f"needs {need:.0f}MiB per GPU{floor_text(demand)}; the most free is {best.free:.0f}MiB on "
                f"{best.slot.label}",
            )
        found = self.best_node(size)
        assert found is not None  # the widest node has `size` GPUs
        node, frees = found
        return (
            "InsufficientMemory",
            f"needs {size} GPUs on one node with {need:.0f}MiB each{floor_text(demand)}; the best node, {node}, "
            f"has {', '.join(f'{f:.0f}' for f in frees)}MiB free",
        )

    def engine_refusal(self, demand: ServerDemand) -> str | None:
        """When GPUs have room for the budget but the engine would fail on each: what it says on the largest.

        One look per product and size (the roomiest of each, the first in (most free, node, index)
        order): alike GPUs get the same answer.
        """
        if demand.engine_check is None or demand.tensor_parallel != 1:
            return None
        roomy = 0
        kinds: list[GpuState] = []
        for (_, total, vacant), (gpus, less_free) in self.kinds().items():
            if vacant != demand.dedicated:
                continue
            fitting = bisect_right(less_free, EPS - demand.budget_on((total,)))
            if fitting:
                roomy += fitting
                kinds.append(gpus[0])
        if not kinds:
            return None
        kinds.sort(key=lambda g: (-g.free, g.slot.node, g.slot.index))
        refusals = [(g, refusal(demand, [g], demand.budget_on((g.slot.total_mib,)))) for g in kinds]
        if any(why is None for _, why in refusals):
            return None
        gpu, why = max(refusals, key=lambda item: (item[0].slot.total_mib, item[0].free, item[0].slot.node))
        return (
            f"{roomy} GPU(s) have room for its budget but the engine would fail on each; "
            f"on the largest, {gpu.slot.label}: {why}"
        )

    def kinds(self) -> dict[tuple[str, float, bool], tuple[list[GpuState], list[float]]]:
        """Usable GPUs per (product, total, vacant only), most free first (ties by node, index), each list
        with its GPUs' free memory negated (ascending, for bisect); the vacant-only lists serve dedicated
        servers."""
        if self._kinds is None:
            self._kinds = {}
            for gpu in sorted(self.usable, key=lambda g: (-g.free, g.slot.node, g.slot.index)):
                for vacant in (False, True) if gpu.vacant else (False,):
                    gpus, less_free = self._kinds.setdefault((gpu.slot.name, gpu.slot.total_mib, vacant), ([], []))
                    gpus.append(gpu)
                    less_free.append(-gpu.free)
        return self._kinds


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
