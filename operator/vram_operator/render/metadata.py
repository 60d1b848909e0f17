"""Names, labels and owner references shared by every object rendered for a server."""

from __future__ import annotations

from typing import Any

from vram_operator.api import API_VERSION, InferenceServer
from vram_operator.render.settings import RenderSettings

MANAGED_BY = "vram-operator"
SERVER_LABEL = "vram.dev/server"
# On the Deployment and pods of replica i >= 1 (replica 0 keeps the objects a one-replica server has).
REPLICA_LABEL = "vram.dev/replica"
APP_NAME = "inference-server"


def namespace_of(server: InferenceServer) -> str:
    return server.metadata.namespace or "default"


def selector_labels(server: InferenceServer) -> dict[str, str]:
    """The labels the Service (every replica) and replica 0's Deployment select pods by; they must never
    change for a server (a Deployment's selector is immutable)."""
    return {SERVER_LABEL: server.metadata.name}


def replica_labels(replica: int) -> dict[str, str]:
    """What tells replica i's pods apart (none for replica 0, whose objects predate replicas)."""
    return {REPLICA_LABEL: str(replica)} if replica else {}


def deployment_name(server: InferenceServer, replica: int) -> str:
    """Replica 0's Deployment is named after the server; replica i's `<server>-replica-<i>`."""
    return server.metadata.name if replica == 0 else f"{server.metadata.name}-replica-{replica}"


def server_labels(server: InferenceServer, settings: RenderSettings) -> dict[str, str]:
    """Labels on every object rendered for the server (and on its pods)."""
    ours = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": server.metadata.name,
        "app.kubernetes.io/component": server.spec.engine,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(server),
    }
    return {**settings.extra_labels, **ours}


def owner_references(server: InferenceServer) -> list[dict[str, Any]]:
    """The server as controller of its children, so deleting it deletes them.

    Without a uid (a manifest read from a file, never stored) there is nothing to point at.
    """
    if not server.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": server.kind_name,
            "name": server.metadata.name,
            "uid": server.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_metadata(server: InferenceServer, settings: RenderSettings) -> dict[str, Any]:
    """metadata of a child object named after the server, in its namespace, owned by it."""
    meta: dict[str, Any] = {
        "name": server.metadata.name,
        "namespace": namespace_of(server),
        "labels": server_labels(server, settings),
    }
    owners = owner_references(server)
    if owners:
        meta["ownerReferences"] = owners
    return meta
