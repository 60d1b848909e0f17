"""The invariants, on hand-built snapshots: each finds what it should, at its boundary, and lets pass
what the contract allows (a warned Manual over-commit, foreign growth the servers report)."""

from __future__ import annotations

from typing import Any

from model_based.gpu_facts import EngineUse, GpuTruth
from model_based.invariants import (
    Causes,
    Expectations,
    Snapshot,
    check,
    children,
    convergence,
    flaps,
    memory,
    placements_by_replica,
    rollouts_end,
    unplaced_with_room,
)

TOTAL = 24564.0
MARGIN = 256.0
GPU = GpuTruth("ws", 0, "GPU-0", TOTAL, 0.0, True, True)
OTHER = GpuTruth("ws", 1, "GPU-1", 4094.0, 0.0, True, True)
EXPECT = Expectations(usable=frozenset({"GPU-0", "GPU-1"}), margin_mib=MARGIN)


def cond(type_: str, status: str, reason: str, message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def server(name: str, budget: float, *, uuid: str = "GPU-0", phase: str = "Running", **spec: Any) -> dict[str, Any]:
    placement = {"node": "ws", "gpus": [{"index": 0, "uuid": uuid}], "budgetMiB": budget}
    return {
        "metadata": {"namespace": "a", "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {"engine": "generic", "vramBudget": f"{int(budget)}Mi", "replicas": 1, **spec},
        "status": {
            "observedGeneration": 1,
            "phase": phase,
            "placement": placement if phase != "Pending" else None,
            "conditions": [cond("Placed", "True" if phase != "Pending" else "False", "Placed")],
        },
    }


def deployment(srv: dict[str, Any], *, gpus: str = "GPU-0", ready: int = 1) -> dict[str, Any]:
    budget = str(int(srv["status"]["placement"]["budgetMiB"]))
    return {
        "metadata": {
            "namespace": "a",
            "name": srv["metadata"]["name"],
            "ownerReferences": [{"kind": "InferenceServer", "uid": srv["metadata"]["uid"]}],
        },
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {
                    "annotations": {"vram.dev/node": "ws", "vram.dev/gpus": gpus, "vram.dev/budget-mib": budget}
                }
            },
        },
        "status": {"readyReplicas": ready},
    }


def snap(servers: list[dict[str, Any]], **fields: Any) -> Snapshot:
    uses = [
        EngineUse(f"a/{s['metadata']['name']}-pod", "GPU-0", s["status"]["placement"]["budgetMiB"])
        for s in servers
        if s["status"].get("placement")
    ]
    values: dict[str, Any] = {
        "servers": servers,
        "deployments": [deployment(s) for s in servers if s["status"].get("placement")],
        "pods": [],
        "gpu_nodes": [],
        "assignments": [],
        "gpus": [GPU, OTHER],
        "engine_use": uses,
    }
    return Snapshot(**(values | fields))


def test_a_full_gpu_is_fine_and_one_mib_more_is_an_over_commit() -> None:
    fits = TOTAL - MARGIN
    assert memory(snap([server("x", fits / 2), server("y", fits / 2)]), EXPECT) == []
    over = memory(snap([server("x", fits / 2), server("y", fits / 2 + 3)]), EXPECT)
    assert [v.invariant for v in over] == ["NoOverCommit"]
    assert "a/x" in over[0].detail and "a/y" in over[0].detail


def test_engines_holding_more_than_total_minus_foreign_is_an_over_commit() -> None:
    spiked = GpuTruth("ws", 0, "GPU-0", TOTAL, 20000.0, True, True)
    found = memory(snap([server("x", 6000)], gpus=[spiked, OTHER]), EXPECT)
    assert [v.invariant for v in found] == ["NoOverCommit"] and "20000MiB foreign" in found[0].detail


def reported(unattributed: float) -> list[dict[str, Any]]:
    """A GpuNode whose agent reports `unattributed` MiB on GPU-0 (a spike no process accounts for)."""
    gpu = {"uuid": "GPU-0", "processes": [], "unattributedMiB": unattributed}
    return [{"metadata": {"name": "ws"}, "status": {"gpus": [gpu]}}]


def test_foreign_growth_is_excused_only_when_every_server_there_reports_it() -> None:
    spiked = GpuTruth("ws", 0, "GPU-0", TOTAL, 20000.0, True, True)
    expect = Expectations(usable=EXPECT.usable, margin_mib=MARGIN, spiked=frozenset({"GPU-0"}))
    quiet = server("x", 6000)
    assert memory(snap([quiet], gpus=[spiked, OTHER], gpu_nodes=reported(20000)), expect) != []
    told = server("x", 6000)
    told["status"]["conditions"].append(cond("MemoryFits", "False", "ForeignMemoryGrew"))
    assert memory(snap([told], gpus=[spiked, OTHER], gpu_nodes=reported(20000)), expect) == []


def test_after_a_spike_the_reported_room_counts_without_the_margin() -> None:
    # The twin's spike took more than was free (truth 20000 + 6000 > total); the agent reports what
    # the GPU holds: the server still has its room (a restart fits), so no warning is owed.
    spiked = GpuTruth("ws", 0, "GPU-0", TOTAL, 20000.0, True, True)
    expect = Expectations(usable=EXPECT.usable, margin_mib=MARGIN, spiked=frozenset({"GPU-0"}))
    fits_exactly = TOTAL - 6000
    assert memory(snap([server("x", 6000)], gpus=[spiked, OTHER], gpu_nodes=reported(fits_exactly)), expect) == []
    over = reported(fits_exactly + 10)
    assert [v.invariant for v in memory(snap([server("x", 6000)], gpus=[spiked, OTHER], gpu_nodes=over), expect)] == [
        "NoOverCommit"
    ]


def test_a_manual_over_commit_is_excused_when_warned() -> None:
    a, b = server("x", 20000), server("y", 20000)
    for s in (a, b):
        s["status"]["placement"]["assignment"] = "pins"
    assignment = {"metadata": {"name": "pins"}, "spec": {"strategy": "Manual"}, "status": {"warnings": []}}
    assert memory(snap([a, b], assignments=[assignment]), EXPECT) != []
    assignment["status"]["warnings"] = ["a/y: budget 20000MiB over-commits ws GPU 0 by 15692MiB"]
    assert memory(snap([a, b], assignments=[assignment]), EXPECT) == []


def test_failed_only_for_an_invalid_spec_and_pending_needs_a_reason() -> None:
    failed = server("bad", 0, phase="Failed")
    assert [v.invariant for v in convergence(snap([failed]), EXPECT)] == ["FailedOnlyForInvalidSpec"]
    invalid = Expectations(usable=EXPECT.usable, invalid=frozenset({"a/bad"}))
    assert convergence(snap([failed]), invalid) == []
    running = server("bad", 100)
    assert [v.invariant for v in convergence(snap([running]), invalid)] == ["FailedOnlyForInvalidSpec"]
    waiting = server("w", 100, phase="Pending")
    waiting["status"]["conditions"] = [cond("Placed", "False", "InsufficientMemory")]
    assert convergence(snap([waiting]), EXPECT) == []
    waiting["status"]["conditions"] = [cond("Placed", "False", "", "")]
    assert [v.invariant for v in convergence(snap([waiting]), EXPECT)] == ["Converges"]


def test_an_old_generation_and_a_lost_gpu_are_not_converged() -> None:
    stale = server("x", 100)
    stale["metadata"]["generation"] = 2
    assert [v.invariant for v in convergence(snap([stale]), EXPECT)] == ["Converges"]
    lost = GpuTruth("ws", 0, "GPU-0", TOTAL, 0.0, False, True)
    assert [v.invariant for v in convergence(snap([server("x", 100)], gpus=[lost, OTHER]), EXPECT)] == [
        "LeavesLostGpus"
    ]
    silent = GpuTruth("ws", 0, "GPU-0", TOTAL, 0.0, False, False)  # the operator cannot know yet
    assert convergence(snap([server("x", 100)], gpus=[silent, OTHER]), EXPECT) == []


def test_children_orphans_duplicates_and_disagreeing_statuses() -> None:
    x = server("x", 1000)
    assert children(snap([x])) == []
    orphan = deployment(server("gone", 10))
    assert [v.invariant for v in children(snap([x], deployments=[deployment(x), orphan]))] == ["NoOrphans"]
    assert [v.invariant for v in children(snap([x], deployments=[]))] == ["NoDuplicates"]
    moved = deployment(x, gpus="GPU-1")
    assert [v.invariant for v in children(snap([x], deployments=[moved]))] == ["StatusAgrees"]
    not_ready = deployment(x, ready=0)
    assert [v.invariant for v in children(snap([x], deployments=[not_ready]))] == ["StatusAgrees"]


def test_an_unplaced_server_with_room_for_it_is_a_violation() -> None:
    waiting = server("w", 4000, phase="Pending")
    waiting["status"]["conditions"] = [cond("Placed", "False", "InsufficientMemory")]
    big = server("big", TOTAL - MARGIN - 4000)
    # GPU-0 has exactly 4000 MiB left (not more): the check needs room beyond rounding, so no violation.
    assert unplaced_with_room(snap([big, waiting]), EXPECT) == []
    smaller = server("big", TOTAL - MARGIN - 4100)
    found = unplaced_with_room(snap([smaller, waiting]), EXPECT)
    assert [(v.invariant, v.subject) for v in found] == [("PlacedWhenRoom", "a/w")]
    # An assignment decides for its servers: not judged.
    assert unplaced_with_room(snap([smaller, waiting], assignments=[{"metadata": {"name": "g"}}]), EXPECT) == []


def test_a_move_without_a_cause_is_a_flap_and_a_cause_excuses_it() -> None:
    before = placements_by_replica([server("x", 100)])
    after = placements_by_replica([server("x", 100, uuid="GPU-1")])
    servers = [server("x", 100, uuid="GPU-1")]
    assert [v.invariant for v in flaps(before, after, servers, Causes())] == ["NoFlapping"]
    assert flaps(before, after, servers, Causes(respecced={"a/x"})) == []
    assert flaps(before, after, servers, Causes(lost={"GPU-0"})) == []
    assert flaps(before, after, servers, Causes(lost={"GPU-1"})) != []
    assert flaps(before, after, servers, Causes(assignment_changed=True)) == []


def test_a_healthy_snapshot_has_no_violation() -> None:
    assert check(snap([server("x", 1000), server("y", 2000)]), EXPECT) == []


def test_an_applied_assignment_still_rolling_out_after_settling_is_a_violation() -> None:
    def assignment(mode: str, applied: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": "g"}, "spec": {"mode": mode}, "status": {"conditions": [applied]}}

    rolling = cond("Applied", "False", "RollingOut")
    assert [v.invariant for v in rollouts_end(snap([], assignments=[assignment("Apply", rolling)]))] == ["RolloutEnds"]
    assert rollouts_end(snap([], assignments=[assignment("Preview", rolling)])) == []
    assert rollouts_end(snap([], assignments=[assignment("Apply", cond("Applied", "True", "RolloutDone"))])) == []
    blocked = cond("Applied", "False", "WaitingForRoom")  # stopped, and says why
    assert rollouts_end(snap([], assignments=[assignment("Apply", blocked)])) == []


def test_a_lost_gpu_of_one_replica_excuses_its_siblings_renumbering() -> None:
    def two(first: str, second: str) -> dict[str, Any]:
        srv = server("x", 100, uuid=first)
        srv["status"]["replicaPlacements"] = [
            {"replica": 0, "node": "ws", "gpus": [{"uuid": first}], "budgetMiB": 100},
            {"replica": 1, "node": "ws", "gpus": [{"uuid": second}], "budgetMiB": 100},
        ]
        return srv

    before = placements_by_replica([two("GPU-0", "GPU-1")])
    # Replica 0's GPU lost, no room: replica 1 became replica 0; room later: a new replica 1 elsewhere.
    renumbered = two("GPU-1", "GPU-2")
    after = placements_by_replica([renumbered])
    assert flaps(before, after, [renumbered], Causes(lost={"GPU-0"})) == []
    assert [v.subject for v in flaps(before, after, [renumbered], Causes(lost={"GPU-9"}))] == ["a/x#0", "a/x#1"]


def test_degraded_is_converged_with_a_reason_no_correction_fixes_or_corrections_spent() -> None:
    def degraded(reason: str, **spec: Any) -> dict[str, Any]:
        srv = server("d", 100, phase="Degraded", **spec)
        srv["status"]["conditions"].append(cond("Degraded", "True", reason))
        return srv

    assert convergence(snap([degraded("EngineCrashing")]), EXPECT) == []
    assert [v.invariant for v in convergence(snap([degraded("NoCacheBlocks")]), EXPECT)] == ["Converges"]
    assert convergence(snap([degraded("NoCacheBlocks", gpuMemoryUtilization=0.1)]), EXPECT) == []
    spent = degraded("StartupFreeMemory")
    spent["metadata"]["annotations"] = {"vram.dev/corrections": "3"}
    assert convergence(snap([spent]), EXPECT) == []
    spent["metadata"]["annotations"] = {"vram.dev/corrections": "2"}
    assert convergence(snap([spent]), EXPECT) != []
