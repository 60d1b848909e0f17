"""The small search structures behind the planner, against brute force."""

from __future__ import annotations

import heapq
from collections import Counter
from itertools import combinations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_helpers import draw_gpu_slots

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.exchange import best_fill
from vram_operator.placement.first_fit import NONE, FirstFitIndex
from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.occupancy import EPS, GpuState, Occupancy, Tenant
from vram_operator.placement.planner import FIRST_FIT_DECREASING, GROUP_NODES, Packing, Planner
from vram_operator.placement.strategies import strategy_named


@given(st.lists(st.integers(1, 100), max_size=12), st.integers(0, 250))
def test_best_fill_is_the_best_single_or_pair(sizes: list[int], room: int) -> None:
    ordered = sorted(float(s) for s in sizes)
    chosen = best_fill(ordered, room)
    options = [()] + [(i,) for i in range(len(ordered))] + list(combinations(range(len(ordered)), 2))
    best = max(sum(ordered[i] for i in option) for option in options if sum(ordered[i] for i in option) <= room)
    assert len(set(chosen)) == len(chosen) <= 2
    assert sum(ordered[i] for i in chosen) == best


@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), min_size=1, max_size=40), st.integers(0, 60))
def test_first_fit_index_finds_the_lowest_position_with_room(values: list[int | None], need: int) -> None:
    index = FirstFitIndex(len(values))
    for position, value in enumerate(values):
        index.set(position, 99)  # overwritten below: the tree must follow updates both ways
        index.set(position, NONE if value is None else value)
    expected = next((i for i, v in enumerate(values) if v is not None and v >= need), None)
    assert index.first_at_least(need) == expected


SIZES = (8192, 24564, 46068, 81559)


@st.composite
def occupancies(draw: st.DrawFn) -> Occupancy:
    """A fleet (MIG devices and unusable GPUs among them) after random placements and removals."""
    slots = draw_gpu_slots(draw, 8, SIZES)
    occupancy = Occupancy(Inventory(tuple(slots)), Ledger(), 256, frozenset(), packing=False)
    for i in range(draw(st.integers(0, 40))):
        if draw(st.integers(0, 9)) == 0:  # the node indexes built (or refreshed) before later changes
            for size in range(1, 5):
                occupancy.leading_pivots(size, None, 1)
                occupancy.first_group_node(size, 0, vacant_only=False)
                occupancy.first_group_node(size, 0, vacant_only=True)
        if occupancy.tenants and draw(st.integers(0, 3)) == 0:
            occupancy.remove(draw(st.sampled_from(sorted(occupancy.tenants))))
            continue
        node = draw(st.sampled_from(occupancy.nodes))
        gpus = draw(st.lists(st.sampled_from(occupancy.by_node[node]), min_size=1, max_size=3, unique=True))
        occupancy.place(
            Tenant(
                f"ns/t{i}",
                tuple(g.slot.uuid for g in gpus),
                float(draw(st.integers(100, 30000))),
                llm=draw(st.booleans()),
                critical=draw(st.booleans()),
                dedicated=draw(st.integers(0, 9)) == 0,
            )
        )
    return occupancy


def pivot_by_walk(occupancy: Occupancy, node: str, size: int, vacant_only: bool) -> GpuState | None:
    """The size-th most free open GPU of `node` a group may use, from its GPUs directly."""
    members = sorted(
        (
            g
            for g in occupancy.by_node[node]
            if g.key is not None and (size == 1 or not g.slot.mig) and (g.vacant or not vacant_only)
        ),
        key=lambda g: (-g.free, g.slot.index),
    )
    return members[size - 1] if len(members) >= size else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(occupancies(), st.integers(1, 4), st.integers(0, 90000), st.booleans())
def test_first_group_node_is_the_first_node_whose_group_fits(
    occupancy: Occupancy, size: int, need: int, vacant_only: bool
) -> None:
    expected = next(
        (
            node
            for node in occupancy.nodes
            if (p := pivot_by_walk(occupancy, node, size, vacant_only)) is not None and p.free >= need - EPS
        ),
        None,
    )
    assert occupancy.first_group_node(size, need, vacant_only=vacant_only) == expected
    # exactly at the pivot's free memory the node fits; one MiB more and it does not
    if expected is not None:
        at = pivot_by_walk(occupancy, expected, size, vacant_only)
        assert at is not None
        assert occupancy.first_group_node(size, at.free, vacant_only=vacant_only) is not None
        beyond = occupancy.first_group_node(size, at.free + 1, vacant_only=vacant_only)
        assert beyond is None or beyond != expected


@st.composite
def group_demands(draw: st.DrawFn) -> ServerDemand:
    return ServerDemand(
        "ns/d",
        "vllm",
        20000,
        20000,
        tensor_parallel=draw(st.integers(1, 4)),
        latency_critical=draw(st.booleans()),
        is_llm=draw(st.booleans()),
        dedicated=draw(st.booleans()),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    occupancies(),
    group_demands(),
    st.one_of(st.none(), st.integers(0, 80000)),
    st.sampled_from(("VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced")),
)
def test_leading_pivots_hold_the_nodes_a_strategy_ranks_best(
    occupancy: Occupancy, demand: ServerDemand, floor: int | None, strategy: str
) -> None:
    size = demand.tensor_parallel
    score = strategy_named(strategy).score
    every = [
        (score(demand, p, demand.preferred_mib), node)
        for node in occupancy.nodes
        if (p := pivot_by_walk(occupancy, node, size, False)) is not None and (floor is None or p.free >= floor - EPS)
    ]
    leading = occupancy.leading_pivots(size, floor, 3)
    shortlist = [(score(demand, p, demand.preferred_mib), p.slot.node) for p in leading]
    assert heapq.nsmallest(3, shortlist) == heapq.nsmallest(3, every)


def group_planner(packing: Packing | None) -> Planner:
    """50 two-GPU servers to place on 200 nodes of 8 GPUs, the first 190 of them full."""
    slots = tuple(make_slot(f"n{n:03d}", i, 46068, name="NVIDIA L40S") for n in range(200) for i in range(8))
    full = Ledger(tuple(Reservation(f"kept/{s.uuid}", s.node, (s.uuid,), 45000) for s in slots if s.node < "n190"))
    demands = {
        f"ns/tp-{i}": ServerDemand(f"ns/tp-{i}", "vllm", 20000.0 - i, 20000.0 - i, tensor_parallel=2) for i in range(50)
    }
    return Planner(
        inventory=Inventory(slots),
        demands=demands,
        strategy=strategy_named("VRAMBased"),
        ledger=full,
        margin_mib=256,
        manual=(),
        packing=packing,
    )


def test_placing_a_group_ranks_the_nodes_that_lead_not_every_node() -> None:
    planner = group_planner(None)
    looked = Counter[str]()
    open_gpus = planner.occupancy.open_gpus

    def counted(node: str) -> list[GpuState]:
        looked[node] += 1
        return open_gpus(node)

    planner.occupancy.open_gpus = counted  # type: ignore[method-assign]
    planner.run()
    assert len(planner.decisions) == 50
    # One look at each node to build the index, then a few per placement (the changed nodes, the leaders
    # of each bucket and the best of them), not one at each of the 200 nodes per placement.
    assert sum(looked.values()) <= 200 + 50 * (GROUP_NODES + 8)


def test_first_fit_of_a_group_skips_the_full_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    planner = group_planner(FIRST_FIT_DECREASING)
    looks = [0]
    free = GpuState.free

    def counted(gpu: GpuState) -> float:
        looks[0] += 1
        return free.fget(gpu)  # type: ignore[no-any-return, misc]

    monkeypatch.setattr(GpuState, "free", property(counted))
    planner.run()
    assert len(planner.decisions) == 50
    assert all(planner.occupancy.tenants[key].uuids[0] >= "GPU-n190" for key in planner.decisions)
    # A few looks at each GPU to file it, then tens per placement, not a look at each full GPU per placement.
    assert looks[0] <= 5 * 1600 + 50 * 40
