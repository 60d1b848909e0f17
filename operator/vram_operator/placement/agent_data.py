"""What the planner may use of the agents' reports: odd agent data is a condition, never a failure.

A GPU reported with no memory (NVML lost it) or under a UUID another GPU already has is left out
with a reason; the rest of the fleet stays plannable. The operator and the offline `plan` both go
through here (decide.decide), so they see the same fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode


@dataclass(frozen=True)
class UnusableGpu:
    """A GPU the agent reports in a way placement cannot use, and why."""

    node: str
    uuid: str
    message: str


def unusable_reason(gpu: GpuDeviceStatus) -> str | None:
    """Why a reported GPU cannot hold anything, or None when it can."""
    if not gpu.healthy:
        return "reported unhealthy by its agent"
    if gpu.memory_total_mib <= 0:
        return f"reports {gpu.memory_total_mib:g}MiB of memory (NVML lost it)"
    return None


def usable_agent_data(nodes: Sequence[GpuNode]) -> tuple[list[GpuNode], list[UnusableGpu]]:
    """The GpuNodes as the planner may see them: GPUs with no memory and repeated UUIDs left out.

    The planner rejects such inventories as a whole; here each odd GPU is one unusable GPU with a
    reason, and the rest of the fleet stays plannable. Nodes are read in name order, so the first
    node reporting a UUID keeps it.
    """
    seen: dict[str, str] = {}
    unusable: list[UnusableGpu] = []
    cleaned: list[GpuNode] = []
    for node in sorted(nodes, key=lambda n: n.metadata.name):
        status = node.status
        if status is None:
            cleaned.append(node)
            continue
        name = node.metadata.name
        kept: list[GpuDeviceStatus] = []
        for gpu in status.gpus:
            if gpu.uuid in seen:
                unusable.append(UnusableGpu(name, gpu.uuid, f"UUID also reported by node {seen[gpu.uuid]}"))
            elif gpu.memory_total_mib <= 0:
                unusable.append(UnusableGpu(name, gpu.uuid, unusable_reason(gpu) or ""))
            else:
                seen[gpu.uuid] = name
                kept.append(gpu)
        if len(kept) == len(status.gpus):
            cleaned.append(node)
        else:
            cleaned.append(node.model_copy(update={"status": status.model_copy(update={"gpus": kept})}))
    return cleaned, unusable
