"""Replicas on the real control plane: each replica is a placement of its own (own GPU, budget, pinning)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    GROUP,
    MARGIN_MIB,
    VERSION,
    Operator,
    condition,
    create,
    eventually,
    generic,
    get,
    totals,
)

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid

pytestmark = pytest.mark.integration

SERVER_LABEL = "vram.dev/server"


def replica_placements(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("replicaPlacements") or [])


def budgets_per_gpu(obj: dict[str, Any]) -> dict[str, float]:
    reserved: dict[str, float] = defaultdict(float)
    for placement in replica_placements(obj):
        for gpu in placement["gpus"]:
            reserved[gpu["uuid"]] += placement["budgetMiB"]
    return reserved


def deployments_of(apps_v1: client.AppsV1Api, namespace: str, server: str) -> dict[str, Any]:
    items = apps_v1.list_namespaced_deployment(namespace, label_selector=f"{SERVER_LABEL}={server}").items
    return {d.metadata.name: d for d in items}


def env(pod_spec: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod_spec.containers[0].env or []}


def pinned_node(pod_spec: Any) -> str:
    terms = pod_spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
    (value,) = terms[0].match_fields[0].values
    return str(value)


def test_each_replica_runs_on_its_own_gpu_with_its_own_budget(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    create(custom_objects, namespace, generic("det", "20Gi", replicas=3))

    def three_pods() -> list[Any] | None:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=f"{SERVER_LABEL}=det").items
        return pods if len(pods) == 3 and all(p.spec.node_name for p in pods) else None

    pods = eventually(three_pods, "three pods of det bound to nodes")
    pinned = sorted(env(p.spec)["NVIDIA_VISIBLE_DEVICES"] for p in pods)
    assert len(set(pinned)) == 3, f"each replica's pod pinned to a GPU of its own, got {pinned}"

    def running_with_three() -> dict[str, Any] | None:
        obj = get(custom_objects, namespace, "det")
        ready = (obj.get("status") or {}).get("phase") == "Running"
        return obj if ready and len(replica_placements(obj)) == 3 else None

    obj = eventually(running_with_three, "det Running with 3 replica placements")
    placements = {p["replica"]: p for p in replica_placements(obj)}
    assert sorted(placements) == [0, 1, 2]
    assert obj["status"]["placement"]["gpus"] == placements[0]["gpus"]
    gpus = {p["gpus"][0]["uuid"] for p in placements.values()}
    assert len(gpus) == 3, "three replicas on three different GPUs"
    assert len({p["node"] for p in placements.values()}) == 3, "spread over nodes first when they have room"
    capacity = totals(gpu_fleet)
    for uuid, reserved in budgets_per_gpu(obj).items():
        assert reserved == 20480 and reserved + MARGIN_MIB <= capacity[uuid]

    deployments = deployments_of(apps_v1, namespace, "det")
    assert sorted(deployments) == ["det", "det-replica-1", "det-replica-2"]
    for name, deployment in deployments.items():
        replica = 0 if name == "det" else int(name.rsplit("-", 1)[1])
        pod_spec = deployment.spec.template.spec
        assert deployment.spec.replicas == 1
        assert env(pod_spec)["NVIDIA_VISIBLE_DEVICES"] == placements[replica]["gpus"][0]["uuid"]
        assert pinned_node(pod_spec) == placements[replica]["node"]
    pods = core_v1.list_namespaced_pod(namespace, label_selector=f"{SERVER_LABEL}=det").items
    assert {env(p.spec)["NVIDIA_VISIBLE_DEVICES"] for p in pods} == gpus
    assert {p.spec.node_name for p in pods} == {p["node"] for p in placements.values()}

    # Scaled down: the extra replicas' Deployments go, and their reservations with them.
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "det", {"spec": {"replicas": 1}}
    )
    eventually(lambda: list(deployments_of(apps_v1, namespace, "det")) == ["det"], "replica Deployments deleted")
    scaled = eventually(
        lambda: (o := get(custom_objects, namespace, "det")) and len(replica_placements(o)) == 1 and o,
        "one replica placement left",
    )
    assert replica_placements(scaled)[0]["gpus"] == placements[0]["gpus"], "replica 0 stays where it was"
    assert operator.alive(), operator.logs()


@pytest.mark.parametrize(("budget_mib", "placed"), [(12154, 2), (12155, 1)])
def test_replicas_share_a_gpu_only_when_every_budget_fits(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
    gpu_fleet: list[FakeNode],
    budget_mib: int,
    placed: int,
) -> None:
    # Two replicas pinned to the workstation's RTX A5500 (24564 MiB, 256 MiB margin): 2 x 12154 fills
    # it exactly; at 1 MiB more the second replica waits.
    body = generic("pair", f"{budget_mib}Mi", replicas=2)
    body["spec"]["placement"] = {"node": "workstation", "gpus": [0]}
    create(custom_objects, namespace, body)
    expected = ["pair", "pair-replica-1"][:placed]
    eventually(lambda: sorted(deployments_of(apps_v1, namespace, "pair")) == expected, f"Deployments {expected}")

    # Each placed replica runs one pod; a replica whose budget does not fit runs none.
    def pods() -> list[Any] | None:
        items = core_v1.list_namespaced_pod(namespace, label_selector=f"{SERVER_LABEL}=pair").items
        return items if len(items) >= placed else None

    assert len(eventually(pods, f"{placed} pods of pair")) == placed
    obj = eventually(
        lambda: (o := get(custom_objects, namespace, "pair")) and condition(o, "Placed") and o, "a decision"
    )
    placed_condition = condition(obj, "Placed")
    assert placed_condition is not None and placed_condition["status"] == "True"
    assert len(replica_placements(obj)) == placed
    uuid = fake_gpu_uuid("workstation", 0)
    assert budgets_per_gpu(obj) == {uuid: budget_mib * placed}
    assert budget_mib * placed + MARGIN_MIB <= totals(gpu_fleet)[uuid]
    if placed == 2:
        assert placed_condition["reason"] == "Placed"
    else:
        assert placed_condition["reason"] == "PartiallyPlaced"
        assert placed_condition["message"].startswith("1/2 replicas placed; the others: InsufficientMemory")
    assert operator.alive(), operator.logs()
