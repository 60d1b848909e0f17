"""Workloads go through the real controllers: Deployment -> ReplicaSet (controller-manager)
-> pods bound to a fake GPU node (scheduler) -> Running (KWOK)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from localcluster import FakeNode
from localcluster.fleet import KWOK_ANNOTATION
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

TIMEOUT_SECONDS = 60.0


def deployment(name: str, replicas: int, node_selector: dict[str, str], gpus: int = 0) -> Any:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": node_selector,
                    "containers": [
                        {"name": "server", "image": "example.invalid/server:1", "resources": {"limits": limits}}
                    ],
                },
            },
        },
    }


def scheduled_events(core_v1: client.CoreV1Api, namespace: str) -> list[Any]:
    events: list[Any] = core_v1.list_namespaced_event(namespace, field_selector="reason=Scheduled").items
    return events


def running_pods(core_v1: client.CoreV1Api, namespace: str, app: str, count: int) -> list[Any]:
    pods: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    running = [p for p in pods if p.status.phase == "Running"]
    return running if len(running) == count else []


def test_deployment_becomes_running_pods_on_a_kwok_node(
    namespace: str,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
    fake_gpu_nodes: list[FakeNode],
) -> None:
    target = fake_gpu_nodes[0].name
    apps_v1.create_namespaced_deployment(namespace, deployment("web", 2, {"kubernetes.io/hostname": target}))

    pods = eventually(
        lambda: running_pods(core_v1, namespace, "web", 2), "2 Running pods of Deployment web", TIMEOUT_SECONDS
    )

    replica_sets: list[Any] = apps_v1.list_namespaced_replica_set(namespace).items
    assert len(replica_sets) == 1
    owner = replica_sets[0].metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("Deployment", "web")
    node: Any = core_v1.read_node(target)
    assert node.metadata.annotations[KWOK_ANNOTATION] == "fake"
    for pod in pods:
        assert pod.metadata.owner_references[0].name == replica_sets[0].metadata.name
        assert pod.spec.node_name == target
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert scheduled.status == "True"
        assert pod.status.container_statuses[0].ready is True
    bound = eventually(
        lambda: [
            e
            for e in scheduled_events(core_v1, namespace)
            if e.source.component == "default-scheduler" or e.reporting_component == "default-scheduler"
        ],
        "Scheduled events from default-scheduler",
        TIMEOUT_SECONDS,
    )
    assert len(bound) >= 2


def test_gpu_requests_are_scheduled_by_capacity(
    namespace: str,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
    fake_gpu_nodes: list[FakeNode],
) -> None:
    h100 = next(node for node in fake_gpu_nodes if len(node.gpus) == 8)
    selector = {"nvidia.com/gpu.product": h100.gpus[0].product}
    apps_v1.create_namespaced_deployment(namespace, deployment("fits", 1, selector, gpus=8))
    apps_v1.create_namespaced_deployment(namespace, deployment("too-big", 1, selector, gpus=9))

    (placed,) = eventually(
        lambda: running_pods(core_v1, namespace, "fits", 1), "the 8-GPU pod Running", TIMEOUT_SECONDS
    )
    assert placed.spec.node_name in {node.name for node in fake_gpu_nodes if len(node.gpus) == 8}

    def unschedulable() -> list[Any]:
        pods: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector="app=too-big").items
        return [
            p
            for p in pods
            for c in (p.status.conditions or [])
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        ]

    (pending,) = eventually(unschedulable, "the 9-GPU pod to be reported Unschedulable", TIMEOUT_SECONDS)
    assert pending.status.phase == "Pending"
    assert pending.spec.node_name is None
