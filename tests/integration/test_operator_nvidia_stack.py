"""Coexisting with the NVIDIA stack on the real control plane: the nodes the operator places on are
labelled off the GPU Operator's device plugin (a DaemonSet shaped like the GPU Operator's leaves them,
and comes back when the operator lets a node go), a server's budget reaches its pod in the form
HAMi-core enforces, and with dra pinning servers of different namespaces never share a GPU."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    GROUP,
    VERSION,
    Operator,
    create,
    delete_cluster_object,
    eventually,
    generic,
    get,
    gpu_node_status,
    manual_assignment,
    publish,
    start_operator,
)

from localcluster import FakeNode
from localcluster.fleet import FAKE_NODE_LABEL, RTX_A400, fake_gpu_uuid, node_manifest
from vram_operator.controller.device_plugin import DEVICE_PLUGIN_LABEL, PREVIOUS_ANNOTATION

pytestmark = pytest.mark.integration

TEST_TAINT = {"key": "vram.dev/device-plugin-test", "effect": "NoSchedule"}


@pytest.fixture
def plain_gpu_node(core_v1: client.CoreV1Api, custom_objects: client.CustomObjectsApi) -> Iterator[str]:
    """A GPU node the GPU Operator labelled for its device plugin, with no GpuNode (no agent) yet;
    tainted so that no other test's pod lands there."""
    name = f"plain-gpu-{uuid.uuid4().hex[:6]}"
    body: Any = node_manifest(FakeNode(name, (RTX_A400,)))  # adopted by KWOK: Ready, nvidia.com/gpu capacity
    del body["metadata"]["labels"][FAKE_NODE_LABEL]  # not one of the session's fleet
    body["metadata"]["labels"][DEVICE_PLUGIN_LABEL] = "true"
    body["spec"] = {"taints": [TEST_TAINT]}
    core_v1.create_node(body)
    try:
        yield name
    finally:
        core_v1.delete_node(name)
        delete_cluster_object(custom_objects, "gpunodes", name)


def device_plugin_daemonset(name: str) -> dict[str, Any]:
    """The GPU Operator's device-plugin DaemonSet as far as placement goes: it runs where the
    GPU Operator's deploy label says "true", tolerating every taint."""
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {DEVICE_PLUGIN_LABEL: "true"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "plugin", "image": "example.invalid/k8s-device-plugin:1"}],
                },
            },
        },
    }


def daemon_nodes(core: client.CoreV1Api, namespace: str, name: str) -> set[str]:
    """The nodes the DaemonSet's pods are for (the DaemonSet controller pins each by node affinity)."""
    nodes = set()
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={name}").items:
        if pod.metadata.deletion_timestamp:
            continue
        terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
        nodes.update(value for term in terms for field in term.match_fields or [] for value in field.values)
    return nodes


def node_labels(core: client.CoreV1Api, name: str) -> tuple[dict[str, str], dict[str, str]]:
    node: Any = core.read_node(name)
    return node.metadata.labels or {}, node.metadata.annotations or {}


@pytest.mark.usefixtures("operator")
def test_managed_nodes_are_kept_off_the_device_plugin(
    namespace: str,
    gpu_fleet: list[FakeNode],
    plain_gpu_node: str,
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    for node in gpu_fleet:  # every node with a GpuNode
        eventually(
            lambda node=node: node_labels(core_v1, node.name)[0].get(DEVICE_PLUGIN_LABEL) == "false",
            f"{node.name} labelled off the device plugin",
        )
    client.AppsV1Api(core_v1.api_client).create_namespaced_daemon_set(
        namespace, device_plugin_daemonset("device-plugin")
    )
    running_on = eventually(
        lambda: daemon_nodes(core_v1, namespace, "device-plugin") or None, "the device plugin's pods"
    )
    # the GPU Operator's own node only: none on a node the operator places on
    assert plain_gpu_node in running_on
    assert not running_on & {node.name for node in gpu_fleet}

    # the agent starts on the plain node (its GpuNode appears): the operator takes it off the plugin
    publish(custom_objects, FakeNode(plain_gpu_node, ()), gpu_node_status(FakeNode(plain_gpu_node, ())))
    eventually(
        lambda: node_labels(core_v1, plain_gpu_node)[0].get(DEVICE_PLUGIN_LABEL) == "false",
        "the newly managed node labelled off the device plugin",
    )
    eventually(
        lambda: plain_gpu_node not in daemon_nodes(core_v1, namespace, "device-plugin"),
        "the device plugin to leave the newly managed node",
    )
    labels, annotations = node_labels(core_v1, plain_gpu_node)
    assert (labels[DEVICE_PLUGIN_LABEL], annotations[PREVIOUS_ANNOTATION]) == ("false", "true")

    # its GpuNode deleted (agent uninstalled): the label is put back, and the device plugin returns
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", plain_gpu_node)
    eventually(
        lambda: plain_gpu_node in daemon_nodes(core_v1, namespace, "device-plugin"),
        "the device plugin back on the released node",
    )
    labels, annotations = node_labels(core_v1, plain_gpu_node)
    assert labels[DEVICE_PLUGIN_LABEL] == "true" and PREVIOUS_ANNOTATION not in annotations


def test_a_generic_servers_budget_is_a_hami_core_limit(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, apps_v1: client.AppsV1Api
) -> None:
    create(custom_objects, namespace, generic("detector", "1500Mi"))

    def env() -> dict[str, str] | None:
        try:
            found: Any = apps_v1.read_namespaced_deployment("detector", namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return None
        return {e.name: e.value for e in found.spec.template.spec.containers[0].env or []}

    rendered = eventually(env, "the detector's Deployment")
    assert rendered["VRAM_BUDGET_MIB"] == "1500"
    assert rendered["CUDA_DEVICE_MEMORY_LIMIT"] == rendered["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1500m"


@pytest.fixture
def second_namespace(core_v1: client.CoreV1Api, namespace: str) -> Iterator[str]:
    name = f"{namespace}-b"
    core_v1.create_namespace(body={"metadata": {"name": name, "labels": {"vram.dev/test": "true"}}})
    try:
        yield name
    finally:
        core_v1.delete_namespace(name)


@pytest.fixture
def dra_operator(
    kubeconfig: Path, namespace: str, second_namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode]
) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path, "--pinning-mode", "dra", "--namespace", second_namespace)


def placed_gpu(custom: client.CustomObjectsApi, namespace: str, name: str) -> str:
    def uuid_of() -> str | None:
        placement = (get(custom, namespace, name).get("status") or {}).get("placement")
        return placement["gpus"][0]["uuid"] if placement and placement.get("gpus") else None

    return eventually(uuid_of, f"{namespace}/{name} placed")


def pinned_to_gpu_0(name: str, servers: list[str], fleet: str) -> dict[str, Any]:
    """A Manual GpuAssignment, applied, pinning every one of `servers` to the workstation's GPU 0."""
    return manual_assignment(name, fleet, "Apply", [{"server": s, "node": "workstation", "gpus": [0]} for s in servers])


@pytest.mark.usefixtures("dra_operator")
def test_dra_pinning_keeps_one_namespace_per_gpu(
    namespace: str, second_namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    """Servers of two namespaces pinned to one GPU (envvar pinning places them all there): in dra mode the
    plan gives the GPU to one namespace, refuses the other's servers saying why, and they stay off it."""
    servers = [f"{namespace}/first", f"{second_namespace}/other", f"{namespace}/same"]
    name = f"pin-{namespace}"
    assignment = pinned_to_gpu_0(name, servers, namespace)
    labels = {"fleet": namespace}
    create(custom_objects, namespace, generic("first", "1Gi", labels=labels))
    create(custom_objects, second_namespace, generic("other", "1Gi", labels=labels))
    create(custom_objects, namespace, generic("same", "1Gi", labels=labels))
    # The Apply plans the servers that exist when it is made (one made later is not in its plan).
    for key in servers:
        placed_gpu(custom_objects, *key.split("/"))
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "gpuassignments", assignment)
    try:
        gpu_0 = fake_gpu_uuid("workstation", 0)

        def decided() -> list[dict[str, Any]] | None:
            found: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpuassignments", name)
            plan = (found.get("status") or {}).get("plan", [])
            return plan if {e["server"] for e in plan} == set(servers) else None

        plan = eventually(decided, "the plan of all three servers")
        kept = [e["server"] for e in plan if e.get("gpus") == [gpu_0]]
        refused = [e for e in plan if "one namespace per GPU" in e.get("reason", "")]
        holder = {key.split("/")[0] for key in kept}
        assert len(holder) == 1, plan  # the GPU goes to one namespace
        assert refused and all(e["server"].split("/")[0] not in holder for e in refused), plan
        assert sorted(kept + [e["server"] for e in refused]) == sorted(servers)  # each server either way
        (winner,) = holder
        for entry in refused:
            assert not entry.get("node") and f"holds {winner}" in entry["reason"]
        # The kept servers arrive on the GPU; the refused ones stay off it (placed by the strategy elsewhere).
        for key in kept:
            eventually(lambda key=key: placed_gpu(custom_objects, *key.split("/")) == gpu_0, f"{key} on GPU 0")
        for entry in refused:
            assert placed_gpu(custom_objects, *entry["server"].split("/")) != gpu_0
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpuassignments", name)
