"""Each replica of a server is a placement of its own: its own GPU(s) and budget, spread for availability."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_helpers import fleet, generic, llm, reserved_on

from vram_operator.api import InferenceServer
from vram_operator.placement.demand import ManualAssignment, ServerDemand, replica_key
from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan
from vram_operator.placement.strategies import STRATEGY_NAMES

EPS = 1e-6
L40S = 46068


def replicas(demand: ServerDemand, count: int) -> list[ServerDemand]:
    return [replace(demand, replica=i) for i in range(count)]


def test_replica_keys_are_distinct_and_replica_zero_is_the_server() -> None:
    assert replica_key("ai/llm", 0) == "ai/llm"
    keys = [d.key for d in replicas(llm("ai/llm", 1000), 3)]
    assert keys == ["ai/llm", "ai/llm[1]", "ai/llm[2]"]


def test_three_replicas_go_to_three_gpus_and_other_nodes_first() -> None:
    inventory = fleet(("a", [("L40S", L40S, 0), ("L40S", L40S, 0)]), ("b", [("L40S", L40S, 0)]))
    for strategy in ("VRAMBased", "Balanced", "LatencyOptimized", "IsolationFirst"):
        result = plan(inventory, replicas(llm("ai/llm", 20000), 3), strategy)
        assert not result.unplaced, strategy
        placed = {p.replica: p for p in result.placements}
        assert sorted(placed) == [0, 1, 2]
        assert len({p.gpu_uuids for p in placed.values()}) == 3, strategy
        # The second replica goes to the other node before a second GPU of the first one.
        assert placed[0].node != placed[1].node, strategy
        assert all(p.budget_mib == 20000 for p in placed.values())


def test_replicas_share_a_gpu_only_when_each_budget_fits_exactly_fits() -> None:
    budget = 10000.0
    total = 3 * budget + DEFAULT_MARGIN_MIB  # room for exactly three budgets
    result = plan(fleet(("a", [("X", total, 0)])), replicas(generic("ai/det", budget), 3), "VRAMBased")
    assert not result.unplaced
    assert len(result.placements) == 3
    assert reserved_on(result, "GPU-a-0") == 3 * budget  # every replica's reservation counted


def test_replicas_share_a_gpu_only_when_each_budget_fits_one_mib_over() -> None:
    budget = 10000.0
    total = 3 * budget + DEFAULT_MARGIN_MIB - 1  # one MiB short of the third budget
    result = plan(fleet(("a", [("X", total, 0)])), replicas(generic("ai/det", budget), 3), "VRAMBased")
    assert [p.replica for p in result.placements] == [0, 1]
    (left,) = result.unplaced
    assert (left.server, left.replica, left.reason) == ("ai/det", 2, "InsufficientMemory")
    assert reserved_on(result, "GPU-a-0") == 2 * budget


def test_a_standing_replica_counts_against_its_gpu() -> None:
    # The 3 replicas of ai/old stand (not re-planned): their budgets fill GPU 0 but for 999 MiB.
    inventory = fleet(("a", [("X", 30000 + 999 + DEFAULT_MARGIN_MIB, 0)]))
    old = InferenceServer.model_validate(
        {
            "metadata": {"name": "old", "namespace": "ai"},
            "spec": {"engine": "generic", "image": "i", "vramBudget": "10000Mi", "replicas": 3},
            "status": {
                "placement": {"node": "a", "gpus": [{"index": 0, "uuid": "GPU-a-0"}], "budgetMiB": 10000},
                "replicaPlacements": [
                    {"replica": i, "node": "a", "gpus": [{"index": 0, "uuid": "GPU-a-0"}], "budgetMiB": 10000}
                    for i in range(3)
                ],
            },
        }
    )
    ledger = Ledger.from_servers([old])
    assert sorted(ledger.servers) == ["ai/old", "ai/old[1]", "ai/old[2]"]
    assert ledger.reserved_on("GPU-a-0") == 30000
    result = plan(inventory, [generic("ai/new", 1000)], "VRAMBased", ledger=ledger)
    assert result.unplaced and result.unplaced[0].reason == "InsufficientMemory"
    fits = plan(inventory, [generic("ai/new", 1000 - 1)], "VRAMBased", ledger=ledger)
    assert not fits.unplaced


def test_a_status_without_replica_placements_holds_one_reservation() -> None:
    legacy = InferenceServer.model_validate(
        {
            "metadata": {"name": "old", "namespace": "ai"},
            "spec": {"engine": "generic", "image": "i", "vramBudget": "1000Mi"},
            "status": {"placement": {"node": "a", "gpus": [{"index": 0, "uuid": "GPU-a-0"}], "budgetMiB": 1000}},
        }
    )
    (reservation,) = Ledger.from_servers([legacy]).reservations
    assert (reservation.key, reservation.budget_mib) == ("ai/old", 1000)


def test_placed_replicas_are_numbered_from_zero() -> None:
    # Replica 0 is pinned to a GPU that is gone; replica 1 places freely: it becomes replica 0.
    inventory = fleet(("a", [("X", 24564, 0)]))
    pins = [ManualAssignment("ai/det", "a", ("GPU-gone",))]
    result = plan(inventory, replicas(generic("ai/det", 1000), 2), "VRAMBased", manual=pins)
    assert [(p.server, p.replica) for p in result.placements] == [("ai/det", 0)]
    assert [(u.server, u.replica, u.reason) for u in result.unplaced] == [("ai/det", 1, "PinnedGpuNotFound")]
    assert result.placement_of("ai/det") is not None


def test_a_placed_replica_keeps_its_number_when_a_lower_one_finds_no_room() -> None:
    # Replicas 0 and 2 stay on a and c; replica 1 lost its GPU and nothing else has room: replica 2 is
    # not renamed to 1 (that would restart it under another Deployment).
    inventory = fleet(("a", [("X", 12000, 0)]), ("c", [("X", 12000, 0)]))
    pins = [ManualAssignment("ai/det", "a", ("GPU-a-0",)), ManualAssignment("ai/det[2]", "c", ("GPU-c-0",))]
    result = plan(inventory, replicas(generic("ai/det", 10000), 3), "VRAMBased", manual=pins)
    assert sorted((p.replica, p.gpu_uuids) for p in result.placements) == [(0, ("GPU-a-0",)), (2, ("GPU-c-0",))]
    assert [(u.replica, u.reason) for u in result.unplaced] == [(1, "InsufficientMemory")]


def test_when_replica_zero_finds_no_room_a_freshly_placed_replica_takes_its_number() -> None:
    # Replica 0's GPU is gone; replica 1 runs on b (pinned); replica 2 is placed afresh on a: replica 2
    # becomes 0 (nothing runs there yet), replica 1 keeps its number and its GPU.
    inventory = fleet(("a", [("X", 12000, 0)]), ("b", [("X", 12000, 0)]))
    pins = [ManualAssignment("ai/det", "a", ("GPU-gone",)), ManualAssignment("ai/det[1]", "b", ("GPU-b-0",))]
    result = plan(inventory, replicas(generic("ai/det", 10000), 3), "VRAMBased", manual=pins)
    assert sorted((p.replica, p.gpu_uuids) for p in result.placements) == [(0, ("GPU-a-0",)), (1, ("GPU-b-0",))]
    assert [u.replica for u in result.unplaced] == [2]


def test_replicas_pinned_by_key_stay_and_a_new_one_keeps_off_their_gpus() -> None:
    inventory = fleet(("a", [("X", 24564, 0), ("X", 24564, 0)]), ("b", [("X", 24564, 0)]))
    pins = [ManualAssignment("ai/det", "a", ("GPU-a-1",)), ManualAssignment("ai/det[1]", "b", ("GPU-b-0",))]
    result = plan(inventory, replicas(generic("ai/det", 1000), 3), "VRAMBased", manual=pins)
    where = {p.replica: p.gpu_uuids for p in result.placements}
    assert where == {0: ("GPU-a-1",), 1: ("GPU-b-0",), 2: ("GPU-a-0",)}


def test_a_node_pin_spreads_replicas_over_its_gpus() -> None:
    inventory = fleet(("a", [("X", 24564, 0), ("X", 24564, 0)]), ("b", [("X", 24564, 0)]))
    result = plan(inventory, replicas(generic("ai/det", 1000, pin_node="a"), 2), "VRAMBased")
    assert sorted(p.gpu_uuids for p in result.placements) == [("GPU-a-0",), ("GPU-a-1",)]


@st.composite
def fleets_with_replicas(draw: st.DrawFn) -> tuple[Inventory, list[ServerDemand]]:
    slots = [
        make_slot(f"node-{n}", i, draw(st.sampled_from((4094, 24564, 46068, 81559))), foreign_mib=0)
        for n in range(draw(st.integers(1, 3)))
        for i in range(draw(st.integers(1, 4)))
    ]
    demands: list[ServerDemand] = []
    for s in range(draw(st.integers(1, 5))):
        mib = float(draw(st.integers(500, 40000)))
        dedicated = draw(st.integers(0, 6)) == 0
        demand = ServerDemand(f"ns/s{s}", "generic", mib, mib, dedicated=dedicated)
        demands += replicas(demand, draw(st.integers(1, 4)))
    return Inventory(tuple(slots)), demands


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=fleets_with_replicas(), strategy=st.sampled_from([s for s in STRATEGY_NAMES if s != "Manual"]))
def test_every_replica_is_budgeted_and_replica_zero_is_placed_whenever_one_is(
    case: tuple[Inventory, list[ServerDemand]], strategy: str
) -> None:
    inventory, demands = case
    result = plan(inventory, demands, strategy)
    wanted = {d.key for d in demands}
    assert {p.key for p in result.placements} | {u.key for u in result.unplaced} == wanted
    assert len(result.placements) + len(result.unplaced) == len(demands)
    reserved: dict[str, float] = defaultdict(float)
    numbers: dict[str, list[int]] = defaultdict(list)
    for placement in result.placements:
        numbers[placement.server].append(placement.replica)
        for uuid in placement.gpu_uuids:
            reserved[uuid] += placement.budget_mib
    for slot in inventory.slots:
        assert reserved[slot.uuid] + DEFAULT_MARGIN_MIB <= slot.total_mib + EPS
        assert reserved_on(result, slot.uuid) == reserved[slot.uuid]
    for server, placed in numbers.items():
        assert len(set(placed)) == len(placed) and 0 in placed, server  # unique, and replica 0 is placed
    # Spread: two replicas of one server share a GPU only when, as placed, no GPU without a replica
    # of that server had room left for one more.
    alone = {u for p in result.placements if p.dedicated for u in p.gpu_uuids}
    free = {g.uuid: g.free_after_mib for g in result.gpus if g.uuid not in alone}
    for server, budget in {p.server: p.budget_mib for p in result.placements}.items():
        held = [p.gpu_uuids[0] for p in result.placements if p.server == server]
        if len(held) != len(set(held)):
            assert all(free[u] < budget - EPS for u in free if u not in held), server


def test_a_standing_pin_stays_on_a_cordoned_or_silent_node_but_not_on_an_unhealthy_gpu() -> None:
    inventory = Inventory(
        (
            make_slot("a", 0, 24564, schedulable=False),  # cordoned, or its agent is stale
            make_slot("b", 0, 24564, healthy=False),
            make_slot("c", 0, 24564),
        )
    )
    det = generic("ai/det", 1000)
    standing = plan(
        inventory, [det], "VRAMBased", manual=[ManualAssignment("ai/det", "a", ("GPU-a-0",), standing=True)]
    )
    assert [p.gpu_uuids for p in standing.placements] == [("GPU-a-0",)]
    new = plan(inventory, [det], "VRAMBased", manual=[ManualAssignment("ai/det", "a", ("GPU-a-0",))])
    assert [u.reason for u in new.unplaced] == ["PinnedGpuUnavailable"]
    sick = plan(inventory, [det], "VRAMBased", manual=[ManualAssignment("ai/det", "b", ("GPU-b-0",), standing=True)])
    assert [u.reason for u in sick.unplaced] == ["PinnedGpuUnavailable"]


def test_replicas_moved_together_by_repair_are_spread_out_again() -> None:
    # Making room for the dedicated servers moves the 31779MiB replicas by best fit, two to a GPU, while
    # node-1 GPU 0 keeps 63557MiB free: the plan is complete, and the replicas must still go apart.
    inventory = Inventory(
        tuple([make_slot("node-0", i, 4094) for i in range(3)] + [make_slot("node-1", i, 81559) for i in range(3)])
    )
    demands = [
        ServerDemand("ns/s0", "generic", 17746, 17746),
        ServerDemand("ns/s1", "generic", 500, 500, dedicated=True),
        ServerDemand("ns/s2", "generic", 500, 500, dedicated=True),
        ServerDemand("ns/s2", "generic", 500, 500, dedicated=True, replica=1),
        *(ServerDemand("ns/s3", "generic", 31779, 31779, replica=r) for r in range(4)),
    ]
    result = plan(inventory, demands, "VRAMBased")
    assert not result.unplaced
    shared = [g for g in result.gpus if sum(s.startswith("ns/s3") for s in g.servers) > 1]
    roomy = [g for g in result.gpus if not any(s.startswith("ns/s3") for s in g.servers) and g.free_after_mib >= 31779]
    assert not (shared and roomy), (shared, roomy)
