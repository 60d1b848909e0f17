"""helm install onto the local cluster: the operator's pod runs (KWOK) and the agent DaemonSet
lands on exactly the fake GPU nodes."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import FakeNode, binary_path
from localcluster.fleet import KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "vram-operator"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
READY_SECONDS = 90.0


def helm(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary_path("helm")), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def nvidia_runtime_class(api_client: client.ApiClient) -> Iterator[str]:
    """The RuntimeClass the agent names (the GPU operator installs it on a real cluster); without
    it admission refuses the agent's pods."""
    node_api = client.NodeV1Api(api_client)
    created = False
    try:
        node_api.read_runtime_class("nvidia")
    except ApiException as error:
        if error.status != 404:
            raise
        body: Any = {"metadata": {"name": "nvidia"}, "handler": "nvidia"}
        node_api.create_runtime_class(body)
        created = True
    yield "nvidia"
    if created:
        node_api.delete_runtime_class("nvidia")


@pytest.fixture(scope="module")
def release(kubeconfig: Path, nvidia_runtime_class: str, core_v1: client.CoreV1Api) -> Iterator[dict[str, Any]]:
    name = "ship"
    namespace = f"vram-ship-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    done = helm(
        kubeconfig,
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        "grafanaDashboards.enabled=true",
        # The session's cluster has the CRDs already (installed without Helm): someone else manages them.
        "--set",
        "crds.install=false",
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    try:
        yield {"name": name, "namespace": namespace, "stdout": done.stdout, "seconds": seconds}
    finally:
        helm(kubeconfig, "uninstall", name, "--namespace", namespace, "--wait", "--timeout", "60s")
        core_v1.delete_namespace(namespace)


def _running(pods: list[Any]) -> bool:
    return bool(pods) and all(pod.status.phase == "Running" for pod in pods)


def test_install_prints_the_notes(release: dict[str, Any]) -> None:
    notes = release["stdout"].split("NOTES:", 1)[1]
    assert f"Deployment/{release['name']}-vram-operator" in notes
    assert "kubectl vram top" in notes
    assert "InferenceServer hostPath volumes are refused" in notes
    assert "may write only the GpuNode of its own node" in notes
    assert release["seconds"] < 60
    print(f"helm install took {release['seconds']:.2f}s")


def test_operator_pod_runs(release: dict[str, Any], core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api) -> None:
    namespace = release["namespace"]
    deployment: Any = apps_v1.read_namespaced_deployment(f"{release['name']}-vram-operator", namespace)
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())

    def pods() -> list[Any]:
        found: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        return found if _running(found) else []

    running = eventually(pods, "the operator pod to be Running", READY_SECONDS)
    assert len(running) == 1
    spec = running[0].spec
    assert spec.service_account_name == f"{release['name']}-vram-operator"
    assert spec.containers[0].security_context.read_only_root_filesystem is True


def test_agent_daemonset_targets_the_gpu_nodes(
    release: dict[str, Any],
    fake_gpu_nodes: list[FakeNode],
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
) -> None:
    namespace = release["namespace"]
    nodes: list[Any] = core_v1.list_node(label_selector=f"{GPU_NODE_LABEL}=true").items
    gpu_nodes = {n.metadata.name for n in nodes}
    assert {node.name for node in fake_gpu_nodes} <= gpu_nodes
    name = f"{release['name']}-vram-operator-agent"

    def scheduled() -> Any:
        daemonset: Any = apps_v1.read_namespaced_daemon_set(name, namespace)
        status = daemonset.status
        return daemonset if status.desired_number_scheduled == status.number_ready == len(gpu_nodes) else None

    daemonset = eventually(scheduled, f"DaemonSet {name} ready on {len(gpu_nodes)} GPU nodes", READY_SECONDS)
    selector = ",".join(f"{k}={v}" for k, v in daemonset.spec.selector.match_labels.items())
    pods: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
    assert _running(pods)
    assert {pod.spec.node_name for pod in pods} == gpu_nodes
    assert all(pod.spec.host_pid and pod.spec.runtime_class_name == "nvidia" for pod in pods)


def test_dashboards_are_labelled_for_the_sidecar(release: dict[str, Any], core_v1: client.CoreV1Api) -> None:
    maps: list[Any] = core_v1.list_namespaced_config_map(
        release["namespace"], label_selector="grafana_dashboard=1"
    ).items
    assert sorted(m.metadata.name.rsplit("-dashboard-", 1)[1] for m in maps) == ["fleet-vram", "inference-servers"]


def _kwok_node(name: str, labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok", **labels},
        },
        "spec": {"taints": taints},
        "status": {"capacity": resources, "allocatable": resources},
    }


def test_agent_lands_on_gpu_nodes_without_the_gpu_operator_label(
    release: dict[str, Any], core_v1: client.CoreV1Api
) -> None:
    """A GKE GPU pool node (gke-accelerator label, nvidia.com/gpu taint) and an NFD-labelled node get
    an agent; a CPU node does not. The agent runs at system-node-critical priority."""
    suffix = uuid.uuid4().hex[:5]
    gke = f"gke-l4-{suffix}"
    nfd = f"nfd-{suffix}"
    cpu = f"cpu-{suffix}"
    gke_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    nodes = [
        _kwok_node(gke, {"cloud.google.com/gke-accelerator": "nvidia-l4"}, [gke_taint]),
        _kwok_node(nfd, {"feature.node.kubernetes.io/pci-10de.present": "true"}, []),
        _kwok_node(cpu, {}, []),
    ]
    for node in nodes:
        core_v1.create_node(node)
    try:
        namespace = release["namespace"]
        selector = f"app.kubernetes.io/component=agent,app.kubernetes.io/instance={release['name']}"

        def agents_on_new_nodes() -> dict[str, Any] | None:
            pods: list[Any] = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
            placed = {pod.spec.node_name: pod for pod in pods if pod.status.phase == "Running"}
            return placed if {gke, nfd} <= placed.keys() else None

        placed = eventually(agents_on_new_nodes, "agents Running on the GKE and NFD nodes", READY_SECONDS)
        assert cpu not in placed
        assert placed[gke].spec.priority_class_name == "system-node-critical"
        assert placed[gke].spec.priority == 2000001000
    finally:
        for node in nodes:
            core_v1.delete_node(node["metadata"]["name"])
