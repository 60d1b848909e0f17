"""The rollout's state read from the API: arrival, remembered stops, what it waits for, rollback once,
what a deleted assignment gives back, the terms of a rollout's pin, cordoned Nodes."""

from __future__ import annotations

from controller_builders import generic, gpu_node

from vram_operator.api.base import Condition
from vram_operator.api.gpu_assignment import (
    GpuAssignmentSpec,
    GpuAssignmentStatus,
    PlanEntry,
    RollbackRecord,
    RolloutStatus,
)
from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus, PlacedGpu, PlacementStatus
from vram_operator.controller import annotations as notes
from vram_operator.controller.cordons import unschedulable, with_cordons
from vram_operator.controller.pods import PodFacts, current_pods, pod_facts, readiness
from vram_operator.controller.rollout_state import (
    Progress,
    applied_condition,
    arrived,
    assigned_pin,
    pin_refused,
    progress,
    release,
    rollback_condition,
    rollback_due,
    stopped_outside,
)
from vram_operator.controller.server_status import Outcome

T = "2026-01-01T00:00:00Z"
ENTRY = PlanEntry(server="ns/a", node="n2", gpus=["G1"], budget_mib=2048)


def placed(name: str, node: str, uuid: str, *, annotations: dict[str, str] | None = None) -> InferenceServer:
    server = generic(name, "2Gi", annotations=annotations)
    placement = PlacementStatus(node=node, gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=2048)
    conditions = [Condition(type="Placed", status="True", reason="Placed", message="", last_transition_time=T)]
    return server.model_copy(update={"status": InferenceServerStatus(placement=placement, conditions=conditions)})


def pod(node: str, uuid: str, *, ready: bool = True, terminating: bool = False, budget: str = "2048") -> PodFacts:
    return PodFacts("u", "p", "ns", ready, 0, False, "engine", "", node, uuid, budget, terminating)


def test_pod_facts_read_node_gpus_budget_and_deletion() -> None:
    facts = pod_facts(
        {
            "metadata": {
                "uid": "u",
                "deletionTimestamp": T,
                "annotations": {"vram.dev/gpus": "G1,G2", "vram.dev/budget-mib": "2048"},
            },
            "spec": {"nodeName": "n2"},
        }
    )
    assert (facts.node, facts.gpus, facts.budget_mib, facts.terminating) == ("n2", "G1,G2", "2048", True)
    assert facts.runs_on("n2", ["G1", "G2"], 2048.4)
    assert not facts.runs_on("n2", ["G1", "G2"], 2049)
    assert not facts.runs_on("n1", ["G1", "G2"], 2048)


def test_readiness_counts_only_pods_of_the_current_placement() -> None:
    moved = placed("a", "n2", "G1")
    assert moved.status is not None
    old, new = pod("n1", "G0"), pod("n2", "G1", ready=False)
    assert current_pods([old, new], moved.status.placed_replicas()) == [new]
    assert readiness(current_pods([old, new], moved.status.placed_replicas()), 1) == (False, "0/1 pods ready")
    assert readiness([pod("n2", "G1", terminating=True)], 1) == (False, "0/1 pods ready")


def test_arrived_needs_a_ready_pod_of_the_new_placement() -> None:
    moved = placed("a", "n2", "G1")
    assert arrived(moved, ENTRY, [pod("n2", "G1")])
    assert not arrived(moved, ENTRY, [pod("n1", "G0")])  # the old pod, still Ready, is not the server there
    assert not arrived(moved, ENTRY, [pod("n2", "G1", ready=False)])  # Pending on the new GPU
    assert not arrived(moved, ENTRY, [pod("n2", "G1", terminating=True)])
    assert not arrived(moved, ENTRY, [pod("n2", "G1", budget="1024")])  # rendered for an older budget
    assert not arrived(placed("a", "n1", "G0"), ENTRY, [pod("n1", "G0")])  # not placed as planned yet
    assert not arrived(None, ENTRY, [pod("n2", "G1")])


def test_stopped_servers_are_remembered_from_status_or_annotation() -> None:
    servers = {
        "ns/a": placed("a", "n1", "G0", annotations={notes.STOPPED: "fleet"}),
        "ns/b": placed("b", "n1", "G1"),
        "ns/c": placed("c", "n1", "G2"),
    }
    rollout = RolloutStatus(pending=["ns/a", "ns/b", "ns/c", "ns/gone"], stopped=["ns/b"])
    state = progress("fleet", rollout, {}, servers, {"ns/b": [pod("n1", "G1", terminating=True)]})
    assert state.pending == ("ns/a", "ns/b", "ns/c")  # a deleted server is not waited for
    assert state.stopped == ("ns/a", "ns/b")
    assert state.draining == ("ns/b",)  # its pod still holds its memory: the next wave waits
    assert not state.wave_due
    assert progress("fleet", rollout, {}, servers, {}).wave_due


def test_progress_and_the_applied_condition_name_what_blocks() -> None:
    refused = placed("a", "n1", "G0").model_copy(
        update={
            "status": InferenceServerStatus(
                conditions=[
                    Condition(
                        type="Placed",
                        status="False",
                        reason="PinnedGpuUnavailable",
                        message="pinned n2 GPU 1 is unschedulable",
                        last_transition_time=T,
                    )
                ]
            )
        }
    )
    plan = {"ns/a": ENTRY, "ns/b": PlanEntry(server="ns/b", node="n2", gpus=["G2"], budget_mib=2048)}
    servers = {"ns/a": refused, "ns/b": placed("b", "n2", "G2")}
    rollout = RolloutStatus(restarted=["ns/a", "ns/b"])
    state = progress("fleet", rollout, plan, servers, {"ns/b": [pod("n2", "G2", ready=False)]})
    assert state.in_flight == ("ns/a", "ns/b") and state.blocked and not state.done
    done, reason, message = applied_condition(state)
    assert (done, reason) == (False, "RolloutBlocked")
    assert "ns/a not placed: PinnedGpuUnavailable: pinned n2 GPU 1 is unschedulable" in message
    assert "ns/b: its new pod on n2 is not Ready" in message
    arrived_b = progress("fleet", rollout, plan, servers, {"ns/b": [pod("n2", "G2")]})
    assert arrived_b.healthy == ("ns/b",) and arrived_b.in_flight == ("ns/a",)
    assert applied_condition(Progress(healthy=("ns/a",))) == (
        True,
        "RolloutDone",
        "1 healthy, 0 restarting, 0 pending (0 stopped)",
    )
    assert applied_condition(Progress(pending=("ns/a",), stopped=("ns/a",)))[1] == "RollingOut"
    cordoned = PlanEntry(server="ns/c", reason="PinnedGpuUnavailable: pinned n2 GPU 0 is unschedulable")
    left = progress("fleet", RolloutStatus(healthy=["ns/a"], restarted=["ns/a"]), {"ns/c": cordoned}, {}, {})
    assert left.done and left.unplaced == ("ns/c: PinnedGpuUnavailable: pinned n2 GPU 0 is unschedulable",)
    assert applied_condition(left) == (
        False,
        "NotPlaced",
        "1 healthy, 0 restarting, 0 pending (0 stopped); not placed: ns/c: PinnedGpuUnavailable: pinned n2 GPU 0 "
        "is unschedulable",
    )


def test_rollback_acts_once_per_value() -> None:
    record = RollbackRecord(to_revision=1, revision=3, generation=4)
    assert rollback_due(GpuAssignmentSpec(rollback_to_revision=1), GpuAssignmentStatus())
    assert not rollback_due(GpuAssignmentSpec(rollback_to_revision=1), GpuAssignmentStatus(rolled_back=record))
    assert rollback_due(GpuAssignmentSpec(rollback_to_revision=2), GpuAssignmentStatus(rolled_back=record))
    assert not rollback_due(GpuAssignmentSpec(), GpuAssignmentStatus())
    [current] = rollback_condition([], record, 3, generation=4, now=T)
    assert (current.status, current.reason) == ("True", "RolledBack")
    [superseded] = rollback_condition([current], record, 4, generation=5, now=T)
    assert (superseded.status, superseded.reason) == ("False", "RollbackSuperseded")
    assert "revision 4 applied the spec since" in superseded.message
    assert rollback_condition([superseded], None, 4, generation=6, now=T) == []


def test_release_gives_back_only_what_the_assignment_holds() -> None:
    pin = notes.AssignedPlacement("fleet", 2, "n2", ("G1",), 2048.0).encode()
    other = notes.AssignedPlacement("other", 1, "n2", ("G1",), 2048.0).encode()
    rollout = RolloutStatus(pending=["ns/c"])
    assert release(generic("a", annotations={notes.ASSIGNED: pin}), "fleet", rollout) == {notes.ASSIGNED: None}
    assert release(generic("b", annotations={notes.ASSIGNED: other}), "fleet", rollout) == {}
    assert release(generic("c", annotations={notes.STOPPED: "true"}), "fleet", rollout) == {notes.STOPPED: None}
    assert release(generic("d", annotations={notes.STOPPED: "true"}), "fleet", rollout) == {}
    assert release(generic("e", annotations={notes.STOPPED: "fleet"}), "fleet", None) == {notes.STOPPED: None}
    assert release(generic("f", annotations={notes.STOPPED: "other"}), "fleet", None) == {}


def test_a_new_revision_starts_what_an_earlier_one_stopped_and_no_longer_moves() -> None:
    servers = [
        generic("a", annotations={notes.STOPPED: "fleet"}),
        generic("b", annotations={notes.STOPPED: "fleet"}),
        generic("c", annotations={notes.STOPPED: "other"}),
        generic("d"),
    ]
    assert [s.key for s in stopped_outside("fleet", servers, {"ns/b"})] == ["ns/a"]


def pinned(annotations: dict[str, str], generation: int = 1) -> InferenceServer:
    server = generic("a", annotations=annotations)
    return server.model_copy(update={"metadata": server.metadata.model_copy(update={"generation": generation})})


def test_a_rollouts_pin_holds_its_budget_and_overcommit_only_while_the_server_is_as_planned() -> None:
    pin = notes.AssignedPlacement("fleet", 2, "n2", ("G1",), 3000.0, generation=1, overcommit=True)
    planned = assigned_pin(pinned({notes.ASSIGNED: pin.encode()}))
    assert planned is not None and (planned.budget_override_mib, planned.overcommit) == (3000.0, True)
    edited = assigned_pin(pinned({notes.ASSIGNED: pin.encode()}, generation=2))  # a bigger vramBudget, say
    assert edited is not None and (edited.node, edited.gpus) == ("n2", ("G1",))
    assert (edited.budget_override_mib, edited.overcommit) == (None, False)
    healed = assigned_pin(pinned({notes.ASSIGNED: pin.encode(), notes.UTILIZATION: "0.61"}))
    assert healed is not None and healed.budget_override_mib is None  # the corrected utilization sizes it
    override = notes.AssignedPlacement("fleet", 2, "n2", ("G1",), 3000.0, generation=1, budget_override=True)
    kept = assigned_pin(pinned({notes.ASSIGNED: override.encode()}, generation=2))
    assert kept is not None and kept.budget_override_mib == 3000.0  # the assignment's own override stays
    legacy = '{"assignment":"fleet","revision":1,"node":"n2","gpus":["G1"],"budgetMiB":3000}'
    old = assigned_pin(pinned({notes.ASSIGNED: legacy}))
    assert old is not None and old.budget_override_mib is None
    assert assigned_pin(pinned({})) is None


def test_a_refused_pin_names_its_assignment() -> None:
    pin = notes.AssignedPlacement("fleet", 2, "n2", ("G1",), 3000.0)
    outcome = pin_refused(Outcome(unplaced_reason="InsufficientMemory", unplaced_message="needs 3000MiB"), pin)
    assert outcome.unplaced_message == "needs 3000MiB (GpuAssignment fleet (revision 2) pins it to n2)"
    assert pin_refused(Outcome(unplaced_message="x"), None).unplaced_message == "x"


def test_cordoned_nodes_are_marked_on_their_gpu_nodes() -> None:
    nodes = [gpu_node("n1"), gpu_node("n2")]
    marked = with_cordons(nodes, unschedulable({"n2": [True]}))
    assert [n.spec.cordoned for n in marked] == [False, True]
    assert with_cordons(nodes, unschedulable(None)) == nodes


def partly_placed(name: str, node: str, uuid: str, *, assignment: str, reason: str) -> InferenceServer:
    """Placed on node/uuid by its own reconcile, which took `assignment`'s pin (if any)."""
    server = placed(name, node, uuid)
    assert server.status is not None and server.status.placement is not None
    placement = server.status.placement.model_copy(update={"assignment": assignment})
    conditions = [
        Condition(
            type="Placed",
            status="True",
            reason=reason,
            message="2/3 replicas placed; the others: PinnedGpuNotFound: pinned node n2 has no GPUs in the inventory",
            last_transition_time=T,
        )
    ]
    status = server.status.model_copy(update={"placement": placement, "conditions": conditions})
    return server.model_copy(update={"status": status})


def test_a_pin_its_server_could_not_take_blocks_the_rollout_saying_why() -> None:
    """Seed 101: the plan pinned b/s8 to a GPU lost before the server's reconcile read the pin; the
    server kept what it could run elsewhere (PartiallyPlaced) and the rollout said RollingOut forever."""
    rollout = RolloutStatus(restarted=["ns/a"])
    kept_out = partly_placed("a", "n1", "G0", assignment="fleet", reason="PartiallyPlaced")
    state = progress("fleet", rollout, {"ns/a": ENTRY}, {"ns/a": kept_out}, {"ns/a": [pod("n1", "G0")]})
    assert state.in_flight == ("ns/a",) and state.blocked
    done, reason, message = applied_condition(state)
    assert (done, reason) == (False, "RolloutBlocked")
    assert "ns/a not placed on n2 as planned: PartiallyPlaced: 2/3 replicas placed; the others: PinnedGpuNotFound" in (
        message
    )
    # Still on the way (not a refusal): the pin not read yet (no assignment, or another's), or placed in full.
    for not_yet in (
        partly_placed("a", "n1", "G0", assignment="", reason="PartiallyPlaced"),
        partly_placed("a", "n1", "G0", assignment="other", reason="PartiallyPlaced"),
        partly_placed("a", "n1", "G0", assignment="fleet", reason="Placed"),
    ):
        waiting = progress("fleet", rollout, {"ns/a": ENTRY}, {"ns/a": not_yet}, {})
        assert not waiting.blocked and applied_condition(waiting)[1] == "RollingOut"
    # Placed as planned with replicas missing is on its way too: it arrives once its pod is Ready.
    there = partly_placed("a", "n2", "G1", assignment="fleet", reason="PartiallyPlaced")
    assert not progress("fleet", rollout, {"ns/a": ENTRY}, {"ns/a": there}, {}).blocked
    assert progress("fleet", rollout, {"ns/a": ENTRY}, {"ns/a": there}, {"ns/a": [pod("n2", "G1")]}).done
