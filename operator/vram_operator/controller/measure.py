"""Measured memory of a server: its pods' processes on its GPUs, from GpuNode status."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from vram_operator.api.gpu_node import GpuNodeStatus
from vram_operator.api.inference_server import MeasuredGpuMemory, MeasuredMemory


def summary(used_mib: float, total_mib: float) -> str:
    """`6134MiB / 12288MiB (49.9%)`: the printer column (its header already says Memory)."""
    percent = 100.0 * used_mib / total_mib if total_mib else 0.0
    return f"{round(used_mib)}MiB / {round(total_mib)}MiB ({percent:.1f}%)"


def display(used_mib: float, total_mib: float) -> str:
    """`Memory: 6134MiB / 12288MiB (49.9%)`."""
    return f"Memory: {summary(used_mib, total_mib)}"


def measure_server(
    pod_uids: Collection[str], gpu_uuids: Sequence[str], nodes: Iterable[GpuNodeStatus]
) -> MeasuredMemory | None:
    """Memory the pods use on the given GPUs, summed over them (tensor parallel), or None when
    no agent reports a process of these pods on them (memory unknown, not zero)."""
    wanted = set(gpu_uuids)
    per_gpu: dict[str, MeasuredGpuMemory] = {}
    heartbeats: list[str] = []
    seen_process = False
    for node in nodes:
        for gpu in node.gpus:
            if gpu.uuid not in wanted:
                continue
            ours = [p for p in gpu.processes if p.pod_uid in pod_uids and p.used_mib is not None]
            seen_process = seen_process or bool(ours)
            used = sum(p.used_mib or 0.0 for p in ours)
            per_gpu[gpu.uuid] = MeasuredGpuMemory(uuid=gpu.uuid, used_mib=used, total_mib=gpu.memory_total_mib)
            if node.last_heartbeat:
                heartbeats.append(node.last_heartbeat)
    if not seen_process:
        return None
    ordered = [per_gpu[uuid] for uuid in gpu_uuids if uuid in per_gpu]
    used = sum(g.used_mib for g in ordered)
    total = sum(g.total_mib for g in ordered)
    return MeasuredMemory(
        used_mib=used,
        total_mib=total,
        percent=round(100.0 * used / total, 1) if total else 0.0,
        per_gpu=ordered,
        measured_at=max(heartbeats) if heartbeats else None,
        display=display(used, total),
        summary=summary(used, total),
    )


def memory_changed(old: MeasuredMemory | None, new: MeasuredMemory | None) -> bool:
    """Whether a status write is worth it: the timestamp alone is no change (debounce)."""
    if old is None or new is None:
        return old is not new
    return old.model_dump(exclude={"measured_at"}) != new.model_dump(exclude={"measured_at"})


def estimate_error(measured: MeasuredMemory, budget_mib: float) -> float | None:
    """Measured / predicted per GPU (1.0 = exact), or None without a budget."""
    if budget_mib <= 0 or not measured.per_gpu:
        return None
    return (measured.used_mib / len(measured.per_gpu)) / budget_mib
