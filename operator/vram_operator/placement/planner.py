"""plan(): put servers on GPUs by strategy, under the memory, tensor-parallel, isolation and pin rules.

Every strategy runs the same passes; the strategy only orders servers and ranks GPUs.
1. pins (manual assignments, spec.placement): honoured or unplaced with a reason (Manual may over-commit);
2. greedy: each other server at its preferred budget onto the GPU(s) the strategy ranks best;
3. repair, for servers still unplaced: make room by moving placed servers elsewhere (best fit) or by
   displacing smaller ones; trade placed servers for unplaced ones that fill a GPU better; re-pack one
   node at a time. Every step raises the VRAM placed or is undone; all are bounded and deterministic;
4. shrink: servers still unplaced that may shrink take the best GPU that holds their floor;
5. the rest are unplaced with a CamelCase reason and the numbers.
When something stays unplaced, plain packing passes (first-fit decreasing always, best-fit and
perturbed orders on small problems) run through the same steps; the plan placing the most VRAM wins
and its servers then move, one by one, to the GPU the strategy prefers among those with room.
Invariant (all but Manual): on every GPU, reservations + foreign + margin <= total.
Each replica of a server is a demand of its own (key "ns/name[i]"): wherever a pass places freely, a
replica first passes over the nodes, then the GPUs, of its placed siblings; it shares one only when
nothing else has room, and then with its own budget counted. In the plan a server's placed replicas
are numbered 0..k-1, so replica 0 is placed whenever any is.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from vram_operator.fit.offer import GpuOffer
from vram_operator.placement.demand import GpuRef, ManualAssignment, ServerDemand, replica_key
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.exchange import best_fill
from vram_operator.placement.explain import Choice, GpuView
from vram_operator.placement.inventory import Inventory
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.occupancy import GpuState, Occupancy, Score, Tenant
from vram_operator.placement.result import GpuSummary, Placement, Plan, Unplaced
from vram_operator.placement.search import Bin, Item, pack
from vram_operator.placement.strategies import Strategy, strategy_named

# Head-room kept free on every GPU, on top of reservations and measured foreign use. Servers' own
# budgets already include their CUDA context; the margin absorbs what moves between agent reports
# (a desktop or editor growing, allocator fragmentation, driver allocations). 256 MiB is about 1% of
# a 24 GB card and 6% of a 4 GB one: enough to ride out that drift without wasting a small GPU.
DEFAULT_MARGIN_MIB = 256

# Repair is bounded: at most this many candidate GPUs (or nodes) per unplaced server, this many
# rounds over the unplaced servers, and this many GPU visits in total (keeps 4,000-GPU plans fast).
REPAIR_CANDIDATES = 16
REPAIR_ROUNDS = 3
REPAIR_GPU_VISITS = 60_000
# Tensor-parallel search builds exact GPU groups on this many best-looking nodes only.
GROUP_NODES = 8
# Why a tensor-parallel server never goes onto MIG devices.
MIG_TENSOR_PARALLEL = "tensor parallel across MIG devices is not supported (vLLM/NCCL cannot use them as one group)"
_EPS = 1e-6

Group = list[GpuState]
Ranking = Callable[[ServerDemand, GpuState, float], Score]
Journal = list[tuple[Tenant, Tenant | None]]  # (tenant as it was, where it went or None if evicted)


class _PinError(Exception):
    """A pinned server that cannot go where it is pinned."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Decision:
    demand: ServerDemand
    explanation: Choice | str
    warnings: list[str] = field(default_factory=list)
    shrunk: bool = False


def plan(
    inventory: Inventory,
    demands: Iterable[ServerDemand],
    strategy: str | Strategy,
    *,
    ledger: Ledger | None = None,
    margin_mib: float = DEFAULT_MARGIN_MIB,
    manual: Sequence[ManualAssignment] = (),
) -> Plan:
    """Place `demands` on `inventory`. Reservations in `ledger` of servers not in `demands` stay put."""
    chosen = strategy_named(strategy) if isinstance(strategy, str) else strategy
    if margin_mib < 0:
        raise PlacementError(f"margin must be >= 0 MiB, got {margin_mib}", field="margin_mib")
    by_server: dict[str, ServerDemand] = {}
    for demand in demands:
        if demand.key in by_server:
            raise PlacementError(f"server {demand.key} is listed twice", field="server")
        by_server[demand.key] = demand

    def planner_for(packing: Packing | None) -> _Planner:
        return _Planner(
            inventory=inventory,
            demands=by_server,
            strategy=chosen,
            ledger=ledger or Ledger(),
            margin_mib=margin_mib,
            manual=manual,
            packing=packing,
        )

    def attempt(packing: Packing | None) -> _Planner:
        planner = planner_for(packing)
        planner.run()
        return planner

    best = first = attempt(None)
    if best.complete:
        return best.result()
    # Something did not fit. Plain packing passes (plus the same repair) may find a set of servers that
    # uses more VRAM; the best one is kept and each of its servers then moves to the GPU the strategy
    # prefers among those with room, which never lowers what is placed. First-fit decreasing always
    # runs (no strategy places less than it); the other passes only on fleets small enough to afford.
    work = max(1, len(by_server) * len(inventory.slots))
    extra = min(MAX_RESTARTS, PACKING_WORK // work)
    packings = PACKINGS[: 1 + extra] + tuple(
        Packing("size" if i % 2 else "per_gpu", "best", noise_seed=i) for i in range(max(0, extra - len(PACKINGS) + 1))
    )
    for packing in packings:
        packed = attempt(packing)
        if packed.placed_mib > best.placed_mib + _EPS:
            best = packed
        if best.complete:
            break
    if best.leftover and len(by_server) <= SEARCH_SERVERS and len(inventory.slots) <= SEARCH_GPUS:
        searched = planner_for(None)
        searched.run_exact(beat=best.placed_mib)
        if searched.placed_mib > best.placed_mib + _EPS:
            best = searched
    if best is not first:
        best.polish()
    best.spread_out()
    return best.result()


@dataclass(frozen=True)
class Packing:
    """A plain packing pass: the order servers go in, and first fit or best fit (least room left).

    With `noise_seed`, sizes are scaled by a factor in [0.6, 1.4] drawn from a generator seeded with it
    (a restart that explores other orders; same seed, same order, so plans stay deterministic).
    """

    order: Literal["size", "per_gpu", "multi_gpu_first"]
    fit: Literal["first", "best", "most_free"]
    noise_seed: int | None = None

    def key(self, demand: ServerDemand) -> tuple[object, ...]:
        jitter = 1.0 if self.noise_seed is None else _jitter(self.noise_seed, demand.key)
        size = demand.preferred_mib * demand.tensor_parallel * jitter
        if self.order == "size":
            return (not demand.pinned, -size, demand.key)
        if self.order == "per_gpu":
            return (not demand.pinned, -demand.preferred_mib * jitter, -demand.tensor_parallel, demand.key)
        return (not demand.pinned, -demand.tensor_parallel, -demand.preferred_mib * jitter, demand.key)


def _most_free(demand: ServerDemand, gpu: GpuState, need: float) -> Score:
    return (-gpu.free, gpu.slot.node, gpu.slot.index)


@functools.lru_cache(maxsize=65536)
def _jitter(seed: int, server: str) -> float:
    return random.Random(f"{seed}/{server}").uniform(0.6, 1.4)


PACKINGS: tuple[Packing, ...] = (
    Packing("size", "first"),
    Packing("size", "most_free"),
    Packing("size", "best"),
    Packing("per_gpu", "best"),
    Packing("multi_gpu_first", "best"),
    Packing("per_gpu", "first"),
)
RECREATE_ORDERS: tuple[Packing, ...] = (
    Packing("size", "best"),
    Packing("per_gpu", "best"),
    Packing("multi_gpu_first", "best"),
)
# Packing passes cost about servers x GPUs each: after first-fit decreasing (always tried, so no strategy
# places less than it), a plan tries up to MAX_RESTARTS more while their total stays within PACKING_WORK.
PACKING_WORK = 400_000
MAX_RESTARTS = 40
# When servers are still left over on a small problem, an exact search (search.py) gets this many steps
# (a few tenths of a second at most); problems above these sizes never run it.
SEARCH_SERVERS = 60
SEARCH_GPUS = 64
SEARCH_STEPS = 20_000


class _Planner:
    def __init__(
        self,
        *,
        inventory: Inventory,
        demands: dict[str, ServerDemand],
        strategy: Strategy,
        ledger: Ledger,
        margin_mib: float,
        manual: Sequence[ManualAssignment],
        packing: Packing | None,
    ) -> None:
        self.strategy = strategy
        self.packing = packing
        self.margin = margin_mib
        self.occupancy = Occupancy(inventory, ledger, margin_mib, frozenset(demands), packing=packing is not None)
        self.decisions: dict[str, _Decision] = {}
        self.unplaced: dict[str, Unplaced] = {}
        self.warnings: list[str] = list(self.occupancy.orphans)
        self.evicted: list[ServerDemand] = []
        self.leftover: list[ServerDemand] = []  # unplaced after every pass; reasons are given in result()
        self.visits = 0
        self.demands = self._with_manual(demands, manual)
        self.pinned = frozenset(assignment.server for assignment in manual)  # replica keys pinned by the caller
        self.replica_counts: dict[str, int] = {}
        for demand in demands.values():
            self.replica_counts[demand.server] = max(self.replica_counts.get(demand.server, 0), demand.replica + 1)

    def _with_manual(
        self, demands: dict[str, ServerDemand], manual: Sequence[ManualAssignment]
    ) -> dict[str, ServerDemand]:
        out = dict(demands)
        for assignment in manual:
            demand = out.get(assignment.server)
            if demand is None:
                self.warnings.append(f"manual assignment for {assignment.server}: no such server; ignored")
                continue
            try:
                out[assignment.server] = replace(
                    demand,
                    pin_node=assignment.node,
                    pin_gpus=tuple(assignment.gpus),
                    budget_override_mib=assignment.budget_override_mib or demand.budget_override_mib,
                    pin_standing=assignment.standing,
                    pin_overcommit=assignment.overcommit,
                )
            except PlacementError as error:
                self.unplaced[demand.key] = Unplaced(
                    demand.server, "InvalidAssignment", str(error), replica=demand.replica
                )
                del out[assignment.server]
        return out

    # --- passes ----------------------------------------------------------------------------------
    def _order_key(self, demand: ServerDemand) -> tuple[object, ...]:
        if self.packing is not None:
            return self.packing.key(demand)
        return self.strategy.order_key(demand)

    def run(self) -> None:
        pending: list[ServerDemand] = []
        for demand in sorted(self.demands.values(), key=self._order_key):
            if demand.pinned:
                try:
                    self._place_pinned(demand)
                except _PinError as failure:
                    self.unplaced[demand.key] = Unplaced(
                        demand.server, failure.reason, failure.message, replica=demand.replica
                    )
            elif not self._place_free(demand, shrink=False):
                pending.append(demand)
        pending = self._repair(pending)
        if pending:
            pending = self._repair(self._exchange(pending))
        if pending:
            pending = self._recreate(pending)
        self.leftover = [d for d in pending if not (d.shrinkable and self._place_free(d, shrink=True))]

    def run_exact(self, *, beat: float) -> None:
        """Pins and fixed utilizations as in run(); the other servers where the exact search puts them if
        that places more than `beat` MiB in all, else nowhere (the caller then keeps its other plan)."""
        searchable: list[ServerDemand] = []
        for demand in sorted(self.demands.values(), key=self._order_key):
            if demand.pinned:
                try:
                    self._place_pinned(demand)
                except _PinError as failure:
                    self.unplaced[demand.key] = Unplaced(
                        demand.server, failure.reason, failure.message, replica=demand.replica
                    )
            elif demand.fixed_utilization is not None:
                if not self._place_free(demand, shrink=False):
                    self.leftover.append(demand)
            else:
                searchable.append(demand)
        bins = [Bin(_group_key(g), g.free, vacant=g.vacant, open=g.key is not None) for g in self.occupancy.gpus]
        items = [Item(d.key, d.preferred_mib, d.tensor_parallel, d.dedicated) for d in searchable]
        found = pack(bins, items, beat=beat - self.placed_mib, steps=SEARCH_STEPS) or {}
        why = "exact search: part of the set of servers that places the most VRAM"
        for demand in searchable:
            if demand.key in found:
                group = [self.occupancy.gpus[p] for p in found[demand.key]]
                if self._refusal(demand, group, demand.preferred_mib) is None:
                    self._commit(demand, group, demand.preferred_mib, runners_up=[], too_small=[], why=why)
                else:
                    del found[demand.key]
        self.leftover += [
            d for d in searchable if d.key not in found and not (d.shrinkable and self._place_free(d, shrink=True))
        ]

    @property
    def complete(self) -> bool:
        """Every server placed at the budget it asked for: nothing left to gain."""
        return not self.unplaced and not self.leftover and not any(d.shrunk for d in self.decisions.values())

    @property
    def placed_mib(self) -> float:
        return sum(self.occupancy.tenants[s].budget_mib * len(self.occupancy.tenants[s].uuids) for s in self.decisions)

    def polish(self) -> None:
        """Move each movable server, in strategy order, to the GPU its strategy ranks best (it fits at least
        where it was, so what is placed never drops)."""
        self.packing = None
        for demand in sorted((d.demand for d in self.decisions.values()), key=self._order_key):
            if not self.occupancy.tenants[demand.key].movable:
                continue
            tenant = self.occupancy.remove(demand.key)
            decision = self.decisions.pop(demand.key)
            if not self._place_free(demand, shrink=False):  # its old GPU has room again, but others moved
                self.occupancy.place(tenant)
                self.decisions[demand.key] = decision

    def spread_out(self) -> None:
        """Replicas left nearer their siblings than needed (placed before a later pass freed room apart)
        move to a GPU further apart where one has room; each move goes strictly further apart, so it ends."""
        moved = True
        while moved:
            moved = False
            for decision in sorted(self.decisions.values(), key=lambda d: self._order_key(d.demand)):
                demand = decision.demand
                tenant = self.occupancy.tenants[demand.key]
                if self.replica_counts.get(demand.server, 1) < 2 or not tenant.movable:
                    continue
                tiers = self._spread(demand)
                own = {self.occupancy.by_uuid[u].position for u in tenant.uuids}
                apart = next(i for i, hidden in enumerate(tiers) if not own & hidden)
                if apart == 0:
                    continue  # as far apart as it gets
                self.occupancy.remove(demand.key)
                del self.decisions[demand.key]
                if self._place_apart(demand, tiers[:apart]):
                    moved = True
                else:
                    self.occupancy.place(tenant)
                    self.decisions[demand.key] = decision

    def _place_apart(self, demand: ServerDemand, tiers: list[frozenset[int]]) -> bool:
        for hidden in tiers:
            with self.occupancy.hidden(hidden):
                if self._place_open(demand, shrink=False):
                    return True
        return False

    def _repair(self, pending: list[ServerDemand]) -> list[ServerDemand]:
        for _ in range(REPAIR_ROUNDS):
            if not pending:
                break
            progress = False
            left: list[ServerDemand] = []
            for demand in pending:
                if (
                    self._place_free(demand, shrink=False)
                    or self._make_room(demand, evict=False)
                    or self._make_room(demand, evict=True)
                ):
                    progress = True
                else:
                    left.append(demand)
            pending = sorted(left + self.evicted, key=self._order_key)
            self.evicted = []
            if not progress:
                break
        return pending

    # --- choosing GPUs ---------------------------------------------------------------------------
    def _budget(self, demand: ServerDemand, group: Group, *, shrink: bool) -> float | None:
        """The budget `demand` gets on `group`, or None when it does not fit."""
        need = demand.budget_on(tuple(g.slot.total_mib for g in group))
        free = min(g.free for g in group)
        if free >= need - _EPS:
            return need
        if shrink and demand.shrinkable and free >= demand.min_mib - _EPS:
            return float(math.floor(free + _EPS))
        return None

    def _spread(self, demand: ServerDemand) -> list[frozenset[int]]:
        """The GPUs (positions) a replica passes over, tried in turn, to keep off its placed siblings:
        their nodes, then their GPUs, then none; so replicas share a GPU only where nothing else has
        room, and then each with its own budget (the sibling's reservation is counted like any other)."""
        held = [
            self.occupancy.tenants[key]
            for i in range(self.replica_counts.get(demand.server, 1))
            if i != demand.replica and (key := replica_key(demand.server, i)) in self.occupancy.tenants
        ]
        if not held:
            return [frozenset()]
        on_gpus = frozenset(self.occupancy.by_uuid[u].position for tenant in held for u in tenant.uuids)
        nodes = {self.occupancy.gpus[p].slot.node for p in on_gpus}
        on_nodes = frozenset(g.position for node in nodes for g in self.occupancy.by_node[node])
        return [on_nodes, on_gpus, frozenset()] if on_nodes != on_gpus else [on_gpus, frozenset()]

    def _place_free(self, demand: ServerDemand, *, shrink: bool, rank: Ranking | None = None) -> bool:
        """Place where the strategy prefers, a replica away from its siblings where it can (see _spread)."""
        for hidden in self._spread(demand):
            with self.occupancy.hidden(hidden):
                if self._place_open(demand, shrink=shrink, rank=rank):
                    return True
        return False

    def _place_open(self, demand: ServerDemand, *, shrink: bool, rank: Ranking | None = None) -> bool:
        """Place by the strategy's ranking (or `rank`); in a packing pass, by the pass's fit rule."""
        if rank is None and self.packing is not None and not shrink and demand.fixed_utilization is None:
            return self._place_packed(demand, self.packing.fit)
        ranking = rank or self.strategy.score
        if demand.tensor_parallel == 1:

            def need_on(total: float) -> float:
                return demand.min_mib if shrink else demand.budget_on((total,))

            def score(gpu: GpuState, need: float) -> Score:
                return ranking(demand, gpu, need)

            def admits(gpu: GpuState) -> bool:
                budget = self._budget(demand, [gpu], shrink=shrink)
                return budget is not None and self._refusal(demand, [gpu], budget) is None

            gpu, runners_up, too_small = self.occupancy.best_single(
                need_on, score, vacant_only=demand.dedicated, admits=admits if demand.engine_check else None
            )
            if gpu is None:
                return False
            budget = self._budget(demand, [gpu], shrink=shrink)
            assert budget is not None  # the search only returns GPUs with room for need_on(total)
            self._commit(demand, [gpu], budget, runners_up=[[g] for g in runners_up], too_small=too_small)
            return True
        groups = self._groups(demand, self.occupancy.by_node, shrink=shrink, rank=ranking)
        if not groups:
            return False
        _, best, budget = groups[0]
        self._commit(demand, best, budget, runners_up=[g for _, g, _ in groups[1:]], too_small=[])
        return True

    def _place_packed(self, demand: ServerDemand, fit: str) -> bool:
        """Packing pass: the first GPU(s) in (node, index) order with room, or those left with the least room."""
        need = demand.preferred_mib
        size = demand.tensor_parallel
        group: tuple[str, ...] | None
        if fit == "best":
            group = self._best_fit_group(need, size, dedicated=demand.dedicated, keep=frozenset())
        elif fit == "most_free":
            return self._place_free(demand, shrink=False, rank=_most_free)
        elif size == 1:
            gpu = self.occupancy.first_fitting(need, vacant_only=demand.dedicated)
            group = None if gpu is None else (gpu.slot.uuid,)
        else:
            group = None
            for gpus in self.occupancy.by_node.values():
                fitting = [
                    g.slot.uuid
                    for g in gpus
                    if g.key is not None
                    and not g.slot.mig
                    and (g.vacant or not demand.dedicated)
                    and g.free >= need - _EPS
                ]
                if len(fitting) >= size:
                    group = tuple(fitting[:size])
                    break
        if group is None:
            return False
        gpus = [self.occupancy.by_uuid[u] for u in group]
        if self._refusal(demand, gpus, need) is not None:
            return False
        self._commit(demand, gpus, need, runners_up=[], too_small=[], why=f"{fit} fit in the packing pass")
        return True

    def _groups(
        self, demand: ServerDemand, nodes: Iterable[str], *, shrink: bool, rank: Ranking | None = None
    ) -> list[tuple[Score, Group, float]]:
        """Per node, the best tensor-parallel group that fits, best node first.

        Nodes are first ranked by the strategy's score of their size-th most free open GPU (one score
        per node); only the GROUP_NODES best get their exact group built and scored.
        """
        score = rank or self.strategy.score
        size = demand.tensor_parallel
        floor = demand.min_mib if shrink and demand.shrinkable else None
        # Without a fixed utilization every GPU needs the same budget, so one look at the node's
        # size-th most free GPU rules most nodes out.
        same_need = floor if floor is not None else (demand.preferred_mib if demand.fixed_utilization is None else None)
        shortlist: list[tuple[Score, str]] = []
        for node in nodes:
            open_gpus = _groupable(self.occupancy.open_gpus(node), size)
            if len(open_gpus) < size:
                continue
            pivot = open_gpus[size - 1]
            if same_need is not None and pivot.free < same_need - _EPS:
                continue
            shortlist.append((score(demand, pivot, demand.preferred_mib), node))
        out: list[tuple[Score, Group, float]] = []
        for _, node in heapq.nsmallest(GROUP_NODES, shortlist):
            fitting = [
                g
                for g in _groupable(self.occupancy.open_gpus(node), size)
                if (g.vacant or not demand.dedicated)
                and g.free >= (same_need if same_need is not None else demand.budget_on((g.slot.total_mib,))) - _EPS
            ]
            if len(fitting) < size:
                continue
            fitting.sort(key=lambda g: score(demand, g, demand.preferred_mib))
            group = sorted(fitting[:size], key=lambda g: g.slot.index)
            budget = self._budget(demand, group, shrink=shrink)
            if budget is None or self._refusal(demand, group, budget) is not None:
                continue
            worst = max(score(demand, g, budget) for g in group)
            out.append((worst, group, budget))
        out.sort(key=lambda item: (item[0], item[1][0].slot.node))
        return out

    # --- pins ------------------------------------------------------------------------------------
    def _resolve_pins(self, demand: ServerDemand) -> Group:
        node = demand.pin_node
        occupancy = self.occupancy
        if node is not None and node not in occupancy.by_node:
            raise _PinError("PinnedGpuNotFound", f"pinned node {node} has no GPUs in the inventory")
        group: Group = []
        for ref in demand.pin_gpus:
            gpu = self._find_gpu(node, ref)
            if gpu is None:
                on = (
                    f" on {node} (GPUs {', '.join(str(g.slot.index) for g in occupancy.by_node[node])})" if node else ""
                )
                raise _PinError("PinnedGpuNotFound", f"pinned GPU {ref}{on} not found")
            if gpu in group:
                raise _PinError("PinnedGpuNotFound", f"pinned GPU {ref} listed twice")
            group.append(gpu)
        if len({g.slot.node for g in group}) > 1:
            raise _PinError(
                "TensorParallelSpansNodes", "pinned GPUs are on different nodes; tensor parallel needs one node"
            )
        if len(group) > 1 and any(g.slot.mig for g in group):
            raise _PinError("TensorParallelOnMig", f"pinned GPUs include MIG devices; {MIG_TENSOR_PARALLEL}")
        return group

    def _find_gpu(self, node: str | None, ref: GpuRef) -> GpuState | None:
        if isinstance(ref, int) or ref.isdigit():
            if node is None:
                raise _PinError("PinnedGpuNotFound", f"pinned GPU index {ref} needs a node")
            found = [g for g in self.occupancy.by_node[node] if g.slot.index == int(ref)]
            if len(found) > 1:
                raise _PinError(
                    "PinnedGpuNotFound",
                    f"GPU index {ref} on {node} is in MIG mode; pin one of its MIG devices by UUID "
                    f"({', '.join(g.slot.uuid for g in found)})",
                )
            return found[0] if found else None
        gpu = self.occupancy.by_uuid.get(ref)
        return gpu if gpu is not None and node in (None, gpu.slot.node) else None

    def _place_pinned(self, demand: ServerDemand) -> None:
        group = self._resolve_pins(demand)
        why = "pinned"
        if not group:
            assert demand.pin_node is not None  # pinned with no GPUs means pinned to a node
            for hidden in self._spread(demand):
                with self.occupancy.hidden(hidden):
                    groups = self._groups(demand, [demand.pin_node], shrink=True)
                if groups:
                    break
            if groups:
                _, best, on_node = groups[0]
                self._commit(
                    demand, best, on_node, runners_up=[], too_small=[], why=f"pinned to node {demand.pin_node}"
                )
                return
            group = self._fallback_on_node(demand)
            why = f"pinned to node {demand.pin_node}"
        for gpu in group:
            if not gpu.slot.usable and not (demand.pin_standing and gpu.slot.healthy):
                state = "unhealthy" if not gpu.slot.healthy else "unschedulable (node cordoned or agent stale)"
                raise _PinError("PinnedGpuUnavailable", f"pinned {gpu.slot.label} is {state}")
            if gpu.dedicated or (demand.dedicated and not gpu.vacant):
                holders = ", ".join(sorted(gpu.tenants))
                raise _PinError(
                    "DedicatedUnavailable", f"pinned {gpu.slot.label} is not available alone (holds {holders})"
                )
        budget = self._budget(demand, group, shrink=True)
        warnings: list[str] = []
        overcommit = budget is None
        if budget is None:
            need = demand.budget_on(tuple(g.slot.total_mib for g in group))
            tight = min(group, key=lambda g: g.free)
            if not (self.strategy.allows_overcommit or demand.pin_overcommit):  # pins hold unless Manual
                raise _PinError(
                    "InsufficientMemory",
                    f"needs {need:.0f}MiB per GPU{self._floor_text(demand)}; pinned {tight.slot.label} has "
                    f"{tight.free:.0f}MiB free ({GpuView.of(tight).breakdown(self.margin)})",
                )
            budget = need
            warnings.append(
                f"{demand.key}: budget {need:.0f}MiB over-commits {tight.slot.label} by {need - tight.free:.0f}MiB "
                f"(free {tight.free:.0f}MiB); allowed because the assignment is Manual"
            )
        # A Manual over-commit is allowed (with a warning): only what the engine cannot do on these GPUs
        # even with the co-tenants gone refuses it.
        refusal = self._refusal(demand, group, budget, alone=overcommit)
        if refusal is not None:
            raise _PinError(
                "InsufficientMemory", f"the engine would fail on pinned {self._where_group(group)}: {refusal}"
            )
        self._commit(demand, group, budget, runners_up=[], too_small=[], why=why, warnings=warnings)

    def _fallback_on_node(self, demand: ServerDemand) -> Group:
        """Nothing fits on the pinned node: its most-free GPUs, so the pin fails (or Manual over-commits) there."""
        assert demand.pin_node is not None
        usable = sorted(
            (g for g in _groupable(self.occupancy.by_node[demand.pin_node], demand.tensor_parallel) if g.slot.usable),
            key=lambda g: (-g.free, g.slot.index),
        )
        if len(usable) < demand.tensor_parallel:
            raise _PinError(
                "TensorParallelTooLarge" if demand.tensor_parallel > 1 else "NoHealthyGpu",
                f"needs {demand.tensor_parallel} usable GPU(s) on pinned node {demand.pin_node}; it has {len(usable)}",
            )
        return sorted(usable[: demand.tensor_parallel], key=lambda g: g.slot.index)

    # --- ruin and recreate -----------------------------------------------------------------------
    def _recreate(self, pending: list[ServerDemand]) -> list[ServerDemand]:
        """Node by node: take the movable servers off one node and best-fit them and the unplaced ones back,
        in a few orders; keep the first result that places more VRAM, else put everything back."""
        for gpus in self.occupancy.by_node.values():
            if not pending or self.visits > REPAIR_GPU_VISITS:
                break
            cleared = {t.key: t for g in gpus for t in g.tenants.values() if t.movable}
            if not cleared:
                continue
            before = self.placed_mib
            saved = {server: self.decisions.pop(server) for server in cleared}
            for server in cleared:
                self.occupancy.remove(server)
            candidates = [d.demand for d in saved.values()] + pending
            for order in RECREATE_ORDERS:
                self.visits += len(candidates) * len(gpus)
                placed = [d for d in sorted(candidates, key=order.key) if self._place_best_fit(d)]
                if self.placed_mib > before + _EPS:
                    pending = [d for d in candidates if d.key not in self.decisions]
                    break
                for demand in placed:
                    self.occupancy.remove(demand.key)
                    del self.decisions[demand.key]
            else:
                for server, tenant in cleared.items():
                    self.occupancy.place(tenant)
                    self.decisions[server] = saved[server]
        return sorted(pending, key=self._order_key)

    def _place_best_fit(self, demand: ServerDemand) -> bool:
        if demand.fixed_utilization is not None:
            return self._place_free(demand, shrink=False)
        need = demand.preferred_mib
        group = self._best_fit_group(need, demand.tensor_parallel, dedicated=demand.dedicated, keep=frozenset())
        if group is None:
            return False
        gpus = [self.occupancy.by_uuid[u] for u in group]
        if self._refusal(demand, gpus, need) is not None:
            return False
        self._commit(demand, gpus, need, runners_up=[], too_small=[], why="best fit when re-packing a node")
        return True

    # --- exchange ----------------------------------------------------------------------------------
    def _exchange(self, pending: list[ServerDemand]) -> list[ServerDemand]:
        """Local search, GPU by GPU: trade up to two placed servers for up to two unplaced ones that use more
        of the GPU. Each trade raises the VRAM placed, so it ends; traded-out servers try to go elsewhere."""
        tradable = [d for d in pending if self._tradable(d)]
        stuck = [d for d in pending if not self._tradable(d)]
        for _ in range(REPAIR_ROUNDS):
            improved = False
            for gpu in self.occupancy.gpus:
                if not tradable or self.visits > REPAIR_GPU_VISITS:
                    break
                self.visits += 1
                if gpu.key is None:
                    continue
                tradable.sort(key=lambda d: (d.preferred_mib, d.key))
                sizes = [d.preferred_mib for d in tradable]
                out, into = self._best_trade(gpu, sizes)
                if not into:
                    continue
                improved = True
                incoming = [tradable[i] for i in into]
                tradable = [d for i, d in enumerate(tradable) if i not in into]
                for tenant in out:
                    self.occupancy.remove(tenant.key)
                    tradable.append(self.decisions.pop(tenant.key).demand)
                traded = ", ".join(t.key for t in out)
                for demand in incoming:
                    if self._refusal(demand, [gpu], demand.preferred_mib) is not None:
                        tradable.append(demand)
                        continue
                    why = f"exchange: fills this GPU better than {traded}" if traded else "exchange: fills this GPU"
                    self._commit(demand, [gpu], demand.preferred_mib, runners_up=[], too_small=[], why=why)
                tradable = [d for d in tradable if not self._place_free(d, shrink=False)]
            if not improved:
                break
        return sorted(tradable + stuck, key=self._order_key)

    @staticmethod
    def _tradable(demand: ServerDemand) -> bool:
        return demand.tensor_parallel == 1 and not demand.dedicated and demand.fixed_utilization is None

    def _best_trade(self, gpu: GpuState, sizes: list[float]) -> tuple[list[Tenant], tuple[int, ...]]:
        """The placed servers to take off `gpu` (none, one or two) and the unplaced ones to put on it."""
        movable = [t for t in gpu.tenants.values() if t.movable and not t.dedicated and len(t.uuids) == 1]
        options: list[list[Tenant]] = [[]] + [[t] for t in movable]
        options += [[a, b] for i, a in enumerate(movable) for b in movable[i + 1 :]]
        best: tuple[float, list[Tenant], tuple[int, ...]] = (_EPS, [], ())
        for out in options:
            freed = sum(t.budget_mib for t in out)
            into = best_fill(sizes, gpu.free + freed + _EPS)
            gain = sum(sizes[i] for i in into) - freed
            if gain > best[0]:
                best = (gain, out, into)
        return best[1], best[2]

    # --- repair ----------------------------------------------------------------------------------
    def _room_possible(self, gpu: GpuState, demand: ServerDemand, need: float) -> bool:
        if not gpu.slot.usable:
            return False
        fixed = sum(t.budget_mib for t in gpu.tenants.values() if not t.movable)
        if (demand.dedicated or gpu.dedicated) and fixed > 0:
            return False
        return gpu.capacity - fixed >= need - _EPS

    def _make_room(self, demand: ServerDemand, *, evict: bool) -> bool:
        """Move (or with `evict`, displace smaller) placed servers so that `demand` fits at its preferred budget."""
        if self.visits > REPAIR_GPU_VISITS or demand.fixed_utilization is not None:
            return False
        need = demand.budget_on((1.0,))
        size = demand.tensor_parallel
        candidates: list[tuple[float, str, int, Group]] = []
        for node, gpus in self.occupancy.by_node.items():
            self.visits += len(gpus)
            roomy = [g for g in _groupable(gpus, size) if self._room_possible(g, demand, need)]
            if len(roomy) < size:
                continue
            roomy.sort(key=lambda g: (need - g.free, g.slot.index))
            if size == 1:
                candidates += [(need - g.free, node, g.slot.index, [g]) for g in roomy]
            else:
                group = roomy[:size]
                candidates.append((sum(need - g.free for g in group), node, 0, group))
        for _, _, _, group in heapq.nsmallest(REPAIR_CANDIDATES, candidates, key=lambda c: c[:3]):
            journal: Journal = []
            positions = frozenset(g.position for g in group)
            if all(
                self._clear(g, need, vacant=demand.dedicated, keep=positions, journal=journal, evict=evict)
                for g in group
            ):
                displaced = [old for old, new in journal if new is None]
                gain = need * size - sum(t.budget_mib * len(t.uuids) for t in displaced)
                if (not displaced or gain > _EPS) and self._refusal(demand, group, need) is None:
                    self._commit_repair(demand, group, need, journal)
                    return True
            self._rollback(journal)
        return False

    def _clear(
        self, gpu: GpuState, need: float, *, vacant: bool, keep: frozenset[int], journal: Journal, evict: bool
    ) -> bool:
        """Move tenants off `gpu` until `need` fits (all of them when `vacant`); False when it cannot."""
        movable = sorted((t for t in gpu.tenants.values() if t.movable), key=lambda t: (t.budget_mib, t.key))
        if vacant or gpu.dedicated:  # a dedicated tenant is alone: it goes, and the GPU is vacant
            chosen = movable
        else:
            deficit = need - gpu.free
            if deficit <= _EPS:
                return True
            single = next((t for t in movable if t.budget_mib >= deficit - _EPS), None)
            chosen = [single] if single else []
            if single is None:
                for tenant in reversed(movable):
                    chosen.append(tenant)
                    deficit -= tenant.budget_mib
                    if deficit <= _EPS:
                        break
                else:
                    return False
        for tenant in chosen:
            self.occupancy.remove(tenant.key)
            target = self._relocation(tenant, keep | {gpu.position})
            if target is None:
                journal.append((tenant, None))
                if not evict:
                    return False
                continue
            moved = replace(tenant, uuids=target)
            self.occupancy.place(moved)
            journal.append((tenant, moved))
        return gpu.free >= need - _EPS and (not vacant or gpu.vacant)

    def _relocation(self, tenant: Tenant, keep: frozenset[int]) -> tuple[str, ...] | None:
        """Where a displaced tenant fits best (least free memory left), avoiding the GPUs in `keep`."""
        target = self._best_fit_group(tenant.budget_mib, len(tenant.uuids), dedicated=tenant.dedicated, keep=keep)
        demand = self.demands.get(tenant.key)
        if target is None or demand is None:
            return target
        gpus = [self.occupancy.by_uuid[u] for u in target]
        return target if self._refusal(demand, gpus, tenant.budget_mib) is None else None

    def _best_fit_group(
        self, need: float, size: int, *, dedicated: bool, keep: frozenset[int]
    ) -> tuple[str, ...] | None:
        """`size` open GPUs of one node with `need` free each that leave the least free memory, or None."""
        if size == 1:
            gpu = self.occupancy.best_fit(need, vacant_only=dedicated, exclude=keep)
            return None if gpu is None else (gpu.slot.uuid,)
        best: tuple[float, tuple[str, ...]] | None = None
        for gpus in self.occupancy.by_node.values():
            self.visits += len(gpus)
            fitting = sorted(
                (
                    g
                    for g in gpus
                    if g.key is not None
                    and not g.slot.mig
                    and g.position not in keep
                    and g.free >= need - _EPS
                    and (g.vacant or not dedicated)
                ),
                key=lambda g: (g.free, g.slot.index),
            )[:size]
            if len(fitting) == size:
                left = sum(g.free for g in fitting)
                if best is None or left < best[0]:
                    best = (left, tuple(g.slot.uuid for g in sorted(fitting, key=lambda g: g.slot.index)))
        return None if best is None else best[1]

    def _rollback(self, journal: Journal) -> None:
        for old, new in reversed(journal):
            if new is not None:
                self.occupancy.remove(new.key)
            self.occupancy.place(old)

    def _where_group(self, group: Group) -> str:
        return self._where(tuple(g.slot.uuid for g in group))

    def _refusal(self, demand: ServerDemand, group: Group, budget: float, *, alone: bool = False) -> str | None:
        """Why the engine of `demand` would fail with `budget` on `group` as it stands now (with `alone`: with
        no other server there), or None."""
        if demand.engine_check is None:
            return None
        smallest = min(group, key=lambda g: (g.slot.total_mib, g.slot.index))

        def others_on(gpu: GpuState) -> float:
            return 0.0 if alone else gpu.reserved - self._own_budget(demand, gpu)

        offer = GpuOffer(
            name=smallest.slot.name,
            total_mib=smallest.slot.total_mib,
            foreign_mib=smallest.slot.foreign_mib,
            reserved_by_others_mib=others_on(smallest),
            free_at_start_mib=max(0.0, min(g.slot.total_mib - g.slot.foreign_mib - others_on(g) for g in group)),
        )
        return demand.engine_check(budget, offer)

    @staticmethod
    def _own_budget(demand: ServerDemand, gpu: GpuState) -> float:
        tenant = gpu.tenants.get(demand.key)
        return tenant.budget_mib if tenant is not None else 0.0

    def _where(self, uuids: tuple[str, ...]) -> str:
        gpus = [self.occupancy.by_uuid[u].slot for u in uuids]
        if len(gpus) == 1:
            return gpus[0].label
        return f"{gpus[0].node} GPUs {','.join(str(g.index) for g in gpus)}"

    def _commit_repair(self, demand: ServerDemand, group: Group, need: float, journal: Journal) -> None:
        notes = []
        for old, new in journal:
            source = self._where(old.uuids)
            if new is None:
                notes.append(f"displaced {old.key} ({old.budget_mib:.0f}MiB) from {source}")
                self.evicted.append(self.decisions.pop(old.key).demand)
                continue
            target = self._where(new.uuids)
            notes.append(f"moved {old.key} from {source} to {target}")
            moved = self.decisions[old.key]
            moved.explanation = (
                f"{self.strategy.name}: moved to {target} (tightest GPU that holds its {new.budget_mib:.0f}MiB) "
                f"to make room for {demand.key} on {source}."
            )
        why = "repair made room: " + "; ".join(notes) if notes else "repair"
        self._commit(demand, group, need, runners_up=[], too_small=[], why=why)

    # --- booking ---------------------------------------------------------------------------------
    def _commit(
        self,
        demand: ServerDemand,
        group: Group,
        budget: float,
        *,
        runners_up: Sequence[Group],
        too_small: Sequence[GpuState],
        why: str | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        tight = min(group, key=lambda g: g.free)
        reason = why or self.strategy.why(demand, tight, budget)
        explanation = Choice.seen(
            self.strategy.name,
            chosen=group,
            why=reason,
            need_mib=budget,
            margin_mib=self.margin,
            runners_up=runners_up,
            too_small=too_small,
            notes=demand.notes,
        )
        notes = list(warnings)
        asked = demand.budget_on(tuple(g.slot.total_mib for g in group))
        shrunk = budget < asked - _EPS
        if shrunk:
            notes.append(
                f"{demand.key}: budget {asked:.0f}MiB exceeds {tight.slot.label} free {tight.free:.0f}MiB; "
                f"shrunk to {budget:.0f}MiB"
            )
        movable = not demand.pinned and demand.fixed_utilization is None
        self.occupancy.place(
            Tenant(
                demand.key,
                tuple(g.slot.uuid for g in group),
                budget,
                llm=demand.is_llm,
                critical=demand.latency_critical,
                dedicated=demand.dedicated,
                movable=movable and budget >= asked - _EPS,
            )
        )
        self.decisions[demand.key] = _Decision(demand, explanation, notes, shrunk)

    # --- reasons ---------------------------------------------------------------------------------
    def _floor_text(self, demand: ServerDemand) -> str:
        return f" (can shrink to {demand.min_mib:.0f}MiB)" if demand.shrinkable else ""

    def _diagnose(self, demand: ServerDemand) -> tuple[str, str]:
        usable = [g for g in self.occupancy.gpus if g.slot.usable and not g.dedicated]
        if not usable:
            return (
                "NoHealthyGpu",
                f"none of the {len(self.occupancy.gpus)} GPUs is healthy, schedulable and not dedicated",
            )
        size = demand.tensor_parallel
        need = demand.budget_on((max(g.slot.total_mib for g in usable),))
        floor = demand.min_mib if demand.shrinkable else need
        per_node: dict[str, list[GpuState]] = {}
        for gpu in _groupable(usable, size):
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
        refused = self._engine_diagnosis(demand, usable)
        if refused is not None:
            return "InsufficientMemory", refused
        if demand.dedicated and any(g.capacity >= floor for g in usable if not g.dedicated):
            return (
                "DedicatedUnavailable",
                f"needs a GPU alone with {floor:.0f}MiB; every GPU large enough already has servers",
            )
        if size == 1:
            best = max(usable, key=lambda g: (g.free, g.slot.node, -g.slot.index))
            return (
                "InsufficientMemory",
                f"needs {need:.0f}MiB per GPU{self._floor_text(demand)}; the most free is {best.free:.0f}MiB on "
                f"{best.slot.label}",
            )
        node, gpus = max(
            ((n, gs) for n, gs in per_node.items() if len(gs) >= size),
            key=lambda kv: (sorted((g.free for g in kv[1]), reverse=True)[size - 1], kv[0]),
        )
        frees = sorted((g.free for g in gpus), reverse=True)[:size]
        return (
            "InsufficientMemory",
            f"needs {size} GPUs on one node with {need:.0f}MiB each{self._floor_text(demand)}; the best node, {node}, "
            f"has {', '.join(f'{f:.0f}' for f in frees)}MiB free",
        )

    def _engine_diagnosis(self, demand: ServerDemand, usable: Sequence[GpuState]) -> str | None:
        """When GPUs have room for the budget but the engine would fail on each: what it says on the largest."""
        if demand.engine_check is None or demand.tensor_parallel != 1:
            return None
        roomy = [
            g
            for g in usable
            if g.free >= demand.budget_on((g.slot.total_mib,)) - _EPS and (g.vacant or not demand.dedicated)
        ]
        if not roomy:
            return None
        # One look per product and size (the roomiest of each): alike GPUs get the same answer.
        kinds: dict[tuple[str, float], GpuState] = {}
        for gpu in sorted(roomy, key=lambda g: (-g.free, g.slot.node, g.slot.index)):
            kinds.setdefault((gpu.slot.name, gpu.slot.total_mib), gpu)
        refusals = [(g, self._refusal(demand, [g], demand.budget_on((g.slot.total_mib,)))) for g in kinds.values()]
        if any(why is None for _, why in refusals):
            return None
        gpu, why = max(refusals, key=lambda item: (item[0].slot.total_mib, item[0].free, item[0].slot.node))
        return (
            f"{len(roomy)} GPU(s) have room for its budget but the engine would fail on each; "
            f"on the largest, {gpu.slot.label}: {why}"
        )

    # --- result ----------------------------------------------------------------------------------
    def _replica_numbers(self) -> dict[str, int]:
        """Per replica key, its number in the plan. A placed replica keeps its number (renaming it would
        restart a running replica under another Deployment), except that replica 0 is placed whenever any
        replica is: when replica 0 is left unplaced, one placed replica swaps numbers with it - one placed
        afresh in this run if there is one (nothing runs there yet), else the lowest."""
        by_server: dict[str, list[ServerDemand]] = {}
        for demand in self.demands.values():
            by_server.setdefault(demand.server, []).append(demand)
        number = {demand.key: demand.replica for demand in self.demands.values()}
        for replicas in by_server.values():
            first = next((d for d in replicas if d.replica == 0), None)
            placed = sorted((d for d in replicas if d.key in self.decisions), key=lambda d: d.replica)
            if first is None or first.key in self.decisions or not placed:
                continue
            fresh = [d for d in placed if d.key not in self.pinned]
            stand_in = (fresh or placed)[0]
            number[first.key], number[stand_in.key] = stand_in.replica, 0
        return number

    def result(self) -> Plan:
        for demand in self.leftover:
            reason, message = self._diagnose(demand)
            self.unplaced[demand.key] = Unplaced(demand.server, reason, message, replica=demand.replica)
        number = self._replica_numbers()
        self.unplaced = {
            replica_key(u.server, number.get(k, u.replica)): replace(u, replica=number.get(k, u.replica))
            for k, u in self.unplaced.items()
        }
        placements = []
        all_warnings = list(self.warnings)
        for key in sorted(self.decisions):
            decision = self.decisions[key]
            tenant = self.occupancy.tenants[key]
            gpus = [self.occupancy.by_uuid[u] for u in tenant.uuids]
            all_warnings += decision.warnings
            placements.append(
                Placement(
                    server=decision.demand.server,
                    replica=number[key],
                    node=gpus[0].slot.node,
                    gpu_uuids=tenant.uuids,
                    gpu_indices=tuple(g.slot.index for g in gpus),
                    budget_mib=tenant.budget_mib,
                    gpu_memory_utilization=_utilization(decision.demand, gpus, tenant.budget_mib),
                    warnings=tuple(decision.warnings),
                    explanation=decision.explanation
                    if isinstance(decision.explanation, str)
                    else decision.explanation.render(),
                    dedicated=decision.demand.dedicated,
                )
            )
        summaries = []
        for gpu in self.occupancy.gpus:
            slot = gpu.slot
            if gpu.free < -_EPS:
                all_warnings.append(
                    f"{slot.label}: reserved {gpu.reserved:.0f}MiB + foreign {slot.foreign_mib:.0f}MiB + margin "
                    f"{self.margin:.0f}MiB exceed the total by {-gpu.free:.0f}MiB"
                )
            summaries.append(
                GpuSummary(
                    node=slot.node,
                    uuid=slot.uuid,
                    index=slot.index,
                    name=slot.name,
                    total_mib=slot.total_mib,
                    reserved_mib=gpu.reserved,
                    foreign_mib=slot.foreign_mib,
                    margin_mib=self.margin,
                    free_after_mib=gpu.free,
                    servers=tuple(
                        sorted(
                            replica_key(self.demands[k].server, number[k]) if k in number else k for k in gpu.tenants
                        )
                    ),
                    mig=slot.mig,
                )
            )
        return Plan(
            strategy=self.strategy.name,
            placements=tuple(placements),
            unplaced=tuple(self.unplaced[s] for s in sorted(self.unplaced)),
            warnings=tuple(all_warnings),
            gpus=tuple(summaries),
            margin_mib=self.margin,
        )


def _groupable(gpus: Iterable[GpuState], size: int) -> list[GpuState]:
    """The GPUs a group of `size` may use: any for one GPU; no MIG device for tensor parallel."""
    return [g for g in gpus if size == 1 or not g.slot.mig]


def _group_key(gpu: GpuState) -> str:
    """What a tensor-parallel group must share: the node; a MIG device is a group of its own."""
    return f"{gpu.slot.node}\0{gpu.slot.uuid}" if gpu.slot.mig else gpu.slot.node


def _utilization(demand: ServerDemand, gpus: Sequence[GpuState], budget: float) -> float | None:
    """vLLM's --gpu-memory-utilization for the budget: rounded down so vLLM never takes more than reserved."""
    if demand.engine != "vllm":
        return None
    if demand.fixed_utilization is not None:
        return demand.fixed_utilization
    return math.floor(budget * 100 / max(g.slot.total_mib for g in gpus) + 1e-9) / 100
