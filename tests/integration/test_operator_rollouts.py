"""GpuAssignment rollouts against the real control plane, on the H100 rack's shapes: an Apply always
ends, a deleted assignment gives its servers back, a moved server arrives only with its new pod
Ready, cordoned Nodes take no new placements, and rollbackToRevision acts once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    GROUP,
    VERSION,
    Operator,
    condition,
    create,
    delete_cluster_object,
    eventually,
    generic,
    get,
    gpu_node_status,
    manual_assignment,
    phase_is,
    publish,
    vllm_server,
)

from localcluster import FakeNode
from localcluster.fleet import H100_80GB, fake_gpu_uuid

pytestmark = pytest.mark.integration

ASSIGNED = "vram.dev/assigned-placement"
STOPPED = "vram.dev/stopped-for-rollout"
HOLD = "vram.dev/test-hold"
SETTLE_SECONDS = 5.0  # several check intervals (the operator checks every second here)


def gpu_assignment(name: str, namespace: str, pins: dict[str, tuple[str, int]], mode: str = "Apply") -> dict[str, Any]:
    by_pin = [{"server": server, "node": node, "gpus": [gpu]} for server, (node, gpu) in pins.items()]
    return manual_assignment(name, namespace, mode, by_pin)


class Assignments:
    """One test's GpuAssignment: create, patch, read, delete (and wait until its finalizer is done)."""

    def __init__(self, custom: client.CustomObjectsApi, name: str) -> None:
        self.custom, self.name = custom, name

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_cluster_custom_object(GROUP, VERSION, "gpuassignments", body)

    def patch(self, spec: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "gpuassignments", self.name, {"spec": spec})

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, "gpuassignments", self.name)
        return found.get("status") or {}

    def applied(self, revision: int) -> dict[str, Any] | None:
        status = self.status()
        applied = condition({"status": status}, "Applied") or {}
        done = status.get("appliedRevision") == revision and applied.get("status") == "True"
        return status if done else None

    def gone(self) -> bool:
        try:
            self.custom.get_cluster_custom_object(GROUP, VERSION, "gpuassignments", self.name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    def delete(self) -> None:
        delete_cluster_object(self.custom, "gpuassignments", self.name)

    def delete_and_wait(self) -> None:
        self.delete()
        eventually(self.gone, "the assignment deleted (its finalizer done)")


@pytest.fixture
def assignments(custom_objects: client.CustomObjectsApi, namespace: str) -> Iterator[Assignments]:
    handle = Assignments(custom_objects, f"rollout-{namespace}")
    yield handle
    handle.delete()


def running(custom: client.CustomObjectsApi, namespace: str, *names: str) -> dict[str, dict[str, Any]]:
    return {n: eventually(lambda n=n: phase_is(custom, namespace, n, "Running"), f"{n} Running") for n in names}


def fleet_running(custom: client.CustomObjectsApi, namespace: str, **budgets: str) -> dict[str, dict[str, Any]]:
    """Generic servers of the assignments' fleet (label fleet=<namespace>), created in this order; once all run."""
    for name, budget in budgets.items():
        create(custom, namespace, generic(name, budget, labels={"fleet": namespace}))
    return running(custom, namespace, *budgets)


def where(server: dict[str, Any]) -> tuple[str, int, str]:
    placement = server["status"]["placement"]
    return placement["node"], placement["gpus"][0]["index"], placement["gpus"][0]["uuid"]


def env_of(apps: client.AppsV1Api, namespace: str, name: str) -> dict[str, str]:
    deployment = apps.read_namespaced_deployment(name, namespace)
    return {e.name: e.value for e in deployment.spec.template.spec.containers[0].env or []}


def replicas_of(apps: client.AppsV1Api, namespace: str, name: str) -> int:
    return int(apps.read_namespaced_deployment(name, namespace).spec.replicas)


def annotations_of(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, str]:
    return dict(get(custom, namespace, name)["metadata"].get("annotations") or {})


@pytest.fixture
def straggler(core_v1: client.CoreV1Api, namespace: str) -> Iterator[Any]:
    """A pod of a server (its label) that no Deployment owns, bound to a node that does not exist:
    it never runs and never goes, like a pod whose node died while it held GPU memory. Call with a
    server name to create it; removed (force) afterwards, or earlier with `.remove()`."""

    class Straggler:
        name = "straggler"

        def __call__(self, server: str) -> None:
            body = {
                "metadata": {"name": self.name, "labels": {"vram.dev/server": server}},
                "spec": {"nodeName": f"gone-{namespace}", "containers": [{"name": "engine", "image": "none:1"}]},
            }
            core_v1.create_namespaced_pod(namespace, body)

        def remove(self) -> None:
            try:
                core_v1.delete_namespaced_pod(self.name, namespace, grace_period_seconds=0)
            except ApiException as error:
                if error.status != 404:
                    raise

    handle = Straggler()
    yield handle
    handle.remove()


def pin_mover_onto_big(
    custom: client.CustomObjectsApi, namespace: str, straggler: Any, assignments: Assignments
) -> dict[str, dict[str, Any]]:
    """big (60Gi) and mover (40Gi) running; a pod of mover that stays until removed (it keeps the rollout between
    its stop wave and its start wave); then an Apply pinning mover onto big's GPU. Returns both as first Running."""
    placed = fleet_running(custom, namespace, big="60Gi", mover="40Gi")
    node, index, _ = where(placed["big"])
    straggler("mover")
    assignments.create(gpu_assignment(assignments.name, namespace, {"mover": (node, index)}))
    return placed


def test_overcommitting_manual_apply_stops_then_starts_and_finishes(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    straggler: Any,
    assignments: Assignments,
) -> None:
    placed = pin_mover_onto_big(custom_objects, namespace, straggler, assignments)
    uuid = where(placed["big"])[2]
    assert where(placed["mover"])[2] != uuid, "60Gi and 40Gi do not share an 80GB GPU"

    def stop_recorded() -> dict[str, Any] | None:
        status = assignments.status()
        applied = condition({"status": status}, "Applied") or {}
        recorded = (status.get("rollout") or {}).get("stopped") == [f"{namespace}/mover"]
        return applied if recorded and "its stopped pods to go" in applied.get("message", "") else None

    # The first wave stops it (no room until it is gone) and the status remembers that; a pod of it
    # is still there (it may hold its memory): the start waits, and says so.
    applied = eventually(stop_recorded, "the stop recorded, the start waiting for the old pod")
    assert applied["status"] == "False" and applied["reason"] == "RollingOut", applied
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        assert replicas_of(apps_v1, namespace, "mover") == 0
        assert ASSIGNED not in annotations_of(custom_objects, namespace, "mover"), "started before its pods went"
        time.sleep(0.5)
    straggler.remove()

    status = eventually(lambda: assignments.applied(1), "the over-committing Apply finished", timeout=60)
    assert any("over-commits" in w for w in status["warnings"]), status["warnings"]
    assert status["rollout"]["healthy"] == [f"{namespace}/mover"] and not status["rollout"].get("stopped")
    mover = get(custom_objects, namespace, "mover")
    assert where(mover)[2] == uuid and mover["status"]["placement"]["assignment"] == assignments.name
    assert STOPPED not in annotations_of(custom_objects, namespace, "mover")
    assert replicas_of(apps_v1, namespace, "mover") == 1
    assert env_of(apps_v1, namespace, "mover")["VRAM_BUDGET_MIB"] == "40960"
    assert where(get(custom_objects, namespace, "big"))[2] == uuid  # Manual: the unpinned server stays

    assignments.delete_and_wait()  # without the assignment, the over-commit is not allowed: mover is placed afresh

    def placed_apart() -> bool:
        mover = get(custom_objects, namespace, "mover")
        placement = mover["status"].get("placement")
        return bool(placement) and where(mover)[2] != uuid and not placement.get("assignment")

    eventually(placed_apart, "mover re-placed off the over-committed GPU")
    assert ASSIGNED not in annotations_of(custom_objects, namespace, "mover")


def test_deleting_an_assignment_mid_rollout_starts_the_servers_it_stopped(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    straggler: Any,
    assignments: Assignments,
) -> None:
    pin_mover_onto_big(custom_objects, namespace, straggler, assignments)
    eventually(
        lambda: (
            replicas_of(apps_v1, namespace, "mover") == 0
            and STOPPED in annotations_of(custom_objects, namespace, "mover")
        ),
        "mover stopped by the rollout's first wave",
    )
    assignments.delete_and_wait()
    eventually(lambda: replicas_of(apps_v1, namespace, "mover") == 1, "mover started again")
    notes = annotations_of(custom_objects, namespace, "mover")
    assert STOPPED not in notes and ASSIGNED not in notes


def test_deleting_an_assignment_releases_its_pins_so_spec_edits_apply(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    assignments: Assignments,
) -> None:
    node, _, _ = where(fleet_running(custom_objects, namespace, det="2Gi")["det"])
    target = ("h100-1" if node != "h100-1" else "h100-0", 5)
    assignments.create(gpu_assignment(assignments.name, namespace, {"det": target}))
    eventually(lambda: assignments.applied(1), "det moved by the Apply")
    assert get(custom_objects, namespace, "det")["status"]["placement"]["assignment"] == assignments.name

    assignments.delete_and_wait()
    eventually(lambda: ASSIGNED not in annotations_of(custom_objects, namespace, "det"), "det's pin released")
    eventually(
        lambda: not get(custom_objects, namespace, "det")["status"]["placement"].get("assignment"),
        "status.placement.assignment cleared",
    )
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "det", {"spec": {"vramBudget": "4Gi"}}
    )
    eventually(lambda: env_of(apps_v1, namespace, "det").get("VRAM_BUDGET_MIB") == "4096", "the new budget rendered")
    assert get(custom_objects, namespace, "det")["status"]["placement"]["budgetMiB"] == 4096


def test_a_spec_the_pinned_gpu_cannot_hold_is_a_reason_not_an_overcommit(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    assignments: Assignments,
) -> None:
    placed = fleet_running(custom_objects, namespace, tenant="70Gi", det="2Gi")
    node, index, uuid = where(placed["tenant"])
    assignments.create(gpu_assignment(assignments.name, namespace, {"det": (node, index)}))
    eventually(lambda: assignments.applied(1), "det pinned beside the tenant")
    assert where(get(custom_objects, namespace, "det"))[2] == uuid

    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "det", {"spec": {"vramBudget": "20Gi"}}
    )

    def refused() -> dict[str, Any] | None:
        placed_condition = condition(get(custom_objects, namespace, "det"), "Placed") or {}
        return placed_condition if placed_condition.get("status") == "False" else None

    reason = eventually(refused, "det's bigger spec refused on its pinned GPU")
    assert reason["reason"] == "InsufficientMemory", reason
    assert f"GpuAssignment {assignments.name}" in reason["message"], reason
    # Never rendered over-committed: an unplaced server holds no reservation, so it keeps no Deployment.
    eventually(lambda: not deployment_exists(apps_v1, namespace, "det"), "det's Deployment removed")


def deployment_exists(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    try:
        apps.read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.fixture
def ghost_node(custom_objects: client.CustomObjectsApi, namespace: str) -> Iterator[FakeNode]:
    """A GpuNode whose Kubernetes Node does not exist (pods pinned there stay Pending), published
    by the test with `publish` once its servers stand elsewhere; deleted afterwards."""
    ghost = FakeNode(name=f"ghost-{namespace}", gpus=(H100_80GB,))
    yield ghost
    delete_cluster_object(custom_objects, "gpunodes", ghost.name)


def test_a_moved_server_arrives_only_when_its_new_pod_is_ready_and_the_next_wave_waits(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    assignments: Assignments,
    ghost_node: FakeNode,
) -> None:
    placed = fleet_running(custom_objects, namespace, first="60Gi", second="40Gi")
    node, index, _ = where(placed["first"])
    second_before = where(placed["second"])
    publish(custom_objects, ghost_node, gpu_node_status(ghost_node))
    time.sleep(1.0)  # the operator's GpuNode watch sees it
    # first leaves for the ghost node (its new pod never schedules); second needs first's room.
    pins = {"first": (ghost_node.name, 0), "second": (node, index)}
    assignments.create(gpu_assignment(assignments.name, namespace, pins))
    eventually(
        lambda: where(get(custom_objects, namespace, "first"))[2] == fake_gpu_uuid(ghost_node.name, 0),
        "first placed on the ghost node",
    )
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        first = get(custom_objects, namespace, "first")
        assert (condition(first, "Ready") or {}).get("status") != "True", "Ready from the old pod after the move"
        assert not first["status"].get("memory")
        status = assignments.status()
        assert (condition({"status": status}, "Applied") or {}).get("status") != "True", status
        assert f"{namespace}/first" not in status["rollout"].get("healthy", [])
        assert ASSIGNED not in annotations_of(custom_objects, namespace, "second"), "the next wave did not wait"
        time.sleep(0.5)
    applied = condition({"status": assignments.status()}, "Applied") or {}
    assert applied.get("reason") == "RollingOut" and "first" in applied.get("message", ""), applied
    assert where(get(custom_objects, namespace, "second")) == second_before


@pytest.fixture
def cordon(core_v1: client.CoreV1Api) -> Iterator[Any]:
    cordoned: list[str] = []

    def cordon_node(name: str) -> None:
        core_v1.patch_node(name, {"spec": {"unschedulable": True}})
        cordoned.append(name)

    yield cordon_node
    for name in cordoned:
        core_v1.patch_node(name, {"spec": {"unschedulable": None}})


def test_cordoned_nodes_take_no_new_placements(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    assignments: Assignments,
    cordon: Any,
) -> None:
    cordon("h100-0")
    cordon("h100-1")
    time.sleep(1.0)  # the operator's Node watch sees the cordons
    create(custom_objects, namespace, generic("det", "2Gi", labels={"fleet": namespace}))
    det = eventually(
        lambda: (d := get(custom_objects, namespace, "det")).get("status", {}).get("placement") and d, "det placed"
    )
    assert where(det)[0] == "workstation", "VRAMBased chose a GPU of a cordoned Node"
    running(custom_objects, namespace, "det")

    assignments.create(gpu_assignment(assignments.name, namespace, {"det": ("h100-0", 2)}))
    status = eventually(lambda: (st := assignments.status()).get("appliedRevision") and st, "the Apply planned")
    [entry] = [e for e in status["plan"] if e["server"] == f"{namespace}/det"]
    assert entry.get("node") is None and not entry["changed"], entry
    assert "unschedulable" in entry["reason"], entry
    applied = condition({"status": status}, "Applied") or {}
    assert (applied.get("status"), applied.get("reason")) == ("False", "NotPlaced"), applied
    assert f"{namespace}/det: PinnedGpuUnavailable" in applied["message"], applied
    assert where(get(custom_objects, namespace, "det"))[0] == "workstation"  # it stays where it runs


def test_rollback_acts_once_then_later_pins_apply(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    assignments: Assignments,
) -> None:
    node, _, _ = where(fleet_running(custom_objects, namespace, det="2Gi")["det"])
    other = "h100-1" if node != "h100-1" else "h100-0"

    def pin(gpu: int) -> list[dict[str, Any]]:
        return [{"server": f"{namespace}/det", "node": other, "gpus": [gpu]}]

    def on_gpu(gpu: int) -> bool:
        return where(get(custom_objects, namespace, "det"))[2] == fake_gpu_uuid(other, gpu)

    assignments.create(gpu_assignment(assignments.name, namespace, {"det": (other, 1)}))
    eventually(lambda: assignments.applied(1), "revision 1")
    assignments.patch({"assignments": pin(2)})
    eventually(lambda: assignments.applied(2) and on_gpu(2), "revision 2 on GPU 2")
    assignments.patch({"rollbackToRevision": 1})
    rolled = eventually(lambda: assignments.applied(3) and on_gpu(1) and assignments.status(), "rolled back to GPU 1")
    generation = rolled["observedGeneration"]

    assignments.patch({"assignments": pin(3)})  # rollbackToRevision is still 1
    later = eventually(lambda: assignments.applied(4) and assignments.status(), "revision 4 applied")
    assert [e["gpus"] for e in later["history"][-1]["plan"]] == [[fake_gpu_uuid(other, 3)]], "revision 1 re-applied"
    eventually(lambda: on_gpu(3), "det on GPU 3, as the spec now pins it")
    assert later["rolledBack"] == {"toRevision": 1, "revision": 3, "generation": generation}
    superseded = condition({"status": later}, "RolledBack") or {}
    assert (superseded.get("status"), superseded.get("reason")) == ("False", "RollbackSuperseded"), superseded


def test_self_healing_lowers_utilization_under_a_rollouts_pin(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    assignments: Assignments,
) -> None:
    body = vllm_server("llm", labels={"fleet": namespace}, gpuMemoryUtilization=0.95)
    create(custom_objects, namespace, body)
    node, _, _ = where(running(custom_objects, namespace, "llm")["llm"])
    other = "h100-1" if node != "h100-1" else "h100-0"
    assignments.create(gpu_assignment(assignments.name, namespace, {"llm": (other, 4)}))
    eventually(lambda: assignments.applied(1), "llm pinned by the Apply")

    def utilization() -> str:
        args = apps_v1.read_namespaced_deployment("llm", namespace).spec.template.spec.containers[0].args
        return str(args[args.index("--gpu-memory-utilization") + 1])

    assert utilization() == "0.95"
    # What the operator writes after a start-up memory failure (controller.failures): a lower utilization.
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "inferenceservers",
        "llm",
        {"metadata": {"annotations": {"vram.dev/utilization-override": "0.61"}}},
    )
    eventually(lambda: utilization() == "0.61", "the corrected utilization rendered on the pinned GPU")
    status = get(custom_objects, namespace, "llm")["status"]
    assert where({"status": status})[2] == fake_gpu_uuid(other, 4)
    assert status["placement"]["budgetMiB"] < 0.62 * H100_80GB.memory_mib
