"""The operator's calls per decision (Kube.apply, Kube.patch_server_status, Kube.config_map_data) and
per node (Kube.patch_node_metadata) on the real API server: forced server-side apply with the operator's
field manager, errors as the reconcilers expect them (ChildRefusedError for a refused object,
ApiException otherwise), and no client model built from any reply (about a third of each call's CPU in
the operator)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import resource

from vram_operator.api.base import API_VERSION, GROUP, VERSION
from vram_operator.controller.kube import FIELD_MANAGER, ChildRefusedError, Kube

pytestmark = pytest.mark.integration

LABELS = {"vram.dev/server": "port"}
NODE_LABEL = "example.org/kube-port"


def deployment(namespace: str, selector: dict[str, str], template: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "port", "namespace": namespace, "labels": LABELS},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": template}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        },
    }


def service(namespace: str, tier: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "port", "namespace": namespace, "labels": {**LABELS, "tier": tier}},
        "spec": {"selector": LABELS, "ports": [{"name": "http", "port": 8000}]},
    }


def network_policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "port", "namespace": namespace, "labels": LABELS},
        "spec": {"podSelector": {"matchLabels": LABELS}, "policyTypes": ["Ingress"]},
    }


@pytest.fixture
def models_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every client model built from a reply, by kind of model (the dynamic client's wrapper, the
    generated API's deserializer)."""
    built: list[str] = []
    wrap, deserialize = resource.ResourceInstance.__init__, client.ApiClient.deserialize

    def counted_wrap(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append("ResourceInstance")
        wrap(self, *args, **kwargs)

    def counted_deserialize(self: Any, *args: Any, **kwargs: Any) -> Any:
        built.append("deserialize")
        return deserialize(self, *args, **kwargs)

    monkeypatch.setattr(resource.ResourceInstance, "__init__", counted_wrap)
    monkeypatch.setattr(client.ApiClient, "deserialize", counted_deserialize)
    yield built


def test_a_decisions_calls_are_forced_applies_a_status_patch_and_a_read_that_build_nothing_from_the_reply(
    api_client: client.ApiClient,
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    models_built: list[str],
) -> None:
    kube = Kube(api_client)
    core_v1.create_namespaced_service(namespace, service(namespace, "theirs"), field_manager="someone-else")  # type: ignore[arg-type]
    custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "inferenceservers",
        {
            "apiVersion": API_VERSION,
            "kind": "InferenceServer",
            "metadata": {"name": "port"},
            "spec": {"engine": "generic", "image": "x", "vramBudget": "1Gi"},
        },
    )
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "runs"}, "data": {"k": "v"}})  # type: ignore[arg-type]
    node = core_v1.list_node().items[0].metadata.name
    models_built.clear()

    assert kube.config_map_data(namespace, "runs") == {"k": "v"}  # read per batch of decisions
    assert kube.config_map_data(namespace, "no-such-config-map") is None
    for obj in (deployment(namespace, LABELS, LABELS), service(namespace, "ours"), network_policy(namespace)):
        kube.apply(obj)
    kube.patch_server_status(namespace, "port", {"status": {"phase": "Pending", "observedGeneration": 1}})
    kube.patch_node_metadata(node, {NODE_LABEL: "on"}, {NODE_LABEL: "on"})  # once per node with a GpuNode

    assert models_built == []
    labelled = core_v1.read_node(node).metadata
    assert labelled.labels[NODE_LABEL] == "on" and labelled.annotations[NODE_LABEL] == "on"
    kube.patch_node_metadata(node, {NODE_LABEL: None}, {NODE_LABEL: None})
    kube.patch_node_metadata("no-such-node", {NODE_LABEL: "on"}, {})  # a Node gone meanwhile is no error
    unlabelled = core_v1.read_node(node).metadata
    assert NODE_LABEL not in (unlabelled.labels or {}) and NODE_LABEL not in (unlabelled.annotations or {})
    live = core_v1.read_namespaced_service("port", namespace)
    assert live.metadata.labels["tier"] == "ours"  # forced: the field another manager set is taken over
    managers = {(entry.manager, entry.operation) for entry in live.metadata.managed_fields}
    assert (FIELD_MANAGER, "Apply") in managers
    server = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "port")
    assert server["status"] == {"phase": "Pending", "observedGeneration": 1}  # type: ignore[index]


def test_a_refused_child_is_a_child_refused_error_and_other_errors_stay_api_errors(
    api_client: client.ApiClient, namespace: str
) -> None:
    kube = Kube(api_client)
    with pytest.raises(ChildRefusedError) as refused:
        kube.apply(deployment(namespace, LABELS, {"other": "labels"}))  # the selector does not match: 422
    assert refused.value.status == 422 and refused.value.kind == "Deployment" and refused.value.name == "port"
    assert "selector" in refused.value.message  # the API server's own message, not the HTTP reason
    with pytest.raises(ApiException) as missing:
        kube.apply(service("no-such-namespace", "ours"))
    assert missing.value.status == 404  # not refused: the namespace may come (kopf retries)
    with pytest.raises(ApiException) as gone:
        kube.patch_server_status(namespace, "no-such-server", {"status": {"phase": "Pending"}})
    assert gone.value.status == 404
