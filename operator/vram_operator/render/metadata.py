"""Names, labels and owner references shared by every object rendered for a server."""

from __future__ import annotations

from typing import Any

from vram_operator.api import API_VERSION, InferenceServer
from vram_operator.render.settings import RenderSettings

MANAGED_BY = "vram-operator"
SERVER_LABEL = "vram.dev/server"
APP_NAME = "inference-server"


def namespace_of(server: InferenceServer) -> str:
    return server.metadata.namespace or "default"


def selector_labels(server: InferenceServer) -> dict[str, str]:
    """The labels a Deployment selects its pods by; they must never change for a server."""
    return {SERVER_LABEL: server.metadata.name}


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
