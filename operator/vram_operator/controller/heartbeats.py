"""GpuNodes whose agent went silent: the operator marks them Ready Unknown (HeartbeatStale) in the
check loop, since a dead agent cannot, and removes its mark once the agent reports again.

The write carries the resourceVersion the decision was made on: an agent report landing meanwhile
wins (the API server refuses the stale write) and the node is judged again at the next check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_node import GpuNode
from vram_operator.controller.gpu_health import HEARTBEAT_STALE, READY, stale_marked_conditions
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.runtime import Runtime, now, rfc3339
from vram_operator.controller.server_reconciler import nodes_of

log = logging.getLogger(__name__)


@kopf.on.event(GROUP, VERSION, "gpunodes", id="gpu_node_seen", registry=REGISTRY)
async def gpu_node_seen(*, memo: kopf.Memo, **kwargs: Any) -> None:
    """A GpuNode exists: the check loop, which judges heartbeats, runs even while no server does."""
    cast(Runtime, memo["rt"]).remember_indexes(kwargs)


# post(node, type, reason, message): an Event about a GpuNode (kopf.event in the operator).
PostNodeEvent = Callable[[GpuNode, str, str, str], None]


def post_node_event(node: GpuNode, type_: str, reason: str, message: str) -> None:
    meta = {"name": node.metadata.name, "uid": node.metadata.uid}
    body = {"apiVersion": node.api_version, "kind": node.kind, "metadata": meta}
    kopf.event(kopf.Body(cast(kopf.RawBody, body)), type=type_, reason=reason, message=message)


class HeartbeatCheck:
    """Judges every GpuNode's heartbeat each check interval (settings.heartbeat_stale)."""

    def __init__(self, rt: Runtime, post_event: PostNodeEvent) -> None:
        self.rt = rt
        self.post_event = post_event

    async def check(self, indexes: Mapping[str, Any]) -> None:
        moment = now()
        for node in nodes_of(indexes["gpu_nodes"]):
            conditions = stale_marked_conditions(
                node, now=moment, stale_after=self.rt.settings.heartbeat_stale, now_text=rfc3339(moment)
            )
            if conditions is None:
                continue
            name = node.metadata.name
            patch: dict[str, Any] = {"status": {"conditions": [c.wire() for c in conditions]}}
            if node.metadata.resource_version:
                patch["metadata"] = {"resourceVersion": node.metadata.resource_version}
            try:
                written = await asyncio.to_thread(self.rt.kube.patch_gpu_node_status, name, patch)
            except Exception:  # one node's trouble must not stop the others
                log.exception("marking the heartbeat of GpuNode %s failed", name)
                continue
            if not written:
                continue  # the agent wrote meanwhile: judged again at the next check
            ready = next((c for c in conditions if c.type == READY), None)
            if ready is not None:
                self.post_event(node, "Warning", HEARTBEAT_STALE, ready.message)
            else:
                self.post_event(node, "Normal", "HeartbeatResumed", "the agent reports again")
