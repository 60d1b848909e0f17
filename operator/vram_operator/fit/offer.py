"""A GPU as an engine finds it at start-up: what fitting is asked about."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuOffer:
    """A GPU as an engine would find it at start-up (for a group: its smallest GPU, the least free).

    Two GPUs alike in these figures get the same answer (the planner leaves `label` empty so that an
    engine check can be cached across them).
    """

    name: str
    total_mib: float
    foreign_mib: float
    reserved_by_others_mib: float
    free_at_start_mib: float
    label: str = ""
