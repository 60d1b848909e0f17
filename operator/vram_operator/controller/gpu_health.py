"""Pure decisions about the GPUs a server stands on, from what the agents report (clock injected).

Odd agent data is an environmental condition, never a reason to fail (placement/agent_data.py says
which GPUs are unusable and why). A GpuNode that is missing is "unknown" for a grace period (its
agent may be re-creating it), then "lost".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from vram_operator.api.base import Condition
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import PlacementStatus
from vram_operator.controller.conditions import set_condition
from vram_operator.controller.gpu_view import heartbeat_stale
from vram_operator.placement.agent_data import unusable_reason
from vram_operator.placement.ownership import ProcessOwners, not_ours


@dataclass(frozen=True)
class PlacementHealth:
    """healthy: leave it; unknown: wait (no re-placement yet); lost: re-place off `lost`."""

    state: Literal["healthy", "unknown", "lost"]
    lost: tuple[str, ...] = ()
    message: str = ""


def placement_health(
    placement: PlacementStatus,
    nodes: Sequence[GpuNode],
    *,
    missing_since: datetime | None,
    now: datetime,
    grace: timedelta,
) -> PlacementHealth:
    """Whether the GPUs of a placement still hold it.

    `missing_since` is when the placement's GpuNode was first seen missing (None: not missing, or
    not noticed before now). A node whose GpuNode has no status yet tells nothing (agent starting).
    """
    node = next((n for n in nodes if n.metadata.name == placement.node), None)
    uuids = tuple(gpu.uuid for gpu in placement.gpus)
    if node is None:
        gone_for = now - (missing_since or now)
        if gone_for < grace:
            message = (
                f"GpuNode {placement.node} missing for {gone_for.total_seconds():.0f}s "
                f"(lost after {grace.total_seconds():.0f}s)"
            )
            return PlacementHealth("unknown", message=message)
        return PlacementHealth(
            "lost", uuids, f"GpuNode {placement.node} missing for {gone_for.total_seconds():.0f}s: re-placing"
        )
    if node.status is None:
        return PlacementHealth("healthy")
    reported = {gpu.uuid: gpu for gpu in node.status.gpus}
    reasons: dict[str, str] = {}
    for uuid in uuids:
        gpu = reported.get(uuid)
        reason = "no longer reported by its agent" if gpu is None else unusable_reason(gpu)
        if reason is not None:
            reasons[uuid] = reason
    if not reasons:
        return PlacementHealth("healthy")
    detail = "; ".join(f"GPU {uuid} {reason}" for uuid, reason in reasons.items())
    return PlacementHealth("lost", tuple(reasons), f"{detail} on {placement.node}: re-placing")


# Capacity that grows by less than this is noise in the agent's numbers, not room for a server.
CAPACITY_STEP_MIB = 256.0


def capacity_of(node: GpuNode, owners: ProcessOwners) -> dict[str, float]:
    """Per usable GPU of a node: the MiB nothing foreign holds (total - memory not ours, as the planner
    counts it)."""
    if node.status is None or node.spec.cordoned:
        return {}
    return {
        gpu.uuid: gpu.memory_total_mib - not_ours(gpu, owners).mib
        for gpu in node.status.gpus
        if unusable_reason(gpu) is None
    }


def capacity_grew(before: Mapping[str, float], after: Mapping[str, float]) -> bool:
    """A GPU appeared or healed, or one gained at least CAPACITY_STEP_MIB."""
    return any(uuid not in before or mib >= before[uuid] + CAPACITY_STEP_MIB for uuid, mib in after.items())


READY = "Ready"
HEARTBEAT_STALE = "HeartbeatStale"


def stale_marked_conditions(
    node: GpuNode, *, now: datetime, stale_after: timedelta, now_text: str
) -> list[Condition] | None:
    """A GpuNode's conditions once the operator has judged its heartbeat, when they must change.

    An agent that went silent cannot say so: its last Ready no longer holds, so Ready becomes
    Unknown, reason HeartbeatStale (as the node lifecycle controller does for a silent kubelet).
    When the agent reports again, the agent writes its own Ready; a mark it left in place (a writer
    that sends no conditions) is removed. None: nothing to change (a GpuNode no agent ever wrote
    has no Ready to contradict).
    """
    if node.status is None:
        return None
    conditions = node.status.conditions
    ready = next((c for c in conditions if c.type == READY), None)
    marked = ready is not None and ready.reason == HEARTBEAT_STALE
    stale = heartbeat_stale(node, now, stale_after)
    if stale and not marked:
        beat = node.status.last_heartbeat
        since = f"no agent report since {beat}" if beat else "no agent heartbeat reported"
        message = f"{since} (stale after {stale_after.total_seconds():.0f}s)"
        return set_condition(conditions, READY, None, HEARTBEAT_STALE, message, generation=None, now=now_text)
    if marked and not stale:
        return [c for c in conditions if c.type != READY]
    return None
