"""InferenceServer handlers (thin): kopf indexes and events in, ServerReconciler calls out.

The reconcile/check/observe/heal logic lives in server_reconciler.ServerReconciler, over the Kube
port; the handlers only parse the object, take the server's lock and decide whether an outcome is
a permanent failure (a spec that can never work) or a status that waits for its inputs to change.
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
from vram_operator.controller.gpu_health import capacity_of
from vram_operator.controller.pods import PodFacts, pod_facts
from vram_operator.controller.runtime import Runtime, first_error, now, parse_node, parse_server, rfc3339
from vram_operator.controller.server_reconciler import ServerReconciler, nodes_of
from vram_operator.controller.server_status import Outcome, decided_status, status_patch
from vram_operator.render.metadata import SERVER_LABEL

SERVERS = (GROUP, VERSION, "inferenceservers")


def body_of(server: InferenceServer) -> kopf.Body:
    """Enough of the object for kopf to post an Event about it."""
    meta = {"name": server.metadata.name, "namespace": server.metadata.namespace, "uid": server.metadata.uid}
    return kopf.Body(cast(kopf.RawBody, {"apiVersion": server.api_version, "kind": server.kind, "metadata": meta}))


def post_event(server: InferenceServer, type_: str, reason: str, message: str) -> None:
    kopf.event(body_of(server), type=type_, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    servers = ServerReconciler(rt, post_event)
    rt.checks.append(servers.check_servers)

    @kopf.index(*SERVERS, id="inference_servers", registry=registry)
    def inference_servers(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, InferenceServer]:
        try:
            return {f"{namespace}/{name}": parse_server(body)}
        except ValidationError:
            return {}  # a bad spec holds no reservation; its reconcile reports it

    @kopf.index(GROUP, VERSION, "gpunodes", id="gpu_nodes", registry=registry)
    def gpu_nodes(*, name: str, body: kopf.Body, **_: Any) -> dict[str, GpuNode]:
        node = parse_node(body)
        if node is not None:
            rt.note_capacity(name, capacity_of(node))  # capacity that appears retries unplaced servers
        return {name: node} if node is not None else {}

    @kopf.index("", "v1", "pods", labels={SERVER_LABEL: kopf.PRESENT}, id="server_pods", registry=registry)
    def server_pods(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[str, PodFacts]:
        return {f"{namespace}/{labels[SERVER_LABEL]}": pod_facts(body)}

    @kopf.on.resume(*SERVERS, id="reconcile", registry=registry)
    @kopf.on.create(*SERVERS, id="reconcile", registry=registry)
    @kopf.on.update(*SERVERS, id="reconcile", registry=registry)
    async def reconcile_server(*, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any) -> None:
        rt.remember_indexes(kwargs)
        key = f"{namespace}/{name}"
        async with rt.server_locks[key]:
            try:
                server = parse_server(body)
            except ValidationError as error:
                await _report_invalid(body, error)
                return
            nodes = nodes_of(kwargs["gpu_nodes"])
            outcome = await servers.reconcile(server, kwargs["inference_servers"], nodes, replace=False)
            rt.record_unplaced(key, time.monotonic(), outcome.placement is not None)
        if outcome.spec_error and outcome.estimate_error is not None:
            # Retrying cannot fix a spec: stop here until the spec changes (no retry storm).
            raise kopf.PermanentError(outcome.estimate_error)

    async def _report_invalid(body: kopf.Body, error: ValidationError) -> None:
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

    @kopf.on.delete(*SERVERS, id="forget", optional=True, registry=registry)
    def forget_server(*, namespace: str | None, name: str, **_: Any) -> None:
        # The reservation goes with the object (the index drops it); children go by garbage collection.
        key = f"{namespace}/{name}"
        rt.written.pop(key, None)
        rt.refused.pop(key, None)
        rt.retry_unplaced.clear()  # its memory is free now: unplaced servers may fit
        rt.server_locks.pop(key, None)
        rt.metrics.forget_server(namespace or "default", name)

    def referenced(namespace: str | None, name: str, **_: Any) -> bool:
        """Cheap filter: only ConfigMaps some indexed server names."""
        wanted = (namespace or "default", name)
        return any(
            s is not None
            and s.spec.model is not None
            and s.spec.model.config_map_ref is not None
            and (s.metadata.namespace or "default", s.spec.model.config_map_ref.name) == wanted
            for store in rt.indexes.get("inference_servers", {}).values()
            for s in store
        )

    @kopf.on.event("", "v1", "configmaps", id="referenced_config_map", when=referenced, registry=registry)
    async def config_map_changed(*, namespace: str | None, name: str, **kwargs: Any) -> None:
        rt.remember_indexes(kwargs)
        await servers.reconcile_referencing((namespace or "default", name), rt.indexes["inference_servers"])
