"""The exact packing search, against brute force on tiny problems."""

from __future__ import annotations

from itertools import combinations, product

import pytest
from hypothesis import given
from hypothesis import strategies as st
from placement_helpers import fleet, generic, llm

from vram_operator.placement import planner
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan
from vram_operator.placement.search import Bin, Item, pack

EPS = 1e-6


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[Bin], list[Item]]:
    bins = [
        Bin(
            f"node-{n}",
            float(draw(st.integers(0, 10))),
            vacant=draw(st.integers(0, 3)) > 0,
            open=draw(st.integers(0, 5)) > 0,
        )
        for n in range(draw(st.integers(1, 2)))
        for _ in range(draw(st.integers(1, 3)))
    ]
    items = [
        Item(f"ns/s{i}", float(draw(st.integers(1, 8))), draw(st.integers(1, 2)), draw(st.integers(0, 4)) == 0)
        for i in range(draw(st.integers(1, 4)))
    ]
    return bins, items


def valid(bins: list[Bin], items: list[Item], chosen: dict[str, tuple[int, ...]]) -> bool:
    """Every rule the planner keeps: room, open GPUs, one node and distinct GPUs per item, dedicated alone."""
    by_name = {it.name: it for it in items}
    used = [0.0] * len(bins)
    holders: list[list[Item]] = [[] for _ in bins]
    for name, group in chosen.items():
        item = by_name[name]
        if len(set(group)) != item.width or len({bins[p].node for p in group}) != 1:
            return False
        for p in group:
            used[p] += item.size
            holders[p].append(item)
    for p, b in enumerate(bins):
        if not holders[p]:
            continue
        if not b.open or used[p] > b.free + EPS:
            return False
        if any(it.dedicated for it in holders[p]) and (len(holders[p]) > 1 or not b.vacant):
            return False
    return True


def brute_force(bins: list[Bin], items: list[Item]) -> float:
    options: list[list[tuple[int, ...] | None]] = []
    for item in items:
        groups: list[tuple[int, ...] | None] = [None]
        for node in {b.node for b in bins}:
            positions = [p for p, b in enumerate(bins) if b.node == node]
            groups += list(combinations(positions, item.width))
        options.append(groups)
    best = 0.0
    for pick in product(*options):
        chosen = {it.name: g for it, g in zip(items, pick, strict=True) if g is not None}
        if valid(bins, items, chosen):
            best = max(best, sum(it.total for it in items if it.name in chosen))
    return best


@given(problems())
def test_pack_finds_the_optimum_and_keeps_the_rules(problem: tuple[list[Bin], list[Item]]) -> None:
    bins, items = problem
    optimum = brute_force(bins, items)
    found = pack(bins, items, beat=0.0, steps=4_000)
    if optimum <= EPS:
        assert found is None
        return
    assert found is not None
    assert valid(bins, items, found)
    assert sum(it.total for it in items if it.name in found) == optimum


@given(problems())
def test_pack_reports_nothing_when_it_cannot_beat_the_mark(problem: tuple[list[Bin], list[Item]]) -> None:
    bins, items = problem
    assert pack(bins, items, beat=brute_force(bins, items), steps=4_000) is None


def test_pack_swaps_tensor_parallel_groups_for_a_dedicated_server() -> None:
    # Largest first would put the 4-GPU server on node-a and strand the dedicated one; the optimum puts the
    # dedicated server alone on node-a's big GPU and both 4-GPU servers on node-b.
    bins = [Bin("node-a", 20.0)] + [Bin("node-a", 6.0) for _ in range(3)] + [Bin("node-b", 12.0) for _ in range(4)]
    items = [Item("ns/tp-a", 6.0, 4), Item("ns/tp-b", 6.0, 4), Item("ns/alone", 19.0, 1, dedicated=True)]
    found = pack(bins, items, beat=0.0, steps=10_000)
    assert found is not None
    assert found["ns/alone"] == (0,)
    assert set(found) == {"ns/tp-a", "ns/tp-b", "ns/alone"}


def test_pack_stops_after_its_step_budget_with_the_best_so_far() -> None:
    bins = [Bin(f"node-{n}", 10.0) for n in range(6)]
    items = [Item(f"ns/s{i}", 3.0 + 0.5 * (i % 5)) for i in range(14)]
    short = pack(bins, items, beat=0.0, steps=5)  # one greedy fill and a few search steps
    assert short is not None and valid(bins, items, short)
    assert pack(bins, items, beat=0.0, steps=200) == pack(bins, items, beat=0.0, steps=200)  # no clock, no chance


# A fleet where greedy and local repair leave two servers out: the dedicated server belongs on node-2 GPU 1,
# which the repair passes fill with smaller servers. WITNESS is a placement that keeps every rule (checked
# below); every strategy must place at least as much.
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
def test_the_search_finds_what_local_repair_misses(strategy: str) -> None:
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


def test_without_the_search_that_fleet_is_placed_worse(monkeypatch: pytest.MonkeyPatch) -> None:
    witness = sum(d.preferred_mib for d in HARD_DEMANDS if d.server in WITNESS)
    monkeypatch.setattr(planner, "SEARCH_SERVERS", 0)
    assert plan(HARD, HARD_DEMANDS, "VRAMBased", ledger=HARD_LEDGER).placed_mib < witness


def test_large_problems_never_run_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the exact search ran on a large problem")

    monkeypatch.setattr(planner, "pack", refuse)
    many = fleet(*((f"node-{n}", [("NVIDIA L4", 23034.0, 0.0)] * 2) for n in range(3)))
    demands = [generic(f"ns/s{i:02d}", 3000 + 37 * i) for i in range(planner.SEARCH_SERVERS + 1)]
    result = plan(many, demands, "VRAMBased")
    assert result.unplaced  # something was left over, and still no search


def test_every_restart_costs_a_step_even_when_it_packs_nothing() -> None:
    # Nothing to pack (or nothing that fits) must end within the step budget, not loop forever.
    assert pack([Bin("n", 100.0)], [], beat=0.0, steps=50) is None
    assert pack([Bin("n", 100.0)], [Item("a", 500.0)], beat=0.0, steps=50) is None
