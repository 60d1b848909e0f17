"""The operator against the real control plane: run as a subprocess (`python -m vram_operator.controller`),
one per test and namespace, with GpuNode objects written as a simulated agent would."""

from __future__ import annotations

import contextlib
import random
import socket
import time
import urllib.request
from collections import defaultdict
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    GROUP,
    MARGIN_MIB,
    TIMEOUT,
    VERSION,
    Operator,
    condition,
    create,
    eventually,
    generic,
    get,
    gpu_node_status,
    manual_assignment,
    phase_is,
    publish,
    reports_restored,
    start_operator,
    totals,
    vllm_server,
)

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid

pytestmark = pytest.mark.integration


def servers(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    listed: dict[str, Any] = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers")
    return list(listed["items"])


def reserved_per_gpu(items: list[dict[str, Any]]) -> dict[str, float]:
    reserved: dict[str, float] = defaultdict(float)
    for item in items:
        placement = (item.get("status") or {}).get("placement")
        for gpu in (placement or {}).get("gpus", []):
            reserved[gpu["uuid"]] += placement["budgetMiB"]
    return reserved


def assert_no_overcommit(items: list[dict[str, Any]], nodes: list[FakeNode]) -> None:
    capacity = totals(nodes)
    for uuid, reserved in reserved_per_gpu(items).items():
        assert reserved + MARGIN_MIB <= capacity[uuid], f"GPU {uuid} over-committed: {reserved} MiB reserved"


def test_create_update_delete(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    create(custom_objects, namespace, generic("yolo", "650Mi"))
    placed = eventually(lambda: phase_is(custom_objects, namespace, "yolo", "Running"), "yolo Running")
    status = placed["status"]
    assert status["placement"]["budgetMiB"] == 650
    assert status["placement"]["gpuSummary"]
    assert status["observedGeneration"] == placed["metadata"]["generation"]
    assert condition(placed, "Placed")["status"] == "True"  # type: ignore[index]
    deployment = apps_v1.read_namespaced_deployment("yolo", namespace)
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.uid) == ("InferenceServer", placed["metadata"]["uid"])
    pod_nodes = {p.spec.node_name for p in core_v1.list_namespaced_pod(namespace).items}
    assert pod_nodes == {status["placement"]["node"]}
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=yolo").items
    assert any(e.reason == "Placed" for e in events)

    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "yolo", {"spec": {"vramBudget": "1200Mi"}}
    )
    eventually(lambda: get(custom_objects, namespace, "yolo")["status"]["placement"]["budgetMiB"] == 1200, "new budget")
    eventually(
        lambda: (
            (apps_v1.read_namespaced_deployment("yolo", namespace).spec.template.metadata.annotations or {}).get(
                "vram.dev/budget-mib"
            )
            == "1200"
        ),
        "Deployment re-rendered with the new budget",
    )

    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "yolo")

    def deployment_gone() -> bool:
        try:
            apps_v1.read_namespaced_deployment("yolo", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(deployment_gone, "garbage collection of the Deployment")
    assert operator.alive(), operator.logs()


def test_bad_specs_become_conditions_not_crashes(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    core_v1.create_namespaced_config_map(
        namespace, {"metadata": {"name": "broken"}, "data": {"config.json": '{"model_type": "llama"}'}}
    )
    for name, ref in (("missing-cm", "nope"), ("broken-cm", "broken")):
        body = vllm_server(name, image="vllm/vllm-openai", model={"configMapRef": {"name": ref}})
        create(custom_objects, namespace, body)
    failed = eventually(lambda: phase_is(custom_objects, namespace, "broken-cm", "Failed"), "broken-cm Failed")
    estimated = condition(failed, "Estimated")
    assert estimated is not None and estimated["status"] == "False" and estimated["message"]
    # A ConfigMap that does not exist yet is waited for, not a failure.
    waiting = eventually(lambda: phase_is(custom_objects, namespace, "missing-cm", "Pending"), "missing-cm Pending")
    placed = condition(waiting, "Placed")
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", "ConfigMapNotFound")
    assert apps_v1.list_namespaced_deployment(namespace).items == []
    # Still healthy: a good server next to the bad ones is placed.
    create(custom_objects, namespace, generic("fine", "1Gi"))
    eventually(lambda: phase_is(custom_objects, namespace, "fine", "Placed", "Running"), "fine placed")
    assert operator.alive(), operator.logs()


@pytest.fixture
def stale_operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode], custom_objects: client.CustomObjectsApi
) -> Iterator[Operator]:
    """An operator for which every agent's heartbeat (5 minutes old) is stale after a second."""
    with reports_restored(custom_objects, gpu_fleet):
        for node in gpu_fleet:
            publish(custom_objects, node, gpu_node_status(node, heartbeat=datetime.now(UTC) - timedelta(minutes=5)))
        yield from start_operator(kubeconfig, namespace, tmp_path, "--heartbeat-stale-seconds", "1")


def test_no_gpus_anywhere_is_a_clear_condition(
    stale_operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, apps_v1: client.AppsV1Api
) -> None:
    create(custom_objects, namespace, generic("lonely", "1Gi"))
    pending = eventually(lambda: phase_is(custom_objects, namespace, "lonely", "Pending"), "Pending")
    placed = condition(pending, "Placed")
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", "NoGpus")
    assert apps_v1.list_namespaced_deployment(namespace).items == []
    assert stale_operator.alive(), stale_operator.logs()


def test_measured_memory_from_the_agent(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    create(custom_objects, namespace, generic("clip", "4Gi"))
    running = eventually(lambda: phase_is(custom_objects, namespace, "clip", "Running"), "clip Running")
    fits = condition(running, "MemoryFits")
    assert fits is not None and (fits["status"], fits["reason"]) == ("Unknown", "NoAgentData")
    placement = running["status"]["placement"]
    pod = core_v1.list_namespaced_pod(namespace, label_selector="vram.dev/server=clip").items[0]
    node = next(n for n in gpu_fleet if n.name == placement["node"])
    index = placement["gpus"][0]["index"]
    total = node.gpus[index].memory_mib
    process = {
        "pid": 4242,
        "usedMiB": 3100,
        "podUID": pod.metadata.uid,
        "podNamespace": namespace,
        "podName": pod.metadata.name,
    }
    try:
        publish(custom_objects, node, gpu_node_status(node, processes={index: [process]}))
        measured = eventually(
            lambda: (
                (get(custom_objects, namespace, "clip")["status"].get("memory") or {}).get("usedMiB") == 3100
                and get(custom_objects, namespace, "clip")
            ),
            "measured memory in status",
        )
        memory = measured["status"]["memory"]
        assert memory["display"] == f"Memory: 3100MiB / {total}MiB ({100 * 3100 / total:.1f}%)"
        assert condition(measured, "MemoryFits")["status"] == "True"  # type: ignore[index]
        # Above the 4096 MiB budget: a warning condition and an event.
        process["usedMiB"] = 5000
        publish(custom_objects, node, gpu_node_status(node, processes={index: [process]}))
        above = eventually(
            lambda: (
                (c := condition(get(custom_objects, namespace, "clip"), "MemoryFits")) and c["status"] == "False" and c
            ),
            "MeasuredAboveBudget",
        )
        assert above["reason"] == "MeasuredAboveBudget"
        eventually(
            lambda: any(
                e.reason == "MeasuredAboveBudget"
                for e in core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=clip").items
            ),
            "MeasuredAboveBudget event",
        )
    finally:
        publish(custom_objects, node, gpu_node_status(node))


def test_gpu_loss_replaces_its_servers(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    create(custom_objects, namespace, generic("whisper", "3Gi"))
    placed = eventually(lambda: phase_is(custom_objects, namespace, "whisper", "Running"), "whisper Running")
    before = placed["status"]["placement"]
    node = next(n for n in gpu_fleet if n.name == before["node"])
    lost = before["gpus"][0]["index"]
    try:
        publish(custom_objects, node, gpu_node_status(node, unhealthy=frozenset({lost})))
        moved = eventually(
            lambda: (
                (p := get(custom_objects, namespace, "whisper")["status"].get("placement"))
                and p["gpus"][0]["uuid"] != before["gpus"][0]["uuid"]
                and p
            ),
            "re-placement off the lost GPU",
        )
        assert moved["gpus"][0]["uuid"] != fake_gpu_uuid(node.name, lost)
        events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=whisper").items
        assert any(e.reason == "GpuLost" for e in events)
        eventually(lambda: phase_is(custom_objects, namespace, "whisper", "Running"), "Running again")
    finally:
        publish(custom_objects, node, gpu_node_status(node))


def test_concurrent_creates_never_overcommit(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, gpu_fleet: list[FakeNode]
) -> None:
    rng = random.Random(11)
    count = 200
    for i in range(count):
        # replicas 0: the ledger is under test, not the scheduler; large budgets fill the fleet.
        create(custom_objects, namespace, generic(f"s{i:03d}", f"{rng.choice([6, 10, 16, 24])}Gi", replicas=0))

    def all_decided() -> list[dict[str, Any]] | None:
        items = servers(custom_objects, namespace)
        decided = [i for i in items if condition(i, "Placed") is not None]
        return items if len(decided) == count else None

    items = eventually(all_decided, "a decision for all 200 servers", timeout=300)
    assert_no_overcommit(items, gpu_fleet)
    placed = [i for i in items if (i["status"] or {}).get("placement")]
    assert placed, "some servers were placed"
    assert len(placed) < count, "the fleet is full: some servers wait (the test would not test contention)"


def test_killed_mid_rollout_converges_without_duplicates_or_orphans(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    rng = random.Random(5)
    names = [f"k{i:02d}" for i in range(30)]
    for batch in range(3):
        for name in names[batch * 10 : (batch + 1) * 10]:
            create(custom_objects, namespace, generic(name, f"{rng.choice([2, 5, 9])}Gi", replicas=0))
        time.sleep(rng.uniform(0.2, 1.5))
        operator.kill()
        operator.start()

    def converged() -> list[dict[str, Any]] | None:
        items = servers(custom_objects, namespace)
        ok = [i for i in items if (i.get("status") or {}).get("placement")]
        deployments = apps_v1.list_namespaced_deployment(namespace).items
        return items if len(ok) == len(names) and len(deployments) == len(names) else None

    items = eventually(converged, "every server placed with its Deployment after 3 kills", timeout=180)
    assert_no_overcommit(items, gpu_fleet)
    by_uid = {i["metadata"]["uid"]: i for i in items}
    for deployment in apps_v1.list_namespaced_deployment(namespace).items:
        owners = deployment.metadata.owner_references or []
        assert len(owners) == 1 and owners[0].uid in by_uid, f"orphan {deployment.metadata.name}"
        server = by_uid[owners[0].uid]
        assert deployment.metadata.name == server["metadata"]["name"]
        pinned = (deployment.spec.template.metadata.annotations or {})["vram.dev/gpus"]
        assert pinned == ",".join(g["uuid"] for g in server["status"]["placement"]["gpus"])


def test_assignment_preview_apply_rollback(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    labels = {"fleet": namespace}
    for name in ("det", "emb"):
        create(custom_objects, namespace, generic(name, "1Gi", labels=labels))
    for name in ("det", "emb"):
        eventually(lambda n=name: phase_is(custom_objects, namespace, n, "Running"), f"{name} Running")
    start = get(custom_objects, namespace, "det")["status"]["placement"]
    hash_before = apps_v1.read_namespaced_deployment("det", namespace).spec.template.metadata.annotations[
        "vram.dev/placement-hash"
    ]
    workstation = next(n for n in gpu_fleet if n.name == "workstation")
    target = fake_gpu_uuid(workstation.name, 1)
    name = f"pin-{namespace}"
    body = manual_assignment(name, namespace, "Preview", [{"server": "det", "node": "workstation", "gpus": [1]}])
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "gpuassignments", body)
    try:
        planned = eventually(
            lambda: (
                (st := custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpuassignments", name).get("status"))
                and st.get("plan")
                and st
            ),
            "Preview plan",
        )
        det = next(e for e in planned["plan"] if e["server"] == f"{namespace}/det")
        assert det["gpus"] == [target] and det["changed"] is True
        time.sleep(3)  # Preview touches no workload
        assert (
            get(custom_objects, namespace, "det")["status"]["placement"]["gpus"][0]["uuid"] == start["gpus"][0]["uuid"]
        )
        annotations = apps_v1.read_namespaced_deployment("det", namespace).spec.template.metadata.annotations
        assert annotations["vram.dev/placement-hash"] == hash_before

        custom_objects.patch_cluster_custom_object(GROUP, VERSION, "gpuassignments", name, {"spec": {"mode": "Apply"}})
        eventually(
            lambda: get(custom_objects, namespace, "det")["status"]["placement"]["gpus"][0]["uuid"] == target,
            "det moved by Apply",
        )

        def rollout_healthy(revision: int) -> dict[str, Any] | None:
            st = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpuassignments", name).get("status") or {}
            rollout = st.get("rollout") or {}
            done = (
                st.get("appliedRevision") == revision
                and not rollout.get("pending")
                and (set(rollout.get("restarted", [])) <= set(rollout.get("healthy", [])))
            )
            return st if done else None

        applied = eventually(lambda: rollout_healthy(1), "revision 1 rolled out")
        assert f"{namespace}/det" in applied["rollout"]["healthy"]
        assert f"{namespace}/emb" not in applied["rollout"]["restarted"]  # unchanged servers are not restarted

        second = fake_gpu_uuid(workstation.name, 0)
        custom_objects.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "gpuassignments",
            name,
            {"spec": {"assignments": [{"server": f"{namespace}/det", "node": "workstation", "gpus": [0]}]}},
        )
        eventually(lambda: rollout_healthy(2), "revision 2 rolled out")
        assert get(custom_objects, namespace, "det")["status"]["placement"]["gpus"][0]["uuid"] == second

        custom_objects.patch_cluster_custom_object(
            GROUP, VERSION, "gpuassignments", name, {"spec": {"rollbackToRevision": 1}}
        )
        restored = eventually(lambda: rollout_healthy(3), "rollback rolled out as revision 3")
        assert [h["revision"] for h in restored["history"]] == [1, 2, 3]
        eventually(
            lambda: get(custom_objects, namespace, "det")["status"]["placement"]["gpus"][0]["uuid"] == target,
            "det back where revision 1 put it",
        )
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpuassignments", name)


def server_events(
    custom: client.CustomObjectsApi, namespace: str, name: str, since: str, seconds: int
) -> Generator[dict[str, Any], None, None]:
    """The watch events of one server after resourceVersion `since`, for up to `seconds`."""
    return watch.Watch().stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "inferenceservers",
        field_selector=f"metadata.name={name}",
        resource_version=since,
        timeout_seconds=seconds,
    )


def first_decided(custom: client.CustomObjectsApi, namespace: str, name: str, since: str) -> dict[str, Any]:
    """The first version of a server (after resourceVersion `since`) with a Placed condition."""
    stream = server_events(custom, namespace, name, since, int(TIMEOUT))
    for event in stream:
        if condition(event["object"], "Placed") is not None:
            stream.close()
            found: dict[str, Any] = event["object"]
            return found
    pytest.fail(f"{name} not decided within {TIMEOUT:.0f}s")


def writes_since(custom: client.CustomObjectsApi, namespace: str, name: str, since: str, seconds: int) -> list[str]:
    """What was written to a server after resourceVersion `since`, within `seconds`."""
    return [
        f"{event['type']} {event['object']['metadata']['resourceVersion']}"
        for event in server_events(custom, namespace, name, since, seconds)
    ]


def test_a_decision_is_one_write_to_the_server(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    # The decided status carries what the first check observes while nothing runs (Ready False, no
    # memory measured, not degraded), and kopf keeps what it last handled in memory, not in an
    # annotation patched after every creation and change: one write per decision, not three.
    created = custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", generic("once", "512Mi", replicas=0)
    )
    decided = first_decided(custom_objects, namespace, "once", created["metadata"]["resourceVersion"])
    ready, degraded = condition(decided, "Ready") or {}, condition(decided, "Degraded") or {}
    assert (ready.get("status"), ready.get("reason"), ready.get("message")) == (
        "False",
        "PodsNotReady",
        "0/0 pods ready",
    )
    assert (degraded.get("status"), degraded.get("reason")) == ("False", "Healthy")
    # Three passes of the operator's check (every second here) and the end of the reconcile: nothing to write.
    assert writes_since(custom_objects, namespace, "once", decided["metadata"]["resourceVersion"], 3) == []
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "once", {"spec": {"vramBudget": "700Mi"}}
    )  # a change is still told from a status write: it is decided again
    eventually(lambda: get(custom_objects, namespace, "once")["status"]["placement"]["budgetMiB"] == 700, "new budget")
    annotations = get(custom_objects, namespace, "once")["metadata"].get("annotations") or {}
    assert [key for key in annotations if key.startswith("kopf.vram.dev/")] == []


def reserved_series(port: int, namespace: str) -> set[str]:
    """Servers of `namespace` with a reserved-bytes series on the operator's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:  # not serving yet
        return set()
    prefix = "vram_operator_server_reserved_bytes{"
    out = set()
    for line in text.splitlines():
        if line.startswith(prefix) and f'namespace="{namespace}"' in line:
            out.add(line.split('server="', 1)[1].split('"', 1)[0])
    return out


def test_a_deleted_server_is_forgotten_by_the_operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode], custom_objects: client.CustomObjectsApi
) -> None:
    # Servers carry no finalizer, so kopf calls no delete handler for them: what the operator keeps per
    # server (its metrics series, locks, retry state) must go on the watch's DELETED event.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with contextlib.contextmanager(start_operator)(kubeconfig, namespace, tmp_path, "--metrics-port", str(port)):
        for name in ("kept", "deleted"):
            create(custom_objects, namespace, generic(name, "512Mi", replicas=0))
        eventually(lambda: reserved_series(port, namespace) == {"kept", "deleted"}, "both servers' series")
        custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "deleted")
        eventually(lambda: reserved_series(port, namespace) == {"kept"}, "the deleted server's series gone")
