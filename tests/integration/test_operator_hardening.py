"""Hardened server pods on the real control plane: the operator's Deployment carries the safe
defaults and a per-server override, its host-memory request is sized from the model, and a
NetworkPolicy admits in-cluster clients to the engine port (none with --no-server-network-policy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import Operator, create, eventually, generic, get, start_operator, vllm_server

from localcluster import FakeNode

pytestmark = pytest.mark.integration


def deployment(apps_v1: client.AppsV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = apps_v1.api_client.sanitize_for_serialization(
            apps_v1.read_namespaced_deployment(name, namespace)
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return None
    return found


def network_policy(api: client.NetworkingV1Api, namespace: str, name: str) -> Any:
    try:
        return api.read_namespaced_network_policy(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        return None


@pytest.fixture
def no_policy_operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode]
) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path, "--no-server-network-policy")


def test_server_pods_are_hardened_and_overridable(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    api_client: client.ApiClient,
) -> None:
    create(custom_objects, namespace, vllm_server("chat", podSecurityContext={"runAsUser": 1000}))
    stored = eventually(lambda: deployment(apps_v1, namespace, "chat"), "the chat Deployment")
    pod = stored["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 1000}
    engine = pod["containers"][0]
    assert engine["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    weights = get(custom_objects, namespace, "chat")["status"]["estimate"]["weightsMiB"]
    assert weights > 0
    assert engine["resources"]["requests"] == {"cpu": "1", "memory": f"{int(-(-weights // 1)) + 2048}Mi"}

    policy = eventually(lambda: network_policy(client.NetworkingV1Api(api_client), namespace, "chat"), "the policy")
    assert policy.spec.policy_types == ["Ingress"]
    assert [port.port for port in policy.spec.ingress[0].ports] == [engine["ports"][0]["containerPort"]]
    assert policy.spec.pod_selector.match_labels.items() <= stored["spec"]["template"]["metadata"]["labels"].items()
    assert policy.metadata.owner_references[0].name == "chat"

    # the host-access guard still holds for the override fields (no admission policy in this module)
    create(custom_objects, namespace, vllm_server("root", securityContext={"privileged": True}))

    def refused() -> dict[str, Any] | None:
        status = get(custom_objects, namespace, "root").get("status") or {}
        estimated = next((c for c in status.get("conditions", []) if c["type"] == "Estimated"), None)
        return estimated if estimated and estimated["reason"] == "HostAccessRefused" else None

    estimated = eventually(refused, "root refused")
    assert estimated["message"].startswith("spec.securityContext.privileged: host access refused")
    assert deployment(apps_v1, namespace, "root") is None


def test_no_server_network_policy_renders_none(
    no_policy_operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    api_client: client.ApiClient,
) -> None:
    create(custom_objects, namespace, generic("detector", "1Gi"))
    eventually(lambda: deployment(apps_v1, namespace, "detector"), "the detector Deployment")
    assert network_policy(client.NetworkingV1Api(api_client), namespace, "detector") is None
