"""Dynamic Resource Allocation: resource.k8s.io/v1 is served, and the real scheduler allocates
a fake GPU (published in a ResourceSlice) to a claim selecting it by UUID with CEL, the way the
operator's `dra` pinning mode does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

DRIVER = "gpu.nvidia.com"
RESOURCE_V1 = "resource.k8s.io/v1"
TIMEOUT_SECONDS = 60.0


def test_resource_k8s_io_v1_is_served(api_client: client.ApiClient) -> None:
    groups: Any = client.ApisApi(api_client).get_api_versions()
    resource_group = next(g for g in groups.groups if g.name == "resource.k8s.io")
    assert "v1" in [v.version for v in resource_group.versions]
    served: Any = client.ResourceV1Api(api_client).get_api_resources()
    names = {r.name for r in served.resources}
    assert {"deviceclasses", "resourceclaims", "resourceclaimtemplates", "resourceslices"} <= names


@pytest.fixture
def gpu_slice(api_client: client.ApiClient, fake_gpu_nodes: list[FakeNode]) -> Iterator[tuple[str, str, str]]:
    """A DeviceClass and a ResourceSlice publishing the workstation's GPUs for a test-owned pool.

    Yields (device class name, node name, pool name)."""
    resource = client.ResourceV1Api(api_client)
    node = next(n for n in fake_gpu_nodes if len({g.product for g in n.gpus}) > 1)
    suffix = uuid.uuid4().hex[:6]
    class_name, pool = f"gpu-{suffix}.{DRIVER}", f"{node.name}-{suffix}"
    device_class: Any = {
        "apiVersion": RESOURCE_V1,
        "kind": "DeviceClass",
        "metadata": {"name": class_name},
        "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]},
    }
    devices = [
        {
            "name": f"gpu-{i}",
            "attributes": {
                "uuid": {"string": fake_gpu_uuid(node.name, i)},
                "productName": {"string": gpu.product},
            },
            "capacity": {"memory": {"value": f"{gpu.memory_mib}Mi"}},
        }
        for i, gpu in enumerate(node.gpus)
    ]
    resource_slice: Any = {
        "apiVersion": RESOURCE_V1,
        "kind": "ResourceSlice",
        "metadata": {"name": pool},
        "spec": {
            "driver": DRIVER,
            "nodeName": node.name,
            "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
            "devices": devices,
        },
    }
    resource.create_device_class(device_class)
    resource.create_resource_slice(resource_slice)
    yield class_name, node.name, pool
    resource.delete_resource_slice(pool)
    resource.delete_device_class(class_name)


def test_scheduler_allocates_the_gpu_a_claim_selects_by_uuid(
    namespace: str,
    api_client: client.ApiClient,
    core_v1: client.CoreV1Api,
    gpu_slice: tuple[str, str, str],
) -> None:
    class_name, node_name, pool = gpu_slice
    wanted_index = 1  # the RTX A400: not the first device, so a wrong allocation shows
    wanted_uuid = fake_gpu_uuid(node_name, wanted_index)
    resource = client.ResourceV1Api(api_client)
    claim: Any = {
        "apiVersion": RESOURCE_V1,
        "kind": "ResourceClaim",
        "metadata": {"name": "pinned-gpu"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "gpu",
                        "exactly": {
                            "deviceClassName": class_name,
                            "selectors": [
                                {"cel": {"expression": f'device.attributes["{DRIVER}"].uuid == "{wanted_uuid}"'}}
                            ],
                        },
                    }
                ]
            }
        },
    }
    resource.create_namespaced_resource_claim(namespace, claim)
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "uses-claim"},
        "spec": {
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "pinned-gpu"}],
            "containers": [
                {"name": "server", "image": "example.invalid/server:1", "resources": {"claims": [{"name": "gpu"}]}}
            ],
        },
    }
    core_v1.create_namespaced_pod(namespace, pod)

    def running_pod() -> Any:
        pod: Any = core_v1.read_namespaced_pod("uses-claim", namespace)
        return pod if pod.status.phase == "Running" else None

    running: Any = eventually(
        running_pod,
        "the pod with the claim to be Running",
        TIMEOUT_SECONDS,
    )
    assert running.spec.node_name == node_name
    allocated: Any = resource.read_namespaced_resource_claim("pinned-gpu", namespace)
    (result,) = allocated.status.allocation.devices.results
    assert (result.driver, result.pool, result.device) == (DRIVER, pool, f"gpu-{wanted_index}")
    assert [r.name for r in allocated.status.reserved_for] == ["uses-claim"]
