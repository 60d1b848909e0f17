"""Facts about the GPUs the handlers need beyond the planner: stale agents, lost GPUs, headroom."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode
from vram_operator.api.inference_server import InferenceServer


def parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def stale_nodes(nodes: Iterable[GpuNode], now: datetime, stale_after: timedelta) -> frozenset[str]:
    """Nodes whose agent has not reported within `stale_after` (or never): no new placements there."""
    stale = set()
    for node in nodes:
        beat = parse_time(node.status.last_heartbeat) if node.status and node.status.last_heartbeat else None
        if beat is None or now - beat > stale_after:
            stale.add(node.metadata.name)
    return frozenset(stale)


def find_gpu(nodes: Iterable[GpuNode], node: str, uuid: str) -> GpuDeviceStatus | None:
    for candidate in nodes:
        if candidate.metadata.name == node and candidate.status:
            return next((gpu for gpu in candidate.status.gpus if gpu.uuid == uuid), None)
    return None


def foreign_mib(gpu: GpuDeviceStatus) -> float:
    """Memory of processes that belong to no pod (desktop, other services) and unattributed use."""
    return sum(p.used_mib or 0.0 for p in gpu.processes if not p.pod_uid) + gpu.unattributed_mib


def reserved_by(servers: Iterable[InferenceServer]) -> dict[str, float]:
    """MiB reserved per GPU UUID by the servers' placements: every replica's budget counts."""
    reserved: dict[str, float] = {}
    for server in servers:
        for placement in server.status.placed_replicas() if server.status else []:
            for gpu in placement.gpus:
                reserved[gpu.uuid] = reserved.get(gpu.uuid, 0.0) + placement.budget_mib
    return reserved


def headroom_mib(uuid: str, node: str, nodes: Sequence[GpuNode], others: Iterable[InferenceServer]) -> float:
    """What one server may use on a GPU: total - other servers' reservations - foreign use."""
    gpu = find_gpu(nodes, node, uuid)
    if gpu is None:
        return 0.0
    return max(0.0, gpu.memory_total_mib - reserved_by(others).get(uuid, 0.0) - foreign_mib(gpu))


def free_after_reservations(
    nodes: Sequence[GpuNode], servers: Iterable[InferenceServer], margin_mib: float
) -> dict[str, float]:
    """Per GPU UUID: total - reservations - foreign use - margin (for the rollout order)."""
    reserved = reserved_by(servers)
    return {
        gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) - foreign_mib(gpu) - margin_mib
        for node in nodes
        for gpu in (node.status.gpus if node.status else [])
    }
