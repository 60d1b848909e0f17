from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeStatus, GpuProcess
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.gpu_view import free_after_reservations, headroom_mib, stale_nodes
from vram_operator.controller.pods import crash_report, pod_facts, readiness
from vram_operator.placement.ownership import ProcessOwners

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def node(name: str, *, heartbeat: str | None = "2026-01-01T11:59:30Z", healthy: bool = True) -> GpuNode:
    gpus = [
        GpuDeviceStatus(
            index=0,
            uuid=f"{name}-g0",
            memory_total_mib=24564,
            memory_used_mib=1500,
            memory_free_mib=23064,
            healthy=healthy,
            processes=[GpuProcess(pid=10, used_mib=1000, name="Xorg"), GpuProcess(pid=11, used_mib=400, pod_uid="p")],
            unattributed_mib=100,
            memory_reserved_mib=200,
        )
    ]
    return GpuNode(metadata=ObjectMeta(name=name), status=GpuNodeStatus(gpus=gpus, last_heartbeat=heartbeat))


def placed(node_name: str, uuid: str, budget: float) -> InferenceServer:
    placement = PlacementStatus(node=node_name, gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=budget)
    return InferenceServer(
        metadata=ObjectMeta(name=f"s{budget:.0f}", namespace="ns"),
        spec=InferenceServerSpec(engine="generic", image="i", vram_budget="1Gi"),
        status=InferenceServerStatus(placement=placement),
    )


def test_stale_and_silent_agents_take_no_placements() -> None:
    nodes = [node("fresh"), node("old", heartbeat="2026-01-01T11:00:00Z"), node("never", heartbeat=None)]
    assert stale_nodes(nodes, NOW, timedelta(seconds=120)) == {"old", "never"}


def test_headroom_and_free_count_reservations_and_memory_not_ours() -> None:
    nodes = [node("n")]
    others = [placed("n", "n-g0", 8000)]
    owners = ProcessOwners.of(["ns/s8000"], {"ns/s8000": {"p"}})
    # 24564 total - 8000 reserved - 1000 Xorg - 100 unattributed - 200 driver reserved; the server's own
    # pod (UID p) is inside its reservation, not foreign.
    assert headroom_mib("n-g0", "n", nodes, others, owners) == 24564 - 8000 - 1300
    assert free_after_reservations(nodes, others, 256, owners) == {"n-g0": 24564 - 8000 - 1300 - 256}
    assert headroom_mib("missing", "n", nodes, others, owners) == 0


def test_a_pod_uid_of_no_server_is_not_ours_in_the_headroom() -> None:
    owners = ProcessOwners.of(["ns/s8000"], {"ns/s8000": {"another-pod"}})
    assert headroom_mib("n-g0", "n", [node("n")], [placed("n", "n-g0", 8000)], owners) == 24564 - 8000 - 1700


POD = {
    "metadata": {"uid": "u1", "name": "llm-abc", "namespace": "ns"},
    "spec": {"containers": [{"name": "engine"}]},
    "status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "engine",
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "No available memory for the cache blocks."}},
            }
        ],
    },
}


def test_pod_facts_of_a_crash_looping_engine() -> None:
    facts = pod_facts(POD)
    assert facts.crashing and not facts.ready
    assert facts.restarts == 4
    assert facts.container == "engine"
    assert "cache blocks" in facts.termination_message


def test_pod_facts_of_a_pending_pod_and_readiness() -> None:
    pending = pod_facts({"metadata": {"uid": "u2"}, "status": {}})
    assert not pending.crashing and not pending.ready
    running = pod_facts({"metadata": {"uid": "u3"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert readiness([running, pending], 1) == (True, "1/1 pods ready")
    assert readiness([pending], 1) == (False, "0/1 pods ready")
    assert readiness([], 0)[0] is False


def test_assigned_placement_round_trip_and_bad_values() -> None:
    pin = notes.AssignedPlacement("fleet", 3, "n", ("G0", "G1"), 4096.0)
    assert notes.assigned_placement({notes.ASSIGNED: pin.encode()}) == pin
    assert notes.assigned_placement({notes.ASSIGNED: "{not json"}) is None
    assert notes.assigned_placement({}) is None
    assert notes.corrections({notes.CORRECTIONS: "2"}) == 2
    assert notes.corrections({notes.CORRECTIONS: "x"}) == 0
    assert notes.utilization_override({notes.UTILIZATION: "0.62"}) == 0.62
    assert notes.utilization_override({notes.UTILIZATION: "1.5"}) is None


def test_a_crash_no_correction_applies_to_is_reported_until_the_pod_is_ready() -> None:
    crashing = pod_facts(POD)
    report = crash_report([crashing])
    assert report is not None and report.startswith(f"pod {crashing.name} crashing (4 restarts): ")
    assert report.endswith(crashing.termination_message.strip().splitlines()[-1][-300:])
    recovered = replace(crashing, ready=True)  # crashed once (lastState), runs ready again
    assert crash_report([recovered]) is None
    assert crash_report([pod_facts({"metadata": {"uid": "u"}, "status": {}})]) is None
    silent = replace(crashing, termination_message="")
    assert crash_report([silent]) == f"pod {crashing.name} crashing (4 restarts): no termination message"
