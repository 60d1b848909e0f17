"""Replicas in the controller: every replica's budget is booked, pinned and shown in status."""

from __future__ import annotations

from collections import defaultdict

from controller_builders import T0, generic, gpu, gpu_node, node
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api.inference_server import (
    EstimateStatus,
    InferenceServer,
    InferenceServerStatus,
    MeasuredGpuMemory,
    MeasuredMemory,
    PlacedGpu,
    PlacementStatus,
    ReplicaPlacementStatus,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.book import ReservationBook
from vram_operator.controller.conditions import condition_status
from vram_operator.controller.decision import Inputs, decide
from vram_operator.controller.gpu_view import Reservations, reserved_by
from vram_operator.controller.room import room_shortfall
from vram_operator.controller.server_reconciler import besides, decision_event, pins_for, replicas_missing
from vram_operator.controller.server_status import (
    Observation,
    Outcome,
    decided_status,
    observed_status,
    replica_statuses,
)
from vram_operator.placement.ownership import ProcessOwners
from vram_operator.render import PlacedReplica

MARGIN = 256.0


def on(uuid: str, budget: float = 1000, replica: int = 0, node: str = "n") -> ReplicaPlacementStatus:
    return ReplicaPlacementStatus(node=node, gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=budget, replica=replica)


def placed(server: InferenceServer, *replicas: ReplicaPlacementStatus) -> InferenceServer:
    first = PlacementStatus(**replicas[0].model_dump(exclude={"replica", "gpu_memory_utilization"}))
    status = InferenceServerStatus(placement=first, replica_placements=list(replicas))
    return server.model_copy(update={"status": status})


def test_three_replicas_are_decided_on_three_gpus_with_a_status_entry_each() -> None:
    server = generic("det", "8000Mi", replicas=3)
    inputs = Inputs(nodes=[gpu_node("a", 2), gpu_node("b", 1)], reserved=[], margin_mib=MARGIN)
    outcome = decide([server], inputs).outcomes["ns/det"]
    assert outcome.replicas_wanted == 3 and outcome.replicas_missing == 0
    statuses = replica_statuses(outcome)
    assert [s.replica for s in statuses] == [0, 1, 2]
    assert len({s.gpus[0].uuid for s in statuses}) == 3
    status = decided_status(None, outcome, generation=1, now=T0)
    assert status.placement == outcome.placement
    assert [r.replica for r in status.replica_placements] == [0, 1, 2]
    assert status.wire()["replicaPlacements"][1]["replica"] == 1
    assert condition_status(status.conditions, "Placed") == "True"


def test_every_replica_counts_against_the_next_decision() -> None:
    # Two replicas of 12000MiB stand on the only GPU; a third server of 1 MiB more than what is left waits.
    nodes = [gpu_node("a", 1)]
    standing = placed(generic("old", "12000Mi", 2), on("GPU-a-0", 12000), on("GPU-a-0", 12000, replica=1))
    assert reserved_by([standing]) == {"GPU-a-0": 24000}
    left = 24564 - MARGIN - 24000
    inputs = Inputs(nodes=nodes, reserved=[standing], margin_mib=MARGIN)
    too_big = decide([generic("new", f"{int(left) + 1}Mi", 1)], inputs).outcomes["ns/new"]
    assert too_big.placement is None and too_big.unplaced_reason == "InsufficientMemory"
    fits = decide([generic("new", f"{int(left)}Mi", 1)], inputs).outcomes["ns/new"]
    assert fits.placement is not None


def test_book_holds_every_replica_until_the_index_shows_them() -> None:
    book = ReservationBook()
    server = generic("det", "1000Mi", 2)
    replicas = [on("G0"), on("G1", replica=1)]
    book.hold(
        "ns/det", PlacementStatus(**replicas[0].model_dump(exclude={"replica", "gpu_memory_utilization"})), replicas
    )
    (standing,) = book.standing([server])
    assert reserved_by([standing]) == {"G0": 1000, "G1": 1000}
    # Only replica 0 has landed: the decision still stands.
    book.standing([placed(server, replicas[0])])
    assert "ns/det" in book.pending
    book.standing([placed(server, *replicas)])
    assert book.pending == {}


def test_partial_placement_is_placed_with_a_reason_and_retried() -> None:
    server = generic("det", "10000Mi", replicas=3)
    inputs = Inputs(nodes=[gpu_node("a", 1)], reserved=[], margin_mib=MARGIN)
    outcome = decide([server], inputs).outcomes["ns/det"]
    assert outcome.replicas_missing == 1
    status = decided_status(None, outcome, generation=1, now=T0)
    placed_condition = next(c for c in status.conditions if c.type == "Placed")
    assert (placed_condition.status, placed_condition.reason) == ("True", "PartiallyPlaced")
    assert placed_condition.message.startswith("2/3 replicas placed; the others: InsufficientMemory")
    assert replicas_missing(server, status)
    assert not replicas_missing(
        server.model_copy(update={"spec": server.spec.model_copy(update={"replicas": 2})}), status
    )


def test_each_placed_replica_is_pinned_where_it_is_and_scaled_away_ones_are_not() -> None:
    status = placed(generic("det", "1000Mi", 3), on("G0"), on("G1", replica=1, node="m"), on("G2", replica=2)).status
    assert status is not None
    pins = pins_for(generic("det", "1000Mi", 3), status, replace=False)
    assert [(p.server, p.node, p.gpus) for p in pins] == [
        ("ns/det", "n", ("G0",)),
        ("ns/det[1]", "m", ("G1",)),
        ("ns/det[2]", "n", ("G2",)),
    ]
    scaled_down = pins_for(generic("det", "1000Mi", 2), status, replace=False)
    assert [p.server for p in scaled_down] == ["ns/det", "ns/det[1]"]


def test_measured_memory_is_judged_against_the_budgets_of_the_replicas_on_each_gpu() -> None:
    outcome = Outcome(
        estimate=EstimateStatus(),
        placement=PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid="G0")], budget_mib=5000),
        replicas=(
            PlacedReplica(0, PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid="G0")], budget_mib=5000)),
            PlacedReplica(1, PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid="G0")], budget_mib=5000)),
        ),
        replicas_wanted=2,
    )
    base = decided_status(None, outcome, generation=1, now=T0)

    def used(mib: float) -> MeasuredMemory:
        return MeasuredMemory(
            used_mib=mib,
            total_mib=24564,
            percent=0,
            per_gpu=[MeasuredGpuMemory(uuid="G0", used_mib=mib, total_mib=24564)],
        )

    within = observed_status(base, Observation(ready=True, memory=used(10000)), generation=1, now=T0)
    assert condition_status(within.conditions, "MemoryFits") == "True"
    above = observed_status(base, Observation(ready=True, memory=used(10001)), generation=1, now=T0)
    assert condition_status(above.conditions, "MemoryFits") == "False"


def test_sum_of_replica_budgets_per_gpu_never_exceeds_capacity_over_many_decisions() -> None:
    nodes = [gpu_node("a", 2), gpu_node("b", 2, total=4094)]
    reserved: list[InferenceServer] = []
    for i, (budget, count) in enumerate([(9000, 3), (3000, 4), (7000, 2), (2000, 5)]):
        server = generic(f"s{i}", f"{budget}Mi", count)
        outcome = decide([server], Inputs(nodes=nodes, reserved=reserved, margin_mib=MARGIN)).outcomes[server.key]
        if outcome.placement is not None:
            reserved.append(server.model_copy(update={"status": decided_status(None, outcome, generation=1, now=T0)}))
    totals = {g.uuid: g.memory_total_mib for n in nodes for g in (n.status.gpus if n.status else [])}
    per_gpu: dict[str, float] = defaultdict(float)
    for server in reserved:
        for replica in server.status.placed_replicas() if server.status else []:
            per_gpu[replica.gpus[0].uuid] += replica.budget_mib
    assert per_gpu == reserved_by(reserved)
    assert sum(len(s.status.placed_replicas()) for s in reserved if s.status) > 4
    for uuid, mib in per_gpu.items():
        assert mib + MARGIN <= totals[uuid]


def test_a_gpu_assignment_moves_replica_zero_and_the_others_stay() -> None:
    assigned = notes.AssignedPlacement("fleet", 2, "h100-0", ("G9",), 5000.0)
    server = generic("det", "1000Mi", 2)
    server = server.model_copy(
        update={"metadata": server.metadata.model_copy(update={"annotations": {notes.ASSIGNED: assigned.encode()}})}
    )
    status = placed(server, on("G0"), on("G1", replica=1)).status
    pins = pins_for(server, status, replace=False)
    assert [(p.server, p.gpus) for p in pins] == [("ns/det", ("G9",)), ("ns/det[1]", ("G1",))]
    assert [p.server for p in pins_for(server, status, replace=True)] == ["ns/det"]


def test_a_partial_placement_is_a_warning_event_with_the_reason() -> None:
    server = generic("det", "10000Mi", replicas=3)
    outcome = decide([server], Inputs(nodes=[gpu_node("a", 1)], reserved=[], margin_mib=MARGIN)).outcomes["ns/det"]
    kind, reason, message = decision_event(None, outcome)
    assert (kind, reason) == ("Warning", "PartiallyPlaced")
    assert message.startswith("2/3 replicas placed, replica 0 on a GPU 0") and "InsufficientMemory" in message
    whole = decide([generic("one", "10000Mi", 2)], Inputs(nodes=[gpu_node("a", 1)], reserved=[], margin_mib=MARGIN))
    assert decision_event(None, whole.outcomes["ns/one"])[:2] == ("Normal", "Placed")


def test_a_lost_gpu_moves_only_the_replicas_on_it() -> None:
    server = generic("det", "1000Mi", 3)
    status = placed(
        server, on("GPU-n-0"), on("GPU-m-0", replica=1, node="m"), on("GPU-n-2", replica=2, node="n")
    ).status
    assert status is not None
    pins = pins_for(server, status, replace=False, moving=frozenset({1}))
    assert [(p.server, p.gpus) for p in pins] == [("ns/det", ("GPU-n-0",)), ("ns/det[2]", ("GPU-n-2",))]
    # Node m is gone: replica 1 is placed afresh (on the free GPU), the others stay where they run.
    inputs = Inputs(nodes=[gpu_node("n", 3)], reserved=[], margin_mib=MARGIN)
    decided = decide([server], inputs, pins).outcomes["ns/det"]
    where = {r.replica: tuple(g.uuid for g in r.placement.gpus) for r in decided.replicas}
    assert where == {0: ("GPU-n-0",), 1: ("GPU-n-1",), 2: ("GPU-n-2",)}
    assert decided.fully_placed


def test_a_replica_on_a_node_whose_agent_went_silent_keeps_its_placement() -> None:
    # A reconcile (a spec edit, a restart) while node b's agent is stale: replica 1 stays on b (its
    # Deployment keeps running and keeps its reservation); only new placements avoid b.
    server = generic("det", "1000Mi", 2)
    status = placed(server, on("GPU-a-0", node="a"), on("GPU-b-0", replica=1, node="b")).status
    assert status is not None
    pins = pins_for(server, status, replace=False)
    inputs = Inputs(nodes=[gpu_node("a", 1), gpu_node("b", 1)], reserved=[], stale_nodes=frozenset({"b"}))
    decided = decide([server], inputs, pins).outcomes["ns/det"]
    where = {r.replica: (r.placement.node, tuple(g.uuid for g in r.placement.gpus)) for r in decided.replicas}
    assert where == {0: ("a", ("GPU-a-0",)), 1: ("b", ("GPU-b-0",))}
    assert decided.fully_placed


def test_a_replica_needs_its_room_beside_its_sibling_on_the_same_gpu() -> None:
    # Two 10240 MiB replicas share one 24564 MiB GPU; a desktop grows to 4500 MiB: 4500 + 2 x 10240 > 24564,
    # so either replica's restart would not find its budget (with 4000 MiB it still would).
    first, second = on("GPU-n-0", budget=10240), on("GPU-n-0", budget=10240, replica=1)
    for desktop, short in ((4000.0, False), (4500.0, True)):
        nodes = [node("n", gpu("GPU-n-0", foreign=desktop))]
        reserved = besides(second, [first, second], Reservations([]).besides, "ns/a")
        found = room_shortfall(second, None, nodes, reserved, ProcessOwners())
        assert (found is not None) is short
        assert room_shortfall(second, None, nodes, reserved_by([]), ProcessOwners()) is None  # blind to the sibling


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),  # server
            st.integers(0, 3),  # GPU
            st.floats(0.1, 80000.0, allow_nan=False),  # budget
        ),
        max_size=24,
    ),
    st.integers(0, 5),
    st.integers(0, 3),
)
def test_what_others_reserve_is_what_reserved_by_sums_without_the_server(
    held: list[tuple[int, int, float]], me: int, gpu_index: int
) -> None:
    # One runtime-check pass reads the others' reservations per server from one Reservations; it must
    # be exactly (same float sums) what reserved_by gives over every other server.
    by_server: dict[int, list[ReplicaPlacementStatus]] = defaultdict(list)
    for server, gpu_no, budget in held:
        by_server[server].append(on(f"GPU-n-{gpu_no}", budget, replica=len(by_server[server])))
    servers = [placed(generic(f"s{i}", "1Gi", len(rs)), *rs) for i, rs in by_server.items()]
    others = [s for s in servers if s.key != f"ns/s{me}"]
    uuid = f"GPU-n-{gpu_index}"
    assert Reservations(servers).besides(f"ns/s{me}", uuid) == reserved_by(others).get(uuid, 0.0)
