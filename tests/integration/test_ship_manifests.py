"""manifests/ on the real API server: every object passes a server-side dry run, then applies; the
ServiceAccounts can do what the operator and agent need and nothing they must not (SubjectAccessReview)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from localcluster.waiting import eventually
from vram_operator.controller.measured_runs import MEASURED_RUNS_CONFIG_MAP

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NAMESPACE = "vram-system"
FIELD_MANAGER = "ship-test"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:vram-operator"
AGENT = f"system:serviceaccount:{NAMESPACE}:vram-operator-agent"

# (group, resource, subresource, verb, namespace or None for cluster-wide)
OPERATOR_MAY = [("vram.dev", "inferenceservers", "", verb, None) for verb in ("get", "list", "watch", "patch")] + [
    ("vram.dev", "inferenceservers", "status", "patch", "ml"),
    ("vram.dev", "gpuassignments", "", "watch", None),
    ("vram.dev", "gpuassignments", "status", "patch", None),
    ("vram.dev", "gpunodes", "", "list", None),
    ("vram.dev", "gpunodes", "", "watch", None),
    ("vram.dev", "gpunodes", "status", "patch", None),  # Ready Unknown HeartbeatStale on a silent agent's node
    *[("apps", "deployments", "", verb, "ml") for verb in ("create", "get", "list", "watch", "patch", "delete")],
    *[("", "services", "", verb, "ml") for verb in ("create", "patch", "delete")],
    ("", "services", "", "list", None),  # watched: a Service deleted or changed by hand is restored
    ("", "services", "", "watch", None),
    *[("resource.k8s.io", "resourceclaims", "", verb, "ml") for verb in ("create", "patch", "delete")],
    ("", "events", "", "create", "ml"),
    ("events.k8s.io", "events", "", "patch", "ml"),
    ("", "pods", "", "list", None),
    ("", "pods", "", "watch", None),
    ("", "pods", "log", "get", "ml"),
    ("", "configmaps", "", "get", "ml"),
    ("", "configmaps", "", "list", None),  # watched: a ConfigMap a server names re-reconciles it
    ("", "configmaps", "", "watch", None),
    ("", "namespaces", "", "list", None),
    ("", "nodes", "", "list", None),  # cordoned Nodes take no new placements
    ("", "nodes", "", "watch", None),
    ("", "nodes", "", "patch", None),  # the device-plugin label and its annotation only: test_ship_trust.py
    ("", "configmaps", "", "create", NAMESPACE),  # the ConfigMap of measured runs, in its own namespace
]
OPERATOR_MUST_NOT = [
    ("", "secrets", "", "get", "ml"),
    ("", "secrets", "", "list", None),
    ("", "pods", "", "delete", "ml"),
    ("", "pods", "", "create", "ml"),
    ("", "pods", "exec", "create", "ml"),
    ("", "configmaps", "", "update", "ml"),
    ("", "configmaps", "", "create", "ml"),
    ("", "configmaps", "", "update", NAMESPACE),  # only the one named vram-operator-measured-runs
    ("vram.dev", "gpunodes", "", "patch", None),
    ("vram.dev", "inferenceservers", "", "delete", "ml"),
    ("apps", "daemonsets", "", "create", "ml"),
    ("rbac.authorization.k8s.io", "clusterroles", "", "create", None),
    ("", "nodes", "status", "patch", None),  # of Nodes only labels, narrowed by a policy (test_ship_trust.py)
    ("", "nodes", "", "update", None),
    ("", "nodes", "", "create", None),
    ("", "serviceaccounts", "token", "create", "ml"),
]
AGENT_MAY = [
    ("vram.dev", "gpunodes", "", "create", None),
    ("vram.dev", "gpunodes", "status", "patch", None),
    ("", "pods", "", "list", None),
]
AGENT_MUST_NOT = [
    ("vram.dev", "gpunodes", "", "delete", None),
    ("vram.dev", "gpunodes", "", "patch", None),
    ("vram.dev", "inferenceservers", "", "list", None),
    ("", "secrets", "", "get", "ml"),
    ("", "pods", "log", "get", "ml"),
    ("", "pods", "", "delete", "ml"),
    ("apps", "deployments", "", "create", "ml"),
]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_objects() -> list[dict[str, Any]]:
    objects = [doc for path in sorted((MANIFESTS / "crds").glob("*.yaml")) for doc in documents(path)]
    objects += documents(MANIFESTS / "vram-operator.yaml")
    # the dashboards are plain ConfigMaps; ServiceMonitor/PrometheusRule need the Prometheus operator's CRDs
    objects += documents(MANIFESTS / "monitoring" / "grafana-dashboards.yaml")
    return objects


def apply(dyn: Any, obj: dict[str, Any], *, dry_run: bool) -> Any:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    return dyn.server_side_apply(
        resource,
        body=obj,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        dry_run="All" if dry_run else None,
    )


def allowed(
    api: client.ApiClient, user: str, check: tuple[str, str, str, str, str | None], name: str | None = None
) -> bool:
    group, resource, subresource, verb, namespace = check
    review: Any = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
            "resourceAttributes": {
                "group": group,
                "resource": resource,
                "subresource": subresource,
                "verb": verb,
                **({"namespace": namespace} if namespace else {}),
                **({"name": name} if name else {}),
            },
        },
    }
    answer: Any = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


@pytest.fixture(scope="module")
def applied(api_client: client.ApiClient) -> Iterator[list[dict[str, Any]]]:
    """Dry run of everything (the namespace first, for real, so namespaced objects can be checked),
    then the real apply; removed afterwards (the CRDs stay: the harness owns them)."""
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    objects = all_objects()
    namespace = next(obj for obj in objects if obj["kind"] == "Namespace")
    try:
        for obj in objects:
            if obj["kind"] == "Namespace" or "namespace" not in obj["metadata"]:
                apply(dyn, obj, dry_run=True)
        apply(dyn, namespace, dry_run=False)
        for obj in objects:
            apply(dyn, obj, dry_run=True)
        for obj in objects:
            apply(dyn, obj, dry_run=False)
        yield objects
    finally:
        for obj in reversed(objects):  # cluster-scoped: RBAC and admission policies
            if "namespace" not in obj["metadata"] and obj["kind"] not in {"Namespace", "CustomResourceDefinition"}:
                resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                try:
                    dyn.delete(resource, name=obj["metadata"]["name"])
                except ApiException as error:
                    if error.status != 404:
                        raise
        client.CoreV1Api(api_client).delete_namespace(NAMESPACE)


def test_every_object_is_accepted_and_exists(applied: list[dict[str, Any]], api_client: client.ApiClient) -> None:
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    for obj in applied:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        found = dyn.get(resource, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))
        assert found.metadata.name == obj["metadata"]["name"]
    deployment: Any = client.AppsV1Api(api_client).read_namespaced_deployment("vram-operator", NAMESPACE)
    assert deployment.spec.strategy.type == "Recreate"


def test_dry_run_rejects_what_the_server_would_reject(api_client: client.ApiClient) -> None:
    """The dry run is a real check: a Deployment with a broken field is refused without being created."""
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    deployment = next(obj for obj in documents(MANIFESTS / "vram-operator.yaml") if obj["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["metadata"]["name"] = "ship-broken"
    broken["metadata"]["namespace"] = "default"
    broken["spec"]["strategy"]["type"] = "Sideways"
    with pytest.raises(ApiException) as refused:
        apply(dyn, broken, dry_run=True)
    assert refused.value.status == 422


@pytest.mark.parametrize("check", OPERATOR_MAY, ids=lambda c: "/".join(filter(None, c[:4])))
def test_operator_may(applied: list[dict[str, Any]], api_client: client.ApiClient, check: Any) -> None:
    # the authorizer reads RBAC from a watch cache: a fresh binding lands within moments
    assert eventually(lambda: allowed(api_client, OPERATOR, check), f"{OPERATOR} may {check}", 30.0)


@pytest.mark.parametrize("check", OPERATOR_MUST_NOT, ids=lambda c: "/".join(filter(None, c[:4])))
def test_operator_must_not(applied: list[dict[str, Any]], api_client: client.ApiClient, check: Any) -> None:
    assert eventually(lambda: allowed(api_client, OPERATOR, OPERATOR_MAY[0]), "the operator's binding", 30.0)
    assert not allowed(api_client, OPERATOR, check)


def test_operator_replaces_only_its_measured_runs(applied: list[dict[str, Any]], api_client: client.ApiClient) -> None:
    update = ("", "configmaps", "", "update", NAMESPACE)
    assert eventually(
        lambda: allowed(api_client, OPERATOR, update, name=MEASURED_RUNS_CONFIG_MAP), "update of measured runs", 30.0
    )
    assert not allowed(api_client, OPERATOR, update, name="kube-root-ca.crt")
    assert not allowed(api_client, OPERATOR, ("", "configmaps", "", "update", "ml"), name=MEASURED_RUNS_CONFIG_MAP)


@pytest.mark.parametrize("check", AGENT_MAY, ids=lambda c: "/".join(filter(None, c[:4])))
def test_agent_may(applied: list[dict[str, Any]], api_client: client.ApiClient, check: Any) -> None:
    assert eventually(lambda: allowed(api_client, AGENT, check), f"{AGENT} may {check}", 30.0)


@pytest.mark.parametrize("check", AGENT_MUST_NOT, ids=lambda c: "/".join(filter(None, c[:4])))
def test_agent_must_not(applied: list[dict[str, Any]], api_client: client.ApiClient, check: Any) -> None:
    assert eventually(lambda: allowed(api_client, AGENT, AGENT_MAY[0]), "the agent's binding", 30.0)
    assert not allowed(api_client, AGENT, check)
