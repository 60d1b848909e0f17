"""plan(): put servers on GPUs by strategy, under the memory, tensor-parallel, isolation and pin rules.

Every strategy runs the same passes; the strategy only orders servers and ranks GPUs.
1. pins (manual assignments, spec.placement): honoured or unplaced with a reason (Manual may over-commit);
2. greedy: each other server at its preferred budget onto the GPU(s) the strategy ranks best;
3. repair, for servers still unplaced: make room by moving placed servers elsewhere (best fit) or by
   displacing smaller ones; trade placed servers for unplaced ones that fill a GPU better; re-pack one
   node at a time. Every step raises the VRAM placed or is undone; all are bounded and deterministic;
4. shrink: servers still unplaced that may shrink take the best GPU that holds their floor;
5. the rest are unplaced with a CamelCase reason and the numbers.
When something stays unplaced, a first-fit-decreasing pass runs through the same steps, then the
solver (solver.py, a mixed-integer program) re-packs, from the better of the two, the servers free to
move with the unplaced ones: all of them on a small problem, else those on the nodes with the most room
for the unplaced ones. The plan placing the most VRAM wins and its servers then move, one by one, to the
GPU the strategy prefers among those with room.
Invariant (all but Manual): on every GPU, reservations + foreign + margin <= total.
Each replica of a server is a demand of its own (key "ns/name[i]"): wherever a pass places freely, a
replica first passes over the nodes, then the GPUs, of its placed siblings; it shares one only when
nothing else has room, and then with its own budget counted. In the plan a server's placed replicas
are numbered 0..k-1, so replica 0 is placed whenever any is.
This module orchestrates the passes; the steps live beside it: pins.py (pins), repair.py (make room,
exchange, recreate), diagnosis.py (refusals and why a server stays unplaced), occupancy.py (the state,
with node_index.py: nodes indexed for tensor-parallel groups).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Literal

from vram_operator.placement.demand import ManualAssignment, ServerDemand, replica_key
from vram_operator.placement.diagnosis import Diagnosis, refusal
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.explain import Choice
from vram_operator.placement.inventory import Inventory
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.node_index import pivot
from vram_operator.placement.occupancy import EPS, GpuState, Group, Occupancy, Score, Tenant, groupable
from vram_operator.placement.pins import PinError, place_pinned
from vram_operator.placement.repair import exchange, recreate, repair
from vram_operator.placement.result import GpuSummary, Placement, Plan, Unplaced
from vram_operator.placement.solver import Assignment, Gpu, Server, solve
from vram_operator.placement.strategies import Strategy, strategy_named

# Head-room kept free on every GPU, on top of reservations and measured foreign use. Servers' own
# budgets already include their CUDA context; the margin absorbs what moves between agent reports
# (a desktop or editor growing, allocator fragmentation, driver allocations). 256 MiB is about 1% of
# a 24 GB card and 6% of a 4 GB one: enough to ride out that drift without wasting a small GPU.
DEFAULT_MARGIN_MIB = 256

# Tensor-parallel search builds exact GPU groups on this many best-looking nodes only.
GROUP_NODES = 8


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
    one_namespace_per_gpu: bool = False,
) -> Plan:
    """Place `demands` on `inventory`. Reservations in `ledger` of servers not in `demands` stay put.

    `one_namespace_per_gpu` (dra pinning): servers of different namespaces never share a GPU.
    """
    chosen = strategy_named(strategy) if isinstance(strategy, str) else strategy
    if margin_mib < 0:
        raise PlacementError(f"margin must be >= 0 MiB, got {margin_mib}", field="margin_mib")
    by_server: dict[str, ServerDemand] = {}
    for demand in demands:
        if demand.key in by_server:
            raise PlacementError(f"server {demand.key} is listed twice", field="server")
        by_server[demand.key] = demand

    def planner_for(packing: Packing | None) -> Planner:
        return Planner(
            inventory=inventory,
            demands=by_server,
            strategy=chosen,
            ledger=ledger or Ledger(),
            margin_mib=margin_mib,
            manual=manual,
            packing=packing,
            one_namespace_per_gpu=one_namespace_per_gpu,
        )

    def attempt(packing: Packing | None) -> Planner:
        planner = planner_for(packing)
        planner.run()
        return planner

    best = first = attempt(None)
    if best.complete:
        best.spread_out()  # repair may have moved replicas together to make room
        return best.result()
    # Something did not fit. First-fit decreasing (plus the same repair) runs, so no strategy places less
    # than it; then the solver re-packs, from the better plan, what is free to move: all of it, or region
    # after region (up to REGION_ROUNDS, each on nodes not re-packed before, from the plan the previous
    # one left). The plan placing the most VRAM is kept and each of its servers then moves to the GPU the
    # strategy prefers among those with room, which never lowers what is placed. The solver knows no
    # namespaces: it is not run when one namespace per GPU is kept.
    packed = attempt(FIRST_FIT_DECREASING)
    if packed.placed_mib > best.placed_mib + EPS:
        best = packed
    solved_nodes: frozenset[str] = frozenset()
    for _ in range(REGION_ROUNDS):
        if best.complete or one_namespace_per_gpu:
            break
        solved = planner_for(None)
        part = solved.run_solver(best, solved_nodes=solved_nodes)
        if not part.gpus:
            break
        if solved.placed_mib <= best.placed_mib + EPS:
            break  # nothing gained (a region: the next ones have less room)
        best = solved
        if part.whole:
            break
        solved_nodes |= part.nodes
    if best is not first:
        best.polish()
    best.spread_out()
    return best.result()


@dataclass(frozen=True)
class Packing:
    """An order servers go in, for a plain packing pass (first fit) or a node's re-packing (best fit)."""

    order: Literal["size", "per_gpu", "multi_gpu_first"]

    def key(self, demand: ServerDemand) -> tuple[object, ...]:
        size = demand.preferred_mib * demand.tensor_parallel
        if self.order == "size":
            return (not demand.pinned, -size, demand.key)
        if self.order == "per_gpu":
            return (not demand.pinned, -demand.preferred_mib, -demand.tensor_parallel, demand.key)
        return (not demand.pinned, -demand.tensor_parallel, -demand.preferred_mib, demand.key)


FIRST_FIT_DECREASING = Packing("size")
RECREATE_ORDERS: tuple[Packing, ...] = (Packing("size"), Packing("per_gpu"), Packing("multi_gpu_first"))
# The solver re-packs every server free to move when (servers x GPUs) is at most SOLVER_CELLS; on larger
# problems, the unplaced ones (up to REGION_SERVERS, largest first) with the servers on the nodes that
# have the most room for them (about REGION_GPUS GPUs), then again on the next such nodes while each
# region gains, up to REGION_ROUNDS regions; a later region is skipped when its free room (all a
# re-packing could add) is less than the smallest unplaced server's floor. Each solve stops after
# SOLVER_NODES branch-and-bound nodes (deterministic: the same fleet gives the same plan under any load);
# SOLVER_SECONDS is a far guard against a starved machine (the quality benchmark's largest solve takes
# under 5 s of CPU; at 20 s the guard still bound when eight jobs shared two cores).
SOLVER_CELLS = 1_500
REGION_SERVERS = 16
REGION_GPUS = 6
REGION_ROUNDS = 3
SOLVER_NODES = 50
SOLVER_SECONDS = 60.0


class Planner:
    """One planning run: the passes over one Occupancy, and the plan they leave (pins.py, repair.py and
    diagnosis.py hold the pin, repair and refusal steps it calls)."""

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
        one_namespace_per_gpu: bool = False,
    ) -> None:
        self.strategy = strategy
        self.packing = packing
        self.margin = margin_mib
        self.occupancy = Occupancy(
            inventory,
            ledger,
            margin_mib,
            frozenset(demands),
            packing=packing is not None,
            one_namespace_per_gpu=one_namespace_per_gpu,
        )
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
    def order_key(self, demand: ServerDemand) -> tuple[object, ...]:
        if self.packing is not None:
            return self.packing.key(demand)
        return self.strategy.order_key(demand)

    def run(self) -> None:
        pending: list[ServerDemand] = []
        for demand in sorted(self.demands.values(), key=self.order_key):
            if demand.pinned:
                try:
                    place_pinned(self, demand)
                except PinError as failure:
                    self.unplaced[demand.key] = Unplaced(
                        demand.server, failure.reason, failure.message, replica=demand.replica
                    )
            elif not self.place_free(demand, shrink=False):
                pending.append(demand)
        pending = repair(self, pending)
        if pending:
            pending = repair(self, exchange(self, pending))
        if pending:
            pending = recreate(self, pending, RECREATE_ORDERS)
        self.leftover = [d for d in pending if not (d.shrinkable and self.place_free(d, shrink=True))]

    def run_solver(self, start: Planner, *, solved_nodes: frozenset[str] = frozenset()) -> _SolverPart:
        """The plan `start` left, with what is free to move re-packed by the solver (see SOLVER_CELLS): pins,
        fixed utilizations and servers outside the solver's part stay where `start` put them, with its
        explanations; the solver's servers go where it puts them (at least as much VRAM as in `start`).
        A region is chosen outside `solved_nodes`. Returns the part the solver re-packed."""
        self.unplaced = dict(start.unplaced)
        chosen = self._solver_part(start, solved_nodes)
        keys = {d.key for d in chosen.servers}
        for key, decision in start.decisions.items():
            if key not in keys:
                self.occupancy.place(start.occupancy.tenants[key])
                self.decisions[key] = replace(decision, warnings=list(decision.warnings))
        self.leftover = [d for d in start.leftover if d.key not in keys]
        if not chosen.gpus:
            return chosen
        gpus = [g for g in self.occupancy.gpus if g.key is not None and g.position in chosen.gpus]
        index = {g.position: i for i, g in enumerate(gpus)}
        servers = [self._solver_server(d, gpus) for d in chosen.servers]
        begin: dict[str, Assignment] = {}
        for demand in chosen.servers:
            tenant = start.occupancy.tenants.get(demand.key)
            if tenant is not None and demand.key in start.decisions:
                positions = [index[self.occupancy.by_uuid[u].position] for u in tenant.uuids]
                begin[demand.key] = Assignment(tuple(sorted(positions)), tenant.budget_mib)
        found = solve(
            [Gpu(_group_key(g), g.free, vacant=g.vacant, mig=g.slot.mig) for g in gpus],
            servers,
            start=begin,
            nodes=SOLVER_NODES,
            seconds=SOLVER_SECONDS,
        )
        proof = (
            "proven optimal" if found.optimal else f"best found; no packing places more than {found.bound_mib:.0f}MiB"
        )
        why = f"solver: part of the set of servers that places the most VRAM ({proof})"
        for demand in sorted(chosen.servers, key=self.order_key):
            assignment = found.assignments.get(demand.key)
            if assignment is None:
                continue
            group = [gpus[i] for i in assignment.gpus]
            if (
                min(g.free for g in group) >= assignment.budget - EPS
                and refusal(demand, group, assignment.budget) is None
            ):
                self.commit(demand, group, assignment.budget, runners_up=[], too_small=[], why=why)
        rest = [d for d in chosen.servers if d.key not in self.decisions]
        self.leftover += [d for d in rest if not (d.shrinkable and self.place_free(d, shrink=True))]
        return chosen

    def _solver_part(self, start: Planner, solved_nodes: frozenset[str]) -> _SolverPart:
        """What the solver re-packs: every server free to move (not pinned, no fixed utilization) and every
        open GPU on a small problem; else the unplaced ones, largest first, and the servers on the nodes
        with the most free memory where one of them could go (none of `solved_nodes`)."""
        movable = [d.demand for d in start.decisions.values() if _free_to_move(d.demand)]
        unplaced = sorted(
            (d for d in start.leftover if _free_to_move(d)), key=lambda d: (-d.preferred_mib * d.tensor_parallel, d.key)
        )
        if start.solver_takes_all():
            everything = frozenset(g.position for g in start.occupancy.gpus)
            return _SolverPart(tuple(movable + unplaced), everything, frozenset(start.occupancy.by_node), whole=True)
        unplaced = unplaced[:REGION_SERVERS]
        nodes: list[tuple[float, str, list[GpuState]]] = []
        for node, members in start.occupancy.by_node.items():
            if node in solved_nodes:
                continue
            usable = [
                g
                for g in members
                if g.slot.usable and not any(not t.movable for t in g.tenants.values() if t.dedicated)
            ]
            capacity = sorted((g.capacity for g in usable), reverse=True)
            if any(
                len(capacity) >= d.tensor_parallel and capacity[d.tensor_parallel - 1] >= d.min_mib - EPS
                for d in unplaced
            ):
                nodes.append((-sum(max(0.0, g.free) for g in usable), node, usable))
        gpus: set[int] = set()
        chosen: set[str] = set()
        room = 0.0
        for free, node, usable in sorted(nodes, key=lambda item: item[:2]):
            if len(gpus) >= REGION_GPUS:
                break
            gpus.update(g.position for g in usable)
            chosen.add(node)
            room -= free
        if solved_nodes and room < min((d.min_mib for d in unplaced), default=math.inf):
            return _SolverPart((), frozenset(), frozenset(), whole=False)  # a re-packing would gain little
        inside = [
            d
            for d in movable
            if {start.occupancy.by_uuid[u].position for u in start.occupancy.tenants[d.key].uuids} <= gpus
        ]
        return _SolverPart(tuple(inside + unplaced), frozenset(gpus), frozenset(chosen), whole=False)

    def solver_takes_all(self) -> bool:
        """Whether the solver, starting from this plan, re-packs every server free to move on every GPU
        (SOLVER_CELLS), rather than a region."""
        deciding = sum(_free_to_move(d.demand) for d in self.decisions.values())
        deciding += sum(_free_to_move(d) for d in self.leftover)
        return deciding * len(self.occupancy.gpus) <= SOLVER_CELLS

    def _solver_server(self, demand: ServerDemand, gpus: Sequence[GpuState]) -> Server:
        """`demand` as the solver sees it: the GPUs its engine refuses (as they stand now) left out, and its
        replicas kept off each other's GPUs (a plan that needs them together is left to the greedy passes)."""
        floor = demand.min_mib if demand.shrinkable else demand.preferred_mib
        allowed = None
        if demand.engine_check is not None:
            allowed = frozenset(
                i
                for i, g in enumerate(gpus)
                if refusal(demand, [g], min(demand.preferred_mib, max(floor, math.floor(g.free)))) is None
            )
        apart = demand.server if self.replica_counts.get(demand.server, 1) > 1 else None
        return Server(demand.key, demand.preferred_mib, floor, demand.tensor_parallel, demand.dedicated, allowed, apart)

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
        for demand in sorted((d.demand for d in self.decisions.values()), key=self.order_key):
            if not self.occupancy.tenants[demand.key].movable:
                continue
            tenant = self.occupancy.remove(demand.key)
            decision = self.decisions.pop(demand.key)
            if not self.place_free(demand, shrink=False):  # its old GPU has room again, but others moved
                self.occupancy.place(tenant)
                self.decisions[demand.key] = decision

    def spread_out(self) -> None:
        """Replicas left nearer their siblings than needed (placed before a later pass freed room apart)
        move to a GPU further apart where one has room; each move goes strictly further apart, so it ends."""
        moved = True
        while moved:
            moved = False
            for decision in sorted(self.decisions.values(), key=lambda d: self.order_key(d.demand)):
                demand = decision.demand
                tenant = self.occupancy.tenants[demand.key]
                if self.replica_counts.get(demand.server, 1) < 2 or not tenant.movable:
                    continue
                tiers = self.spread(demand)
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
                if self.place_open(demand, shrink=False):
                    return True
        return False

    # --- choosing GPUs ---------------------------------------------------------------------------
    def budget(self, demand: ServerDemand, group: Group, *, shrink: bool) -> float | None:
        """The budget `demand` gets on `group`, or None when it does not fit."""
        need = demand.budget_on(tuple(g.slot.total_mib for g in group))
        free = min(g.free for g in group)
        if free >= need - EPS:
            return need
        if shrink and demand.shrinkable and free >= demand.min_mib - EPS:
            return float(math.floor(free + EPS))
        return None

    def spread(self, demand: ServerDemand) -> list[frozenset[int]]:
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

    def place_free(self, demand: ServerDemand, *, shrink: bool) -> bool:
        """Place where the strategy prefers, a replica away from its siblings where it can (see _spread)."""
        for hidden in self.spread(demand):
            with self.occupancy.hidden(hidden) if hidden else nullcontext():
                if self.place_open(demand, shrink=shrink):
                    return True
        return False

    def place_open(self, demand: ServerDemand, *, shrink: bool) -> bool:
        """Place by the strategy's ranking; in the packing pass, first fit; only on GPUs open
        to its namespace (Occupancy.serving)."""
        if not self.occupancy.one_namespace_per_gpu:
            return self._place_open(demand, shrink=shrink)
        with self.occupancy.serving(demand.namespace):
            return self._place_open(demand, shrink=shrink)

    def _place_open(self, demand: ServerDemand, *, shrink: bool) -> bool:
        if self.packing is not None and not shrink and demand.fixed_utilization is None:
            return self._place_packed(demand)
        ranking = self.strategy.score
        if demand.tensor_parallel == 1:

            def need_on(total: float) -> float:
                return demand.min_mib if shrink else demand.budget_on((total,))

            def score(gpu: GpuState, need: float) -> Score:
                return ranking(demand, gpu, need)

            def admits(gpu: GpuState) -> bool:
                budget = self.budget(demand, [gpu], shrink=shrink)
                return budget is not None and refusal(demand, [gpu], budget) is None

            gpu, runners_up, too_small = self.occupancy.best_single(
                need_on, score, vacant_only=demand.dedicated, admits=admits if demand.engine_check else None
            )
            if gpu is None:
                return False
            budget = self.budget(demand, [gpu], shrink=shrink)
            assert budget is not None  # the search only returns GPUs with room for need_on(total)
            self.commit(demand, [gpu], budget, runners_up=[[g] for g in runners_up], too_small=too_small)
            return True
        groups = self.groups(demand, None, shrink=shrink)
        if not groups:
            return False
        _, best, budget = groups[0]
        self.commit(demand, best, budget, runners_up=[g for _, g, _ in groups[1:]], too_small=[])
        return True

    def _place_packed(self, demand: ServerDemand) -> bool:
        """Packing pass: the first GPU(s) in (node, index) order with room."""
        need = demand.preferred_mib
        size = demand.tensor_parallel
        group: tuple[str, ...] | None
        if size == 1:
            gpu = self.occupancy.first_fitting(need, vacant_only=demand.dedicated)
            group = None if gpu is None else (gpu.slot.uuid,)
        else:
            node = self.occupancy.first_group_node(size, need, vacant_only=demand.dedicated)
            group = None
            if node is not None:
                fitting = [
                    g.slot.uuid
                    for g in self.occupancy.by_node[node]
                    if g.key is not None
                    and not g.slot.mig
                    and (g.vacant or not demand.dedicated)
                    and g.free >= need - EPS
                ]
                group = tuple(fitting[:size])
        if group is None:
            return False
        gpus = [self.occupancy.by_uuid[u] for u in group]
        if refusal(demand, gpus, need) is not None:
            return False
        self.commit(demand, gpus, need, runners_up=[], too_small=[], why="first fit in the packing pass")
        return True

    def groups(
        self, demand: ServerDemand, nodes: Iterable[str] | None, *, shrink: bool
    ) -> list[tuple[Score, Group, float]]:
        """Per node (of `nodes`, or of the whole fleet), the best tensor-parallel group that fits, best node first.

        Nodes are first ranked by the strategy's score of their size-th most free open GPU (one score
        per node, the pivot); only the GROUP_NODES best get their exact group built and scored. Over the
        whole fleet, only the pivots leading their bucket in the occupancy's node index are scored.
        """
        score = self.strategy.score
        size = demand.tensor_parallel
        floor = demand.min_mib if shrink and demand.shrinkable else None
        # Without a fixed utilization every GPU needs the same budget, so one look at the node's
        # size-th most free GPU rules most nodes out.
        same_need = floor if floor is not None else (demand.preferred_mib if demand.fixed_utilization is None else None)
        if nodes is None:
            pivots = self.occupancy.leading_pivots(size, same_need, GROUP_NODES)
        else:
            found = (pivot(self.occupancy.open_gpus(node), size) for node in nodes)
            pivots = [p for p in found if p is not None and (same_need is None or p.free >= same_need - EPS)]
        shortlist = [(score(demand, p, demand.preferred_mib), p.slot.node) for p in pivots]
        out: list[tuple[Score, Group, float]] = []
        for _, node in heapq.nsmallest(GROUP_NODES, shortlist):
            fitting = [
                g
                for g in groupable(self.occupancy.open_gpus(node), size)
                if (g.vacant or not demand.dedicated)
                and g.free >= (same_need if same_need is not None else demand.budget_on((g.slot.total_mib,))) - EPS
            ]
            if len(fitting) < size:
                continue
            fitting.sort(key=lambda g: score(demand, g, demand.preferred_mib))
            group = sorted(fitting[:size], key=lambda g: g.slot.index)
            budget = self.budget(demand, group, shrink=shrink)
            if budget is None or refusal(demand, group, budget) is not None:
                continue
            worst = max(score(demand, g, budget) for g in group)
            out.append((worst, group, budget))
        out.sort(key=lambda item: (item[0], item[1][0].slot.node))
        return out

    # --- booking ---------------------------------------------------------------------------------
    def commit(
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
        shrunk = budget < asked - EPS
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
                movable=movable and budget >= asked - EPS,
            )
        )
        self.decisions[demand.key] = _Decision(demand, explanation, notes, shrunk)

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
        diagnosis = Diagnosis(self.occupancy) if self.leftover else None
        for demand in self.leftover:
            assert diagnosis is not None
            reason, message = diagnosis.of(demand)
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
            if gpu.free < -EPS:
                all_warnings.append(
                    f"{slot.label}: reserved {gpu.reserved:.0f}MiB + foreign {slot.foreign_mib:.0f}MiB + margin "
                    f"{self.margin:.0f}MiB exceed the total by {-gpu.free:.0f}MiB"
                )
            servers = (
                tuple(sorted(replica_key(self.demands[k].server, number[k]) if k in number else k for k in gpu.tenants))
                if gpu.tenants
                else ()
            )
            # Positional: this runs once per GPU of the fleet on every planning run (see GpuSummary).
            summaries.append(
                GpuSummary(
                    slot.node,
                    slot.uuid,
                    slot.index,
                    slot.name,
                    slot.total_mib,
                    gpu.reserved,
                    slot.foreign_mib,
                    self.margin,
                    gpu.free,
                    servers,
                    slot.mig,
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


@dataclass(frozen=True)
class _SolverPart:
    """The servers the solver decides, the GPU positions it may use and their nodes; `whole`: every server
    free to move on every GPU."""

    servers: tuple[ServerDemand, ...]
    gpus: frozenset[int]
    nodes: frozenset[str]
    whole: bool


def _free_to_move(demand: ServerDemand) -> bool:
    return not demand.pinned and demand.fixed_utilization is None


def _group_key(gpu: GpuState) -> str:
    """What a tensor-parallel group must share: the node; a MIG device is a group of its own."""
    return f"{gpu.slot.node}\0{gpu.slot.uuid}" if gpu.slot.mig else gpu.slot.node


def _utilization(demand: ServerDemand, gpus: Sequence[GpuState], budget: float) -> float | None:
    """vLLM's --gpu-memory-utilization for the budget: rounded down so vLLM never takes more than reserved
    (its share and the CUDA graphs it captures beyond it)."""
    if demand.engine != "vllm":
        return None
    if demand.fixed_utilization is not None:
        return demand.fixed_utilization
    return math.floor((budget - demand.beyond_share_mib) * 100 / max(g.slot.total_mib for g in gpus) + 1e-9) / 100
