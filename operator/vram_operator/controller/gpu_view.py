"""Facts about the GPUs the handlers need beyond the planner: stale agents, lost GPUs, headroom."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller.pods import PodFacts
from vram_operator.placement.ownership import ProcessOwners, not_ours


def parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def heartbeat_stale(node: GpuNode, now: datetime, stale_after: timedelta) -> bool:
    """The one staleness rule: the node's agent has not reported within `stale_after` (or never)."""
    beat = parse_time(node.status.last_heartbeat) if node.status and node.status.last_heartbeat else None
    return beat is None or now - beat > stale_after


def stale_nodes(nodes: Iterable[GpuNode], now: datetime, stale_after: timedelta) -> frozenset[str]:
    """Nodes whose agent has not reported within `stale_after` (or never): no new placements there."""
    return frozenset(node.metadata.name for node in nodes if heartbeat_stale(node, now, stale_after))


def find_gpu(nodes: Iterable[GpuNode], node: str, uuid: str) -> GpuDeviceStatus | None:
    for candidate in nodes:
        if candidate.metadata.name == node and candidate.status:
            return next((gpu for gpu in candidate.status.gpus if gpu.uuid == uuid), None)
    return None


def pod_uids_of(server_pods: Mapping[str, Iterable[PodFacts]] | None) -> dict[str, frozenset[str]] | None:
    """Per server ("namespace/name"), the UIDs of its pods, from the operator's pod index; None before it is known."""
    if server_pods is None:
        return None
    return {key: frozenset(pod.uid for pod in pods if pod.uid) for key, pods in server_pods.items()}


def process_owners(
    servers: Iterable[InferenceServer], server_pods: Mapping[str, Iterable[PodFacts]] | None
) -> ProcessOwners:
    """Who owns GPU processes, by the one rule (placement/ownership.py), from the operator's indexes."""
    return ProcessOwners.of((server.key for server in servers), pod_uids_of(server_pods))


def reserved_by(servers: Iterable[InferenceServer]) -> dict[str, float]:
    """MiB reserved per GPU UUID by the servers' placements: every replica's budget counts."""
    reserved: dict[str, float] = {}
    for server in servers:
        for placement in server.status.placed_replicas() if server.status else []:
            for gpu in placement.gpus:
                reserved[gpu.uuid] = reserved.get(gpu.uuid, 0.0) + placement.budget_mib
    return reserved


class Reservations:
    """Who reserves how much on each GPU UUID, so what the others hold besides one server is read
    without going through every server again (one pass of the runtime check reads it per server)."""

    def __init__(self, servers: Iterable[InferenceServer]) -> None:
        self._by_gpu: dict[str, list[tuple[str, float]]] = {}
        for server in servers:
            for placement in server.status.placed_replicas() if server.status else []:
                for gpu in placement.gpus:
                    self._by_gpu.setdefault(gpu.uuid, []).append((server.key, placement.budget_mib))

    def besides(self, key: str, uuid: str) -> float:
        """MiB reserved on GPU `uuid` by every server but `key` (what reserved_by sums without it)."""
        total = 0.0
        for holder, mib in self._by_gpu.get(uuid, ()):
            if holder != key:
                total += mib
        return total


def headroom_mib(
    uuid: str, node: str, nodes: Sequence[GpuNode], others: Iterable[InferenceServer], owners: ProcessOwners
) -> float:
    """What one server may use on a GPU: total - other servers' reservations - memory not ours.

    Memory not ours is counted as the planner counts it, so this minus the margin is the planner's free
    capacity for the server there.
    """
    gpu = find_gpu(nodes, node, uuid)
    if gpu is None:
        return 0.0
    return max(0.0, gpu.memory_total_mib - reserved_by(others).get(uuid, 0.0) - not_ours(gpu, owners).mib)


def free_after_reservations(
    nodes: Sequence[GpuNode], servers: Iterable[InferenceServer], margin_mib: float, owners: ProcessOwners
) -> dict[str, float]:
    """Per GPU UUID: total - reservations - memory not ours - margin (for the rollout order)."""
    reserved = reserved_by(servers)
    return {
        gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) - not_ours(gpu, owners).mib - margin_mib
        for node in nodes
        for gpu in (node.status.gpus if node.status else [])
    }
