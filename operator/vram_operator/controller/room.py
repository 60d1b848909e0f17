"""Pure: does a placed server still have its room, given what the agents measure now?

Foreign processes (a desktop, another service) can grow after a server was placed. vLLM checks at
start-up that the free memory is at least `gpu_memory_utilization` x total (and before 0.21 then
captures its CUDA graphs beyond that), so the next restart of a server whose room was eaten fails.
This says so before that happens, with the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServerStatus, PlacementStatus
from vram_operator.controller.gpu_view import find_gpu
from vram_operator.placement.ownership import ProcessOwners, not_ours

REASON = "ForeignMemoryGrew"


def startup_check_passes(free_mib: float, utilization: float, total_mib: float) -> bool:
    """vLLM's start-up check: the free memory must be at least utilization x total."""
    return free_mib >= utilization * total_mib


@dataclass(frozen=True)
class Shortfall:
    """A GPU of the placement where the server no longer has the memory it needs to start."""

    uuid: str
    needed_mib: float
    free_mib: float
    foreign_mib: float

    @property
    def message(self) -> str:
        return (
            f"GPU {self.uuid}: {self.free_mib:.0f}MiB free for this server after {self.foreign_mib:.0f}MiB of "
            f"foreign use and other servers' reservations, {self.needed_mib:.0f}MiB needed: "
            "a restart would fail its start-up check"
        )


def beyond_share_mib(status: InferenceServerStatus) -> float:
    """What a vLLM server holds per GPU beyond `utilization x total` (its CUDA graphs before vLLM 0.21), as
    the estimate it was placed with says (its total is that share plus the graphs); 0 without a utilization."""
    placement, estimate, utilization = status.placement, status.estimate, status.gpu_memory_utilization
    if placement is None or not placement.gpus or estimate is None or utilization is None:
        return 0.0
    return max(0.0, estimate.total_mib - utilization * min(g.total_mib for g in placement.gpus))


def room_shortfall(
    placement: PlacementStatus,
    utilization: float | None,
    nodes: Sequence[GpuNode],
    reserved_by_others: Mapping[str, float],
    owners: ProcessOwners,
    *,
    beyond_share: float = 0.0,
) -> Shortfall | None:
    """The first GPU of the placement whose free memory (total - memory not ours - other servers'
    reservations; not ours by the one ownership rule, as the planner counts it) is below what the
    server needs to start: for vLLM utilization x total (its start-up check) and `beyond_share` (the
    CUDA graphs it captures after that), its budget otherwise. None when every GPU still holds it (or
    nothing is reported)."""
    for placed in placement.gpus:
        gpu = find_gpu(nodes, placement.node, placed.uuid)
        if gpu is None or gpu.memory_total_mib <= 0:
            continue  # no report: a lost GPU is the health check's business
        foreign = not_ours(gpu, owners).mib
        free = gpu.memory_total_mib - foreign - reserved_by_others.get(gpu.uuid, 0.0)
        if utilization is not None:
            needed = utilization * gpu.memory_total_mib + beyond_share
            if startup_check_passes(free, utilization, gpu.memory_total_mib) and free >= needed:
                continue
        elif free >= placement.budget_mib:
            continue
        else:
            needed = placement.budget_mib
        return Shortfall(gpu.uuid, needed, free, foreign)
    return None
