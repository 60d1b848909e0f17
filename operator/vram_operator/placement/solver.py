"""Exact packing with HiGHS: which of the servers being decided go onto which free GPUs, at what budget.

The planner hands over a small pure problem: the GPUs that may take new servers (what is free on each
once pins, fixed budgets and standing reservations are counted, whether each still has no tenant, what
a tensor-parallel group must share with it) and the servers to decide (budget per GPU and the floor it
may shrink to, how many GPUs of one group, whether alone, which GPUs its engine accepts). The model is
a multi-knapsack with those side rules, as a mixed-integer program:

- x[s,g] = 1 when server s takes GPU g; for a tensor-parallel server, z[s,n] = 1 when it takes `width`
  GPUs of group n (sum of its x on n = width * z[s,n]); each server takes at most one choice;
- a server that cannot shrink reserves its budget on each of its GPUs; one that can reserves u[s,g],
  between its floor and its budget where x[s,g] = 1 and 0 elsewhere (floor * x <= u <= budget * x), and
  the objective counts u itself: no budget column tied to the GPUs by big-M rows, whose relaxation let
  a half-placed server count its whole budget (a bound above the fleet's room, so nothing was proven).
  A tensor-parallel one has one budget v[s,n] per group; its reservations there add up to width * v
  and none exceeds v, so every rank reserves v;
- per GPU, what the servers reserve fits its room; a dedicated server counts the whole room of its GPU
  (tight), and per GPU one row for each other server allows it or the dedicated ones, not both;
  servers with the same `apart` tag (replicas of one server) never share a GPU;
- maximise the VRAM placed (budget x GPUs).

HiGHS runs on one thread with a fixed seed; its effort is bounded by a number of branch-and-bound
nodes (the same input gives the same answer) and, as a guard against a starved machine, by a
wall-clock limit several times longer than the node limit needs. A starting plan (the greedy one)
is handed over so the search never returns less than it. HiGHS's presolve is off: on these models it
took longer than it saved (the planner's solver calls on the quality benchmark's instances: 41 s of
CPU with it, 25 s without, at least as much placed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

_EPS = 1e-6
_INF = math.inf  # HiGHS's own infinity (kHighsInf): a row or bound without a side


@dataclass(frozen=True)
class Gpu:
    """A GPU that may take new servers: `group` is what a tensor-parallel group must share (its node; a
    MIG device is a group of its own), `free` its room in MiB, `vacant` whether it has no tenant yet,
    `mig` whether it is a MIG device (no tensor-parallel group uses one)."""

    group: str
    free: float
    vacant: bool = True
    mig: bool = False


@dataclass(frozen=True)
class Server:
    """A server to decide: budget per GPU and the floor it may shrink to (equal: it cannot), `width` GPUs
    of one group, `dedicated` alone on its GPUs, `allowed` the positions its engine accepts (None: any);
    servers with the same `apart` tag never share a GPU."""

    key: str
    budget: float
    floor: float
    width: int = 1
    dedicated: bool = False
    allowed: frozenset[int] | None = None
    apart: str | None = None

    @property
    def shrinkable(self) -> bool:
        return self.floor < self.budget - _EPS

    @property
    def total(self) -> float:
        return self.budget * self.width


@dataclass(frozen=True)
class Assignment:
    """Where a server goes: GPU positions (ascending) and its budget per GPU."""

    gpus: tuple[int, ...]
    budget: float


@dataclass(frozen=True)
class Solution:
    assignments: Mapping[str, Assignment]
    placed_mib: float  # budget x GPUs, in all
    bound_mib: float  # no packing places more than this (equal to placed_mib when proven optimal)

    @property
    def optimal(self) -> bool:
        return self.placed_mib >= self.bound_mib - 0.5


def placed_mib(assignments: Mapping[str, Assignment]) -> float:
    return sum(a.budget * len(a.gpus) for a in assignments.values())


def solve(
    gpus: Sequence[Gpu],
    servers: Sequence[Server],
    *,
    start: Mapping[str, Assignment] | None = None,
    nodes: int | None = 2_000,
    seconds: float = 2.0,
) -> Solution:
    """The best packing found within `nodes` branch-and-bound nodes (None: until proven) and `seconds`.
    `start`, a valid packing of some of `servers`, is where the search begins; the answer places at
    least as much as it."""
    model = _Model(gpus, servers)
    return model.solve(start or {}, nodes=nodes, seconds=seconds)


def options(gpus: Sequence[Gpu], server: Server) -> dict[str, list[int]]:
    """Per group, the positions `server` may take there (only groups with `width` of them)."""
    out: dict[str, list[int]] = {}
    for p, gpu in enumerate(gpus):
        if (
            gpu.free >= server.floor - _EPS
            and (gpu.vacant or not server.dedicated)
            and (server.allowed is None or p in server.allowed)
            and (server.width == 1 or not gpu.mig)
        ):
            out.setdefault(gpu.group, []).append(p)
    return {group: ps for group, ps in out.items() if len(ps) >= server.width}


class _Model:
    """The program as column bounds, costs and rows, built once and passed to HiGHS in one call."""

    def __init__(self, gpus: Sequence[Gpu], servers: Sequence[Server]) -> None:
        self.gpus = gpus
        self.servers = servers
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[float, float, list[int], list[float]]] = []
        self.x: list[dict[int, int]] = []  # per server: GPU position -> column
        self.z: list[dict[str, int]] = []  # per tensor-parallel server: group -> column
        self.u: list[dict[int, int]] = []  # per shrinkable server: GPU position -> reserved column
        self.v: list[dict[str, int]] = []  # per shrinkable tensor-parallel server: group -> budget column
        load: list[tuple[list[int], list[float]]] = [([], []) for _ in gpus]
        tenants: list[list[tuple[int, int]]] = [[] for _ in gpus]
        for i, server in enumerate(servers):
            xs: dict[int, int] = {}
            zs: dict[str, int] = {}
            us: dict[int, int] = {}
            vs: dict[str, int] = {}
            choices: list[int] = []
            for group, positions in options(gpus, server).items():
                for p in positions:
                    xs[p] = self._column(0.0, 1.0, integer=True)
                if server.width == 1:
                    choices += [xs[p] for p in positions]
                else:
                    zs[group] = self._column(0.0, 1.0, integer=True)
                    choices.append(zs[group])
                    self._row(
                        0.0, 0.0, [xs[p] for p in positions] + [zs[group]], [1.0] * len(positions) + [-server.width]
                    )
                if server.shrinkable:
                    reserved, budget = self._reserve(server, {p: xs[p] for p in positions}, zs.get(group))
                    us.update(reserved)
                    if budget is not None:
                        vs[group] = budget
            if choices:
                self._row(-_INF, 1.0, choices, [1.0] * len(choices))
            if not server.shrinkable:
                for column in choices:
                    self.cost[column] = -server.total
            for p, x in xs.items():
                # A dedicated server takes its whole GPU: counting all its room keeps the relaxation tight.
                if server.dedicated:
                    load[p][0].append(x)
                    load[p][1].append(max(0.0, gpus[p].free))
                elif p in us:
                    load[p][0].append(us[p])
                    load[p][1].append(1.0)
                else:
                    load[p][0].append(x)
                    load[p][1].append(server.budget)
                tenants[p].append((i, x))
            self.x.append(xs)
            self.z.append(zs)
            self.u.append(us)
            self.v.append(vs)
        for p, gpu in enumerate(gpus):
            if load[p][0]:
                self._row(-_INF, max(0.0, gpu.free), *load[p])
            alone = [x for i, x in tenants[p] if servers[i].dedicated]
            if alone:  # at most one dedicated server, and none beside it
                shared = [[x] for i, x in tenants[p] if not servers[i].dedicated]
                for other in shared or [[]]:
                    self._row(-_INF, 1.0, alone + other, [1.0] * (len(alone) + len(other)))
            siblings: dict[str, list[int]] = {}
            for i, x in tenants[p]:
                tag = servers[i].apart
                if tag is not None:
                    siblings.setdefault(tag, []).append(x)
            for columns in siblings.values():
                if len(columns) > 1:
                    self._row(-_INF, 1.0, columns, [1.0] * len(columns))

    def _reserve(self, server: Server, xs: dict[int, int], z: int | None) -> tuple[dict[int, int], int | None]:
        """A shrinkable server's reservation column u on each GPU of one group it may take (`xs`: position ->
        x column), between floor and budget where it is placed and 0 elsewhere (the objective counts u);
        for a tensor-parallel one (`z` its column for the group) also its budget v there: its `width`
        reservations add up to width x v and none exceeds v, so all equal v."""
        us: dict[int, int] = {}
        for p, x in xs.items():
            room = min(server.budget, max(self.gpus[p].free, server.floor))
            u = us[p] = self._column(0.0, room, cost=-1.0)
            self._row(0.0, _INF, [u, x], [1.0, -server.floor])
            self._row(-_INF, 0.0, [u, x], [1.0, -room])
        if z is None:
            return us, None
        v = self._column(0.0, server.budget)
        self._row(0.0, _INF, [v, z], [1.0, -server.floor])
        self._row(-_INF, 0.0, [v, z], [1.0, -server.budget])
        self._row(0.0, 0.0, [*us.values(), v], [1.0] * len(us) + [-float(server.width)])
        for u in us.values():
            self._row(-_INF, 0.0, [u, v], [1.0, -1.0])
        return us, v

    def _column(self, lower: float, upper: float, *, integer: bool = False, cost: float = 0.0) -> int:
        self.lower.append(lower)
        self.upper.append(upper)
        self.cost.append(cost)
        if integer:
            self.integer.append(len(self.lower) - 1)
        return len(self.lower) - 1

    def _row(self, lower: float, upper: float, columns: list[int], values: list[float]) -> None:
        self.rows.append((lower, upper, columns, values))

    def _start(self, start: Mapping[str, Assignment]) -> list[float]:
        values = [0.0] * len(self.lower)
        for i, server in enumerate(self.servers):
            chosen = start.get(server.key)
            if chosen is None or not set(chosen.gpus) <= set(self.x[i]):
                continue
            group = self.gpus[chosen.gpus[0]].group
            if server.width > 1 and group not in self.z[i]:
                continue
            for p in chosen.gpus:
                values[self.x[i][p]] = 1.0
                if p in self.u[i]:
                    values[self.u[i][p]] = chosen.budget
            if server.width > 1:
                values[self.z[i][group]] = 1.0
                if group in self.v[i]:
                    values[self.v[i][group]] = chosen.budget
        return values

    def solve(self, start: Mapping[str, Assignment], *, nodes: int | None, seconds: float) -> Solution:
        if not self.lower:
            return Solution({}, 0.0, 0.0)
        # Imported here, not with the module: HiGHS and numpy are about 25 MiB of the operator's
        # memory, and only plans that greedy leaves unplaced ever reach the solver.
        import highspy

        # The bare binding: the wrapper class prints a banner to stdout when it is made (it would
        # corrupt `plan -o json`) and adds callbacks this model does not use.
        h = highspy._Highs()  # type: ignore[attr-defined]  # not in highspy's stub
        for option, value in (
            ("output_flag", False),
            ("presolve", "off"),
            ("threads", 1),
            ("random_seed", 0),
            ("mip_rel_gap", 0.0),
            ("mip_abs_gap", 0.5),  # budgets are whole MiB: half a MiB is no gain
            ("time_limit", seconds),
            ("mip_max_nodes", nodes if nodes is not None else 2**31 - 1),
        ):
            h.setOptionValue(option, value)
        n = len(self.lower)
        h.addVars(n, self.lower, self.upper)
        h.changeColsCost(n, list(range(n)), self.cost)
        if self.integer:
            kind = highspy.HighsVarType.kInteger.value
            h.changeColsIntegrality(len(self.integer), self.integer, [kind] * len(self.integer))
        if self.rows:
            h.addRows(
                len(self.rows),
                [row[0] for row in self.rows],
                [row[1] for row in self.rows],
                sum(len(row[2]) for row in self.rows),
                list(accumulate((len(row[2]) for row in self.rows[:-1]), initial=0)),
                [c for row in self.rows for c in row[2]],
                [v for row in self.rows for v in row[3]],
            )
        if start:
            h.setSolution(n, list(range(n)), self._start(start))
        h.run()
        info = h.getInfo()
        bound = -float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else placed_mib(start)
        if info.primal_solution_status != 2:  # no feasible point found (2: kSolutionStatusFeasible)
            return Solution(dict(start), placed_mib(start), max(bound, placed_mib(start)))
        values = h.getSolution().col_value
        out: dict[str, Assignment] = {}
        for i, server in enumerate(self.servers):
            on = tuple(sorted(p for p, x in self.x[i].items() if values[x] > 0.5))
            if not on:
                continue
            budget = server.budget
            if self.u[i]:
                reserved = min(values[self.u[i][p]] for p in on)
                budget = min(server.budget, max(server.floor, math.floor(reserved + _EPS)))
            out[server.key] = Assignment(on, float(budget))
        found = _repaired(self.gpus, self.servers, out)
        if placed_mib(found) < placed_mib(start) - _EPS:
            found = dict(start)
        return Solution(found, placed_mib(found), max(bound, placed_mib(found)))


def _repaired(gpus: Sequence[Gpu], servers: Sequence[Server], found: dict[str, Assignment]) -> dict[str, Assignment]:
    """The solver's answer within its tolerances made exact: shrunk budgets are whole MiB, and a server
    that would over-commit a GPU by a rounding error gives up what is over (down to its floor) or its place."""
    by_key = {s.key: s for s in servers}
    used = [0.0] * len(gpus)
    for a in found.values():
        for p in a.gpus:
            used[p] += a.budget
    for key in sorted(found, key=lambda k: (-found[k].budget, k)):
        a = found[key]
        over = max(used[p] - gpus[p].free for p in a.gpus)
        if over <= _EPS:
            continue
        server = by_key[key]
        lowered = math.floor(a.budget - over)
        for p in a.gpus:
            used[p] -= a.budget
        if lowered >= server.floor - _EPS and server.shrinkable:
            found[key] = Assignment(a.gpus, float(lowered))
            for p in a.gpus:
                used[p] += lowered
        else:
            del found[key]
    return found
