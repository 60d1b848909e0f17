"""InferenceServer handlers (module-level, thin): kopf indexes and events in, ServerReconciler out.

The reconcile/check/observe/heal logic lives in server_reconciler.ServerReconciler, over the Kube
port; the handlers only parse the object, take the server's lock and decide whether an outcome is
a permanent failure (a spec that can never work) or a status that waits for its inputs to change.
Shared state travels in kopf's memo: `memo.rt` (the Runtime) and `memo.servers` (the reconciler).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus
from vram_operator.controller.diffbase import deleted
from vram_operator.controller.gpu_health import capacity_of
from vram_operator.controller.gpu_view import process_owners
from vram_operator.controller.pods import PodFacts, pod_facts
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.runtime import Runtime, first_error, now, parse_node, parse_server, rfc3339, values
from vram_operator.controller.server_reconciler import ServerReconciler, nodes_of, referenced_config_map
from vram_operator.controller.server_status import Outcome, decided_status, status_patch
from vram_operator.render.metadata import SERVER_LABEL

SERVERS = (GROUP, VERSION, "inferenceservers")


def body_of(server: InferenceServer) -> kopf.Body:
    """Enough of the object for kopf to post an Event about it."""
    meta = {"name": server.metadata.name, "namespace": server.metadata.namespace, "uid": server.metadata.uid}
    return kopf.Body(cast(kopf.RawBody, {"apiVersion": server.api_version, "kind": server.kind, "metadata": meta}))


def _rt(memo: kopf.Memo) -> Runtime:
    return cast(Runtime, memo["rt"])


def _servers(memo: kopf.Memo) -> ServerReconciler:
    return cast(ServerReconciler, memo["servers"])


def post_event(server: InferenceServer, type_: str, reason: str, message: str) -> None:
    kopf.event(body_of(server), type=type_, reason=reason, message=message)


@kopf.index(*SERVERS, id="inference_servers", registry=REGISTRY)
async def inference_servers(
    *, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[str, InferenceServer]:
    try:
        server = parse_server(body)
    except ValidationError:
        return {}  # a bad spec holds no reservation; its reconcile reports it
    _rt(memo).share_written(server)
    return {f"{namespace}/{name}": server}


@kopf.index(GROUP, VERSION, "gpunodes", id="gpu_nodes", registry=REGISTRY)
async def gpu_nodes(*, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[str, GpuNode]:
    node = parse_node(body)
    if node is None:
        return {}
    rt = _rt(memo)
    owners = process_owners(values(rt.indexes.get("inference_servers", {})), rt.indexes.get("server_pods"))
    rt.note_capacity(name, capacity_of(node, owners))  # capacity that appears retries unplaced servers
    return {name: node}


@kopf.index("", "v1", "pods", labels={SERVER_LABEL: kopf.PRESENT}, id="server_pods", registry=REGISTRY)
async def server_pods(
    *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
) -> dict[str, PodFacts]:
    return {f"{namespace}/{labels[SERVER_LABEL]}": pod_facts(body)}


@kopf.on.resume(*SERVERS, id="reconcile", registry=REGISTRY)
@kopf.on.create(*SERVERS, id="reconcile", registry=REGISTRY)
@kopf.on.update(*SERVERS, id="reconcile", registry=REGISTRY)
async def reconcile_server(
    *, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    rt = _rt(memo)
    rt.remember_indexes(kwargs)
    key = f"{namespace}/{name}"
    async with rt.server_locks[key]:
        try:
            server = parse_server(body)
        except ValidationError as error:
            await report_invalid(rt, body, error)
            return
        nodes = nodes_of(kwargs["gpu_nodes"])
        outcome = await _servers(memo).reconcile(server, kwargs["inference_servers"], nodes, replace=False)
        rt.record_unplaced(key, time.monotonic(), outcome.fully_placed)
    if outcome.spec_error and outcome.estimate_error is not None:
        # Retrying cannot fix a spec: stop here until the spec changes (no retry storm).
        raise kopf.PermanentError(outcome.estimate_error)


async def report_invalid(rt: Runtime, body: kopf.Body, error: ValidationError) -> None:
    """A spec the API model refuses: Failed InvalidSpec naming the field, and a permanent error."""
    message = first_error(error)
    meta = body.get("metadata", {})
    status = decided_status(
        InferenceServerStatus(),
        Outcome(estimate_error=message, estimate_error_reason="InvalidSpec"),
        generation=meta.get("generation"),
        now=rfc3339(now()),
    )
    await asyncio.to_thread(
        rt.kube.patch_server_status, meta.get("namespace", "default"), meta["name"], status_patch(status)
    )
    kopf.event(body, type="Warning", reason="InvalidSpec", message=message)
    rt.metrics.reconciles.labels("InferenceServer", "invalid").inc()
    raise kopf.PermanentError(message)


@kopf.on.event(*SERVERS, id="gone", when=deleted, registry=REGISTRY)
async def server_gone(*, namespace: str | None, name: str, uid: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Deleted: what this process keeps about the server goes (kopf's record of what it last handled,
    locks, per-server metrics) and unplaced servers are retried, its memory being free. This is the
    watch's DELETED event: servers carry no finalizer, so kopf calls no delete handler for them. The
    reservation goes with the object (the index drops it); children go by garbage collection."""
    rt = _rt(memo)
    rt.diffbase.forget(uid or "")
    rt.forget(f"{namespace}/{name}")


def referenced(*, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> bool:
    """Cheap filter: only ConfigMaps some indexed server names."""
    wanted = (namespace or "default", name)
    indexed = _rt(memo).indexes.get("inference_servers", {})
    return any(referenced_config_map(server) == wanted for server in values(indexed) if server is not None)


@kopf.on.event("", "v1", "configmaps", id="referenced_config_map", when=referenced, registry=REGISTRY)
async def config_map_changed(*, type: str | None, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A ConfigMap a server names appeared or changed: reconcile those servers. A deletion is left
    to the next reconcile: a running server keeps the reservation it was sized for."""
    if type == "DELETED":
        return
    rt = _rt(memo)
    await _servers(memo).reconcile_referencing((namespace or "default", name), rt.indexes["inference_servers"])
