"""What the harness does through the API once the control plane answers: CRDs, nodes, waits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from localcluster.waiting import eventually

HTTP_CONFLICT = 409
HTTP_NOT_FOUND = 404


class ResourceError(RuntimeError):
    """An object the harness installs was rejected or never became ready."""


def admin_client(kubeconfig: Path) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def _documents(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def apply_manifest(api: client.ApiClient, manifest: dict[str, Any], source: str) -> None:
    """Create the object, or replace it when it exists. Sent as is through the dynamic client:
    the API server, not the Python client's models, decides whether it is valid."""
    resource: Any = dynamic.DynamicClient(api).resources.get(  # type: ignore[no-untyped-call]
        api_version=manifest["apiVersion"], kind=manifest["kind"]
    )
    metadata = manifest["metadata"]
    namespace = metadata.get("namespace") if resource.namespaced else None
    try:
        resource.create(body=manifest, namespace=namespace)
    except ApiException as error:
        if error.status != HTTP_CONFLICT:
            raise ResourceError(f"{source}: {manifest['kind']} {metadata['name']} rejected: {error.body}") from error
        current = resource.get(name=metadata["name"], namespace=namespace)
        replacement = {**manifest, "metadata": {**metadata, "resourceVersion": current.metadata.resourceVersion}}
        resource.replace(body=replacement, namespace=namespace)


def install_crds(api: client.ApiClient, directory: Path, timeout_seconds: float = 60.0) -> list[str]:
    """Create (or replace) every object in directory/*.yaml; wait until each CRD is Established.

    Returns the names of the CRDs installed. A missing directory installs nothing.
    """
    if not directory.is_dir():
        return []
    names: list[str] = []
    for path, document in _documents(directory):
        apply_manifest(api, document, path.name)
        if document.get("kind") == "CustomResourceDefinition":
            names.append(document["metadata"]["name"])
    for name in names:
        wait_crd_established(api, name, timeout_seconds)
    return names


def crd_established(api: client.ApiClient, name: str) -> bool:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def wait_crd_established(api: client.ApiClient, name: str, timeout_seconds: float) -> None:
    eventually(lambda: crd_established(api, name), f"CRD {name} to be Established", timeout_seconds)


def create_nodes(api: client.ApiClient, manifests: Sequence[dict[str, Any]]) -> None:
    for manifest in manifests:
        apply_manifest(api, manifest, "fake GPU fleet")


def node_ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def wait_nodes_ready(api: client.ApiClient, names: Sequence[str], timeout_seconds: float) -> None:
    core = client.CoreV1Api(api)

    def all_ready() -> bool:
        nodes: list[Any] = core.list_node().items
        ready = {n.metadata.name for n in nodes if node_ready(n)}
        return set(names) <= ready

    eventually(all_ready, f"nodes {list(names)} to be Ready (is KWOK managing them?)", timeout_seconds)


def wait_service_account(api: client.ApiClient, namespace: str, timeout_seconds: float) -> None:
    """Wait for the `default` ServiceAccount, which the controller-manager creates; pods are
    refused by admission until it exists."""
    core = client.CoreV1Api(api)

    def exists() -> bool:
        try:
            core.read_namespaced_service_account("default", namespace)
        except ApiException as error:
            if error.status == HTTP_NOT_FOUND:
                return False
            raise
        return True

    eventually(exists, f"ServiceAccount {namespace}/default (made by the controller-manager)", timeout_seconds)
