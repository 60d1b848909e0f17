"""The node agent, simulated backend, against the real API server: it creates GpuNode/<node>,
writes a status the CRD schema accepts, attributes a process to a real pod by the pod list of
that node, and reports a GPU lost through a live profile edit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import FakeNode, install_crds
from localcluster.cluster import DEFAULT_CRD_DIR
from localcluster.fleet import fake_gpu_uuid
from localcluster.waiting import eventually
from vram_operator.agent.pods import PodDirectory, kubernetes_pod_lister
from vram_operator.agent.poller import Agent
from vram_operator.agent.reporter import GpuNodeReporter
from vram_operator.agent.simulated import SimulatedBackend
from vram_operator.api.base import GROUP, VERSION

pytestmark = pytest.mark.integration

TIMEOUT_SECONDS = 60.0
HTTP_NOT_FOUND = 404


def profile(node: FakeNode, namespace: str, *, lose_second: bool = False) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = [
        {"name": gpu.product, "memoryTotalMiB": gpu.memory_mib, "uuid": fake_gpu_uuid(node.name, i)}
        for i, gpu in enumerate(node.gpus)
    ]
    gpus[0]["processes"] = [
        {"pid": 4242, "usedMiB": 6134, "pod": f"{namespace}/llama", "container": "server"},
        {"pid": 1800, "usedMiB": 350, "name": "Xorg"},
    ]
    if lose_second:
        gpus[1]["healthy"] = False
    return {"driverVersion": "550.54.15", "gpus": gpus}


def write_profile(path: Path, body: dict[str, Any], stamp: int) -> None:
    path.write_text(yaml.safe_dump(body))
    os.utime(path, (stamp, stamp))  # coarse-mtime filesystems: make the edit visible


@pytest.fixture
def gpu_node(
    cluster: Any, api_client: client.ApiClient, fake_gpu_nodes: list[FakeNode], custom_objects: client.CustomObjectsApi
) -> Iterator[FakeNode]:
    """A fake node with two GPUs or more, GpuNode served; its GpuNode is removed afterwards if
    this test made it."""
    if cluster.local is None:  # the local cluster installs crds/ itself
        install_crds(api_client, DEFAULT_CRD_DIR)
    node = next(n for n in fake_gpu_nodes if len(n.gpus) >= 2)
    try:
        custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)
        existed = True
    except ApiException as error:
        if error.status != HTTP_NOT_FOUND:
            raise
        existed = False
    yield node
    if not existed:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)


def test_agent_reports_simulated_gpus_and_faults(
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    gpu_node: FakeNode,
    namespace: str,
    tmp_path: Path,
) -> None:
    node = gpu_node
    pod_body: Any = {
        "metadata": {"name": "llama"},
        "spec": {
            "nodeName": node.name,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "server", "image": "example.invalid/llama:1"}],
        },
    }
    pod: Any = core_v1.create_namespaced_pod(namespace, pod_body)
    path = tmp_path / "profile.yaml"
    write_profile(path, profile(node, namespace), 1_700_000_000)
    reporter = GpuNodeReporter(custom_objects, node.name, heartbeat_s=3600)
    agent = Agent(
        SimulatedBackend(path, node.name),
        proc_root=tmp_path,
        pods=PodDirectory(kubernetes_pod_lister(core_v1, node.name)),
        reporter=reporter,
    )

    agent.poll_once()
    assert reporter.consecutive_failures == 0
    stored: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)
    status = stored["status"]
    assert (status["backend"], status["gpuCount"], status["driverVersion"]) == (
        "simulated",
        len(node.gpus),
        "550.54.15",
    )
    assert [g["uuid"] for g in status["gpus"]] == [fake_gpu_uuid(node.name, i) for i in range(len(node.gpus))]
    assert [g["memoryTotalMiB"] for g in status["gpus"]] == [g.memory_mib for g in node.gpus]
    llama, desktop = status["gpus"][0]["processes"]
    assert (llama["podUID"], llama["podNamespace"], llama["podName"], llama["container"]) == (
        pod.metadata.uid,
        namespace,
        "llama",
        "server",
    )
    assert (desktop["name"], "podUID" in desktop) == ("Xorg", False)
    assert status["gpus"][0]["memoryUsedMiB"] == 6134 + 350
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("True", "AllGpusHealthy")
    assert status["lastHeartbeat"]

    # Nothing changed and the heartbeat is not due: no write.
    version = stored["metadata"]["resourceVersion"]
    agent.poll_once()
    again: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)
    assert again["metadata"]["resourceVersion"] == version

    # A GPU is lost while the agent runs.
    write_profile(path, profile(node, namespace, lose_second=True), 1_700_000_100)
    agent.poll_once()

    def lost() -> Any:
        current: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)
        return current if current["status"]["gpus"][1]["healthy"] is False else None

    current = eventually(lost, "GPU 1 reported unhealthy", TIMEOUT_SECONDS)
    ready = next(c for c in current["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GpuUnhealthy")
    assert fake_gpu_uuid(node.name, 1) in ready["message"]
