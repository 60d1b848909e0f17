"""A rendered server pod schedules onto a GPU node tainted as GKE taints its GPU pools
(nvidia.com/gpu=present:NoSchedule), on the real scheduler; without the toleration it would not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster.fleet import KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE, NVIDIA_RUNTIME_CLASS
from localcluster.waiting import eventually
from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.render import RenderSettings, render_deployment

pytestmark = pytest.mark.integration

SCHEDULE_SECONDS = 60.0


@pytest.fixture(scope="module")
def tainted_gpu_node(api_client: client.ApiClient, core_v1: client.CoreV1Api) -> Iterator[str]:
    name = f"gke-gpu-pool-{uuid.uuid4().hex[:5]}"
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    core_v1.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE},
                "labels": {"kubernetes.io/hostname": name, "cloud.google.com/gke-accelerator": "nvidia-l4"},
            },
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"capacity": resources, "allocatable": resources},
        }
    )
    try:
        client.NodeV1Api(api_client).create_runtime_class(NVIDIA_RUNTIME_CLASS)
    except ApiException as error:
        if error.status != 409:
            raise
    yield name
    core_v1.delete_node(name)


def _create(
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
    namespace: str,
    node: str,
    name: str,
    *,
    settings: RenderSettings,
) -> Any:
    server = InferenceServer.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"engine": "generic", "image": "example.org/whisper:1", "vramBudget": "1Gi"},
        }
    )
    placement = PlacementStatus.model_validate(
        {
            "node": node,
            "gpus": [{"index": 0, "uuid": f"GPU-{uuid.uuid4()}", "name": "NVIDIA L4", "totalMiB": 23034}],
            "budgetMiB": 1024,
        }
    )
    deployment = render_deployment(server, placement, None, settings).deployment
    apps_v1.create_namespaced_deployment(namespace, deployment)
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())

    def pod() -> Any:
        pods: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        scheduled = [
            p for p in pods if any(c.type == "PodScheduled" and c.reason != "" for c in p.status.conditions or [])
        ]
        return scheduled[0] if scheduled else None

    return eventually(pod, f"the scheduler's verdict on {name}", SCHEDULE_SECONDS)


def test_default_render_tolerates_the_gke_gpu_taint(
    tainted_gpu_node: str, apps_v1: client.AppsV1Api, core_v1: client.CoreV1Api, namespace: str
) -> None:
    tolerated = _create(apps_v1, core_v1, namespace, tainted_gpu_node, "tolerated", settings=RenderSettings())
    assert tolerated.spec.node_name == tainted_gpu_node
    untolerated = _create(
        apps_v1, core_v1, namespace, tainted_gpu_node, "bare", settings=RenderSettings(tolerations=())
    )
    refused = next(c for c in untolerated.status.conditions if c.type == "PodScheduled")
    assert (refused.status, refused.reason) == ("False", "Unschedulable")
    assert "untolerated taint" in refused.message
