"""Children kept as rendered: a server's Deployment or Service deleted or changed by hand is applied
again, with a Warning Event (DriftReverted) saying what was reverted.

What a child must be is what the server's last reconcile applied (Runtime.applied): the render is
the truth, including a server stopped for a rollout (its Deployments at 0 replicas) and the
replicas it has. The live children arrive by watch (the kopf indexes below); a child that looks
drifted is read again before anything is written (the watch may lag behind the apply that just
changed it), then applied with the operator's field manager, forced, like every child. The check
runs in the operator's check loop: drift is reverted within one check interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller.child_drift import (
    comparable,
    differences,
    drift_message,
    drifted_fields,
    env_removal_patch,
)
from vram_operator.controller.kube import ChildRefusedError
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.runtime import Runtime, plain, values
from vram_operator.controller.server_reconciler import PostEvent
from vram_operator.render.metadata import SERVER_LABEL

log = logging.getLogger(__name__)
DRIFT_REVERTED = "DriftReverted"
# The kinds of child watched, and the index that holds their live versions.
WATCHED = {"Deployment": "server_deployments", "Service": "server_services"}


OURS = {SERVER_LABEL: kopf.PRESENT}


@kopf.index("apps", "v1", "deployments", labels=OURS, id="server_deployments", registry=REGISTRY)
async def server_deployments(
    *, namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[str, dict[str, Any]]:
    return {f"{namespace}/{name}": comparable(plain(body))}


@kopf.index("", "v1", "services", labels=OURS, id="server_services", registry=REGISTRY)
async def server_services(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {f"{namespace}/{name}": comparable(plain(body))}


def watched_version(obj: Mapping[str, Any], indexes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live version of a child as the watch last saw it (None: not seen, or deleted)."""
    meta = obj["metadata"]
    store = indexes[WATCHED[obj["kind"]]].get(f"{meta['namespace']}/{meta['name']}")
    return next(iter(store), None) if store is not None else None


def being_deleted(obj: Mapping[str, Any] | None) -> bool:
    return obj is not None and bool((obj.get("metadata") or {}).get("deletionTimestamp"))


class ChildKeeper:
    """Restores the watched children of every server to what its last reconcile applied."""

    def __init__(self, rt: Runtime, post_event: PostEvent) -> None:
        self.rt = rt
        self.post_event = post_event
        # Per child (kind, namespace/name): the live resourceVersion last found as the applied object
        # (held, so `is` tells it is the same): a child unchanged since is not compared again.
        self.in_sync: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        # Per child: a drift a restore did not remove (the API server keeps a value of its own), with
        # the applied object: not tried again until the drift or the render changes (no Event storm).
        self.stuck: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def drifted(self, server: InferenceServer, indexes: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The server's applied children whose watched version is missing or differs."""
        found = []
        for obj in self.rt.applied.get(server.key, {}).values():
            if obj["kind"] not in WATCHED:
                continue
            live = watched_version(obj, indexes)
            version = str((live or {}).get("metadata", {}).get("resourceVersion"))
            child = (obj["kind"], f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
            seen = self.in_sync.get(child)
            if live is not None and seen is not None and seen[0] == version and seen[1] is obj:
                continue
            if being_deleted(live):
                continue  # deleted in the foreground: recreated once it is gone
            message = drift_message(obj, live)
            if message is None:
                self.in_sync[child] = (version, obj)
            elif self.stuck.get(child, (None, None))[0] != message or self.stuck[child][1] is not obj:
                found.append(obj)
        return found

    async def check(self, indexes: Mapping[str, Any]) -> None:
        """Every server with children applied: revert what drifted (one server's trouble is logged)."""
        applied = {id(obj) for children in self.rt.applied.values() for obj in children.values()}
        self.in_sync = {child: seen for child, seen in self.in_sync.items() if id(seen[1]) in applied}
        self.stuck = {child: seen for child, seen in self.stuck.items() if id(seen[1]) in applied}
        for server in [s for s in values(indexes["inference_servers"]) if s is not None]:
            if server.key not in self.rt.applied or (server.metadata.model_extra or {}).get("deletionTimestamp"):
                continue  # garbage collection removes the children of a server being deleted
            if self.drifted(server, indexes):
                try:
                    await self.restore(server, indexes)
                except Exception:
                    log.exception("restoring the children of %s failed", server.key)

    async def restore(self, server: InferenceServer, indexes: Mapping[str, Any]) -> None:
        """Under the server's lock (no reconcile applying meanwhile): read each drifted child again
        and apply the ones still drifted, with an Event each."""
        async with self.rt.server_locks[server.key]:
            for obj in self.drifted(server, indexes):
                found = await asyncio.to_thread(self.rt.kube.read_child, obj)
                live = comparable(found) if found is not None else None
                message = None if being_deleted(live) else drift_message(obj, live)
                if message is None:
                    continue  # the watch was behind: the child is as applied
                try:
                    await asyncio.to_thread(self.rt.kube.apply, obj)
                except ChildRefusedError as error:  # reported as Degraded ChildRejected by the reconcile
                    log.warning("%s: %s", server.key, error)
                    continue
                removal = env_removal_patch(differences(obj, live)) if live is not None else None
                if removal is not None:
                    await asyncio.to_thread(self.rt.kube.patch_child, obj, removal)
                left = await self.left_after_restore(server, obj)
                reverted = message if live is None else drift_message(obj, live, besides=left)
                if reverted is not None:
                    self.post_event(server, "Warning", DRIFT_REVERTED, reverted)
                    self.rt.metrics.drift_reverted.labels(obj["kind"]).inc()

    async def left_after_restore(self, server: InferenceServer, obj: dict[str, Any]) -> list[str]:
        """Read a restored child again: what a restore left as it was (the API server keeps a value of
        its own) is remembered and logged, so that it is not applied and announced every check."""
        found = await asyncio.to_thread(self.rt.kube.read_child, obj)
        after = comparable(found) if found is not None else None
        left = drift_message(obj, after)
        if after is None or left is None:
            return []
        child = (obj["kind"], f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
        self.stuck[child] = (left, obj)
        log.warning("%s: %s stays after a restore; left alone until it or the render changes", server.key, left)
        return drifted_fields(obj, after)
