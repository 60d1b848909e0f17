"""The solver (placement/solver.py) against brute force on tiny problems, and what it adds to a plan."""

from __future__ import annotations

from itertools import combinations, product

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_helpers import fleet, generic, llm

from vram_operator.placement import planner
from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import Inventory
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, Planner, plan
from vram_operator.placement.solver import Assignment, Gpu, Server, Solution, placed_mib, solve
from vram_operator.placement.strategies import strategy_named

EPS = 1e-6


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[Gpu], list[Server]]:
    gpus = [
        Gpu(
            f"node-{n}",
            float(draw(st.integers(0, 10))),
            vacant=draw(st.integers(0, 3)) > 0,
            mig=draw(st.integers(0, 6)) == 0,
        )
        for n in range(draw(st.integers(1, 2)))
        for _ in range(draw(st.integers(1, 3)))
    ]
    servers = []
    for i in range(draw(st.integers(1, 4))):
        budget = draw(st.integers(1, 8))
        floor = draw(st.integers(1, budget))
        allowed = draw(st.one_of(st.none(), st.frozensets(st.integers(0, len(gpus) - 1))))
        servers.append(
            Server(
                f"ns/s{i}", float(budget), float(floor), draw(st.integers(1, 2)), draw(st.integers(0, 4)) == 0, allowed
            )
        )
    return gpus, servers


def valid(gpus: list[Gpu], servers: list[Server], chosen: dict[str, Assignment]) -> bool:
    """Every rule the planner keeps: room, one group and distinct GPUs per server, dedicated alone on a
    GPU that had no tenant, no MIG device in a tensor-parallel group, budget within [floor, budget]."""
    by_key = {s.key: s for s in servers}
    used = [0.0] * len(gpus)
    holders: list[list[Server]] = [[] for _ in gpus]
    for key, a in chosen.items():
        server = by_key[key]
        if len(set(a.gpus)) != server.width or len({gpus[p].group for p in a.gpus}) != 1:
            return False
        if not server.floor - EPS <= a.budget <= server.budget + EPS:
            return False
        if server.allowed is not None and not set(a.gpus) <= server.allowed:
            return False
        if server.width > 1 and any(gpus[p].mig for p in a.gpus):
            return False
        for p in a.gpus:
            used[p] += a.budget
            holders[p].append(server)
    for p, gpu in enumerate(gpus):
        if used[p] > gpu.free + EPS:
            return False
        if any(s.dedicated for s in holders[p]) and (len(holders[p]) > 1 or not gpu.vacant):
            return False
    return True


def brute_force(gpus: list[Gpu], servers: list[Server]) -> float:
    """The most VRAM any packing places: every choice of GPUs per server, budgets at whole MiB."""
    options: list[list[Assignment | None]] = []
    for server in servers:
        picks: list[Assignment | None] = [None]
        for group in {g.group for g in gpus}:
            positions = [p for p, g in enumerate(gpus) if g.group == group]
            for chosen in combinations(positions, server.width):
                for budget in range(int(server.floor), int(server.budget) + 1):
                    picks.append(Assignment(chosen, float(budget)))
        options.append(picks)
    best = 0.0
    for pick in product(*options):
        chosen = {s.key: a for s, a in zip(servers, pick, strict=True) if a is not None}
        if valid(gpus, servers, chosen):
            best = max(best, placed_mib(chosen))
    return best


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solve_finds_the_optimum_and_keeps_the_rules(problem: tuple[list[Gpu], list[Server]]) -> None:
    gpus, servers = problem
    found = solve(gpus, servers, nodes=None, seconds=30)
    assert valid(gpus, servers, dict(found.assignments))
    assert found.placed_mib == pytest.approx(brute_force(gpus, servers))
    assert found.optimal


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_solve_is_deterministic_and_never_below_its_start(problem: tuple[list[Gpu], list[Server]]) -> None:
    gpus, servers = problem
    first = solve(gpus, servers, nodes=None, seconds=30)
    assert solve(gpus, servers, nodes=None, seconds=30) == first
    # From a start that places one server, the answer places at least that much.
    start = dict(list(first.assignments.items())[:1])
    again = solve(gpus, servers, start=start, nodes=0, seconds=30)
    assert again.placed_mib >= placed_mib(start) - EPS
    assert valid(gpus, servers, dict(again.assignments))


def test_room_equal_to_the_budget_fits_and_one_mib_less_does_not() -> None:
    server = Server("ns/a", 1000.0, 1000.0)
    assert solve([Gpu("n", 1000.0)], [server]).placed_mib == 1000.0
    assert solve([Gpu("n", 999.0)], [server]).placed_mib == 0.0
    shrinkable = Server("ns/b", 1000.0, 600.0)
    assert solve([Gpu("n", 600.0)], [shrinkable]).placed_mib == 600.0
    assert solve([Gpu("n", 599.0)], [shrinkable]).placed_mib == 0.0
    assert solve([Gpu("n", 799.6)], [shrinkable]).assignments["ns/b"].budget == 799.0  # whole MiB, never over


def test_shrinkable_servers_are_proven_optimal_within_the_node_limit() -> None:
    """Issue 14: a budget column tied to the GPUs by big-M rows let the relaxation count a half-placed
    server's whole budget, so the bound stayed above what fits and nothing was proven in 50 nodes."""
    gpus = [Gpu("a", 20000.0), Gpu("a", 16000.0), Gpu("b", 12000.0)]
    budgets = [9000.0, 8500.0, 8000.0, 7000.0, 6500.0, 6000.0]
    servers = [Server(f"ns/s{i}", b, float(round(b * 0.7))) for i, b in enumerate(budgets)]
    found = solve(gpus, servers, nodes=50, seconds=30)
    assert found.optimal and found.bound_mib <= found.placed_mib + 0.5
    assert found.placed_mib == 44500.0  # all but the 500 MiB the 6,000 MiB server gives up to fit
    assert valid(gpus, servers, dict(found.assignments))


def test_tensor_parallel_ranks_share_one_group_and_one_budget() -> None:
    gpus = [Gpu("a", 900.0), Gpu("a", 500.0), Gpu("b", 700.0), Gpu("b", 800.0)]
    found = solve(gpus, [Server("ns/tp", 1000.0, 400.0, width=2)])
    assert found.assignments["ns/tp"] == Assignment((2, 3), 700.0)  # node b: 2 x 700 beats node a: 2 x 500
    assert found.optimal


def test_a_dedicated_server_keeps_its_gpu_alone_and_avoids_tenanted_ones() -> None:
    gpus = [Gpu("a", 1000.0, vacant=False), Gpu("a", 1000.0)]
    found = solve(gpus, [Server("ns/alone", 300.0, 300.0, dedicated=True), Server("ns/x", 800.0, 800.0)])
    assert found.assignments["ns/alone"].gpus == (1,)
    assert found.assignments["ns/x"].gpus == (0,)


def test_an_empty_problem_places_nothing() -> None:
    assert solve([], []) == Solution({}, 0.0, 0.0)
    assert solve([Gpu("n", 100.0)], []).placed_mib == 0.0


HARD = fleet(
    (
        "node-0",
        [
            ("NVIDIA RTX A400", 4094, 0),
            ("NVIDIA RTX A400", 4094, 0),
            ("NVIDIA RTX A400", 4094, 901),
            ("NVIDIA RTX A400", 4094, 0),
        ],
    ),
    ("node-1", [("NVIDIA RTX A400", 4094, 1049)]),
    (
        "node-2",
        [
            ("NVIDIA L4", 23034, 2602),
            ("NVIDIA L4", 23034, 5893),
            ("NVIDIA GeForce RTX 3060", 12288, 0),
            ("NVIDIA L4", 23034, 0),
        ],
    ),
)
HARD_LEDGER = Ledger(
    (
        Reservation("kept/r0", "node-0", ("GPU-node-0-1",), 1093, True),
        Reservation("kept/r1", "node-0", ("GPU-node-0-2",), 318, False),
    )
)
HARD_DEMANDS = [
    generic("ns/s00", 10346),
    generic("ns/s01", 5347),
    generic("ns/s02", 763),
    generic("ns/s03", 4945),
    generic("ns/s04", 5200),
    generic("ns/s05", 3324),
    llm("ns/s06", 10994),
    generic("ns/s07", 4598),
    llm("ns/s08", 20731, dedicated=True),
    llm("ns/s09", 16611, dedicated=True),
    llm("ns/s10", 11750),
    llm("ns/s11", 7589),
]
WITNESS = {
    "ns/s00": ("GPU-node-2-3",),
    "ns/s01": ("GPU-node-2-0",),
    "ns/s02": ("GPU-node-0-3",),
    "ns/s03": ("GPU-node-2-0",),
    "ns/s04": ("GPU-node-2-0",),
    "ns/s05": ("GPU-node-0-0",),
    "ns/s06": ("GPU-node-2-3",),
    "ns/s07": ("GPU-node-2-0",),
    "ns/s09": ("GPU-node-2-1",),
    "ns/s10": ("GPU-node-2-2",),
}


def test_the_witness_keeps_every_rule() -> None:
    for slot in HARD.slots:
        mine = [d for d in HARD_DEMANDS if slot.uuid in WITNESS.get(d.server, ())]
        kept = HARD_LEDGER.reservations_on(slot.uuid)
        used = sum(d.preferred_mib for d in mine) + sum(r.budget_mib for r in kept)
        assert used <= slot.total_mib - slot.foreign_mib - DEFAULT_MARGIN_MIB
        if any(d.dedicated for d in mine):
            assert len(mine) == 1 and not kept


@pytest.mark.parametrize("strategy", ["VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced"])
def test_the_solver_finds_what_local_repair_misses(strategy: str) -> None:
    witness = sum(d.preferred_mib for d in HARD_DEMANDS if d.server in WITNESS)
    result = plan(HARD, HARD_DEMANDS, strategy, ledger=HARD_LEDGER)
    assert result.placed_mib >= witness
    assert all(g.free_after_mib >= 0 for g in result.gpus)
    for placement in result.placements:
        assert placement.explanation
        if placement.dedicated:
            gpu = next(g for g in result.gpus if g.uuid == placement.gpu_uuids[0])
            assert gpu.servers == (placement.server,) and gpu.reserved_mib == placement.budget_mib
    assert {u.server for u in result.unplaced} | {p.server for p in result.placements} == {
        d.server for d in HARD_DEMANDS
    }


def _greedy_only(gpus: object, servers: object, *, start: dict[str, Assignment], **kw: object) -> Solution:
    return Solution(start, placed_mib(start), placed_mib(start))


def test_without_the_solver_that_fleet_is_placed_worse(monkeypatch: pytest.MonkeyPatch) -> None:
    witness = sum(d.preferred_mib for d in HARD_DEMANDS if d.server in WITNESS)
    monkeypatch.setattr(planner, "solve", _greedy_only)
    assert plan(HARD, HARD_DEMANDS, "VRAMBased", ledger=HARD_LEDGER).placed_mib < witness


def test_servers_the_solver_places_say_so_and_unplaced_ones_keep_their_diagnosis() -> None:
    result = plan(HARD, HARD_DEMANDS, "VRAMBased", ledger=HARD_LEDGER)
    texts = [p.explanation for p in result.placements]
    assert any("solver: part of the set of servers that places the most VRAM" in t or "VRAMBased" in t for t in texts)
    for u in result.unplaced:
        assert u.reason in {"InsufficientMemory", "DedicatedUnavailable"} and "needs" in u.message


def test_a_large_problem_gives_the_solver_only_the_unplaced_part(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []

    def record(gpus: list[Gpu], servers: list[Server], **kw: object) -> Solution:
        seen.append((len(gpus), len(servers)))
        return solve(gpus, servers, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(planner, "solve", record)
    many = fleet(*((f"node-{n:02d}", [("NVIDIA L4", 23034.0, 0.0)] * 4) for n in range(12)))
    demands = [generic(f"ns/s{i:03d}", 2500 + 37 * (i % 50)) for i in range(400)]
    result = plan(many, demands, "VRAMBased")
    assert result.unplaced and len(seen) == 1
    gpus, servers = seen[0]
    assert 0 < gpus <= planner.REGION_GPUS + 3  # whole nodes (of 4 here) until REGION_GPUS are reached
    assert servers <= planner.REGION_SERVERS + gpus * 20
    assert planner.SOLVER_CELLS < (160 * 48)  # the whole problem is above the limit


def test_servers_tagged_apart_never_share_a_gpu() -> None:
    gpus = [Gpu("a", 1000.0), Gpu("a", 300.0)]
    replicas = [Server("ns/r", 400.0, 400.0, apart="ns/r"), Server("ns/r[1]", 400.0, 400.0, apart="ns/r")]
    found = solve(gpus, replicas)
    assert found.placed_mib == 400.0 and found.optimal  # together they would fit GPU 0, but not apart
    assert solve(gpus, [Server(s.key, s.budget, s.floor) for s in replicas]).placed_mib == 800.0


def _planner(inventory: Inventory, demands: list[ServerDemand]) -> Planner:
    return Planner(
        inventory=inventory,
        demands={d.key: d for d in demands},
        strategy=strategy_named("VRAMBased"),
        ledger=Ledger(),
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=None,
    )


@pytest.mark.parametrize(("unplaced_mib", "solved"), [(1000.0, True), (1001.0, False)])
def test_a_later_region_is_re_packed_only_when_its_room_holds_an_unplaced_floor(
    monkeypatch: pytest.MonkeyPatch, unplaced_mib: float, solved: bool
) -> None:
    """Re-packing a region gains at most its room: a later round skips a region with less room than
    the smallest unplaced server needs (here 2 x 500 MiB spread over two GPUs; no single one fits it)."""
    monkeypatch.setattr(planner, "SOLVER_CELLS", 0)
    monkeypatch.setattr(planner, "REGION_GPUS", 2)
    room = 23034.0 - DEFAULT_MARGIN_MIB
    nodes = fleet(*((f"node-{n}", [("NVIDIA L4", 23034.0, 0.0)] * 2) for n in range(2)))
    demands = [generic(f"ns/fill{i}", room - 500) for i in range(4)] + [generic("ns/late", unplaced_mib)]
    start = _planner(nodes, demands)
    start.run()
    assert [d.key for d in start.leftover] == ["ns/late"]
    first = _planner(nodes, demands).run_solver(start)
    assert not first.whole and len(first.nodes) == 1  # the first round always runs
    later = _planner(nodes, demands).run_solver(start, solved_nodes=first.nodes)
    assert bool(later.gpus) is solved
    if solved:
        assert later.nodes == frozenset({"node-0", "node-1"}) - first.nodes and "ns/late" in {
            d.key for d in later.servers
        }
