"""Snapshot + attribution -> GpuNodeStatus, and the change test that decides whether to write.

Pure: the heartbeat time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_operator.agent.attribution import ProcessIdentity, attribute
from vram_operator.agent.pods import PodInfo
from vram_operator.agent.snapshot import GpuSample, NodeSnapshot
from vram_operator.api.base import Condition
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNodeStatus, GpuProcess

READY = "Ready"
NVML_AVAILABLE = "NvmlAvailable"


def _mib(value: float) -> float:
    return round(max(value, 0.0), 2)


def _device(gpu: GpuSample, processes: list[GpuProcess], children_used_mib: float) -> GpuDeviceStatus:
    # Memory no listed process accounts for: driver/context overhead, processes NVML cannot
    # measure, processes in other containers' PID namespaces. With MIG on, the MIG devices
    # account for the parent's used memory.
    accounted = sum(p.used_mib for p in processes if p.used_mib is not None) + children_used_mib
    return GpuDeviceStatus(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        memory_total_mib=_mib(gpu.total_mib),
        memory_used_mib=_mib(gpu.used_mib),
        memory_free_mib=_mib(gpu.free_mib),
        memory_reserved_mib=_mib(gpu.reserved_mib),
        compute_capability=gpu.compute_capability,
        healthy=gpu.healthy,
        mig_enabled=gpu.mig_enabled,
        mig=gpu.mig,
        parent_uuid=gpu.parent_uuid,
        processes=processes,
        unattributed_mib=_mib(gpu.used_mib - accounted),
    )


def _condition(type_: str, state: tuple[str, str, str], *, now: str, previous: Mapping[str, Condition]) -> Condition:
    status, reason, message = state
    before = previous.get(type_)
    # KEP-1623: lastTransitionTime moves only when status changes.
    since = before.last_transition_time if before is not None and before.status == status else now
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=since)


def _conditions(snapshot: NodeSnapshot, now: str, previous: GpuNodeStatus | None) -> list[Condition]:
    before = {c.type: c for c in previous.conditions} if previous else {}
    if snapshot.backend == "simulated":
        nvml = ("False", "SimulatedBackend", "GPUs come from a simulated profile.")
    elif snapshot.available:
        nvml = ("True", "NvmlInitialized", "")
    else:
        nvml = ("False", snapshot.problem_reason or "NvmlError", snapshot.problem or "")

    unhealthy = [g for g in snapshot.gpus if not g.healthy]
    if not snapshot.available:
        ready = ("False", snapshot.problem_reason or "GpusUnreadable", snapshot.problem or "")
    elif not snapshot.gpus:
        ready = ("False", "NoGpus", "No GPU found on this node.")
    elif unhealthy:
        detail = "; ".join(f"GPU {g.index} ({g.uuid}): {g.problem or 'unhealthy'}" for g in unhealthy)
        ready = ("False", "GpuUnhealthy", detail)
    else:
        ready = ("True", "AllGpusHealthy", f"{len(snapshot.gpus)} GPU device(s) reporting.")
    return [
        _condition(READY, ready, now=now, previous=before),
        _condition(NVML_AVAILABLE, nvml, now=now, previous=before),
    ]


def build_status(
    snapshot: NodeSnapshot,
    identities: Mapping[int, ProcessIdentity],
    pods: Mapping[str, PodInfo],
    *,
    now: str,
    agent_version: str,
    previous: GpuNodeStatus | None = None,
) -> GpuNodeStatus:
    """The GpuNode status for one snapshot; previous keeps conditions' transition times stable."""
    children_used: dict[str, float] = {}
    for gpu in snapshot.gpus:
        if gpu.parent_uuid is not None:
            children_used[gpu.parent_uuid] = children_used.get(gpu.parent_uuid, 0.0) + gpu.used_mib
    devices = [
        _device(
            gpu, [attribute(p, identities.get(p.pid), pods) for p in gpu.processes], children_used.get(gpu.uuid, 0.0)
        )
        for gpu in snapshot.gpus
    ]
    # Node totals count physical GPUs only: a MIG device's memory is part of its parent's.
    physical = [d for d in devices if not d.mig]
    return GpuNodeStatus(
        gpus=devices,
        gpu_count=len(physical),
        memory_total_mib=_mib(sum(d.memory_total_mib for d in physical)),
        memory_free_mib=_mib(sum(d.memory_free_mib for d in physical)),
        driver_version=snapshot.driver_version,
        backend=snapshot.backend,
        agent_version=agent_version,
        last_heartbeat=now,
        conditions=_conditions(snapshot, now, previous),
    )


def comparable(status: GpuNodeStatus) -> dict[str, Any]:
    """The status as written, minus the heartbeat: equal values mean nothing worth a write changed."""
    wire = status.wire()
    wire.pop("lastHeartbeat", None)
    return wire
