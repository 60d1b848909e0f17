"""What a planning run produces: placements, unplaced servers, warnings and per-GPU totals.

`Plan.to_json_dict()` is the `vram-operator plan -o json` contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from vram_operator.placement.demand import replica_key
from vram_operator.placement.ledger import Ledger, Reservation


def mib(value: float) -> int | float:
    """MiB for JSON: whole numbers as int, others to one decimal."""
    rounded = round(value, 1)
    return int(rounded) if rounded == int(rounded) else rounded


@dataclass(frozen=True)
class Placement:
    """Where one server (one replica of it) goes: `budget_mib` on each GPU of `gpu_uuids` (one per
    tensor-parallel rank)."""

    server: str
    node: str
    gpu_uuids: tuple[str, ...]
    gpu_indices: tuple[int, ...]
    budget_mib: float
    gpu_memory_utilization: float | None
    warnings: tuple[str, ...] = ()
    explanation: str = ""
    dedicated: bool = False
    replica: int = 0

    @property
    def key(self) -> str:
        return replica_key(self.server, self.replica)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "replica": self.replica,
            "node": self.node,
            "gpus": list(self.gpu_uuids),
            "gpuIndices": list(self.gpu_indices),
            "budgetMiB": mib(self.budget_mib),
            "gpuMemoryUtilization": self.gpu_memory_utilization,
            "warnings": list(self.warnings),
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Unplaced:
    """A server that could not be placed: a CamelCase reason and a message with the numbers."""

    server: str
    reason: str
    message: str
    replica: int = 0

    @property
    def key(self) -> str:
        return replica_key(self.server, self.replica)

    def to_json_dict(self) -> dict[str, Any]:
        return {"server": self.server, "replica": self.replica, "reason": self.reason, "message": self.message}


class GpuSummary(NamedTuple):
    """One GPU after the plan. `free_after_mib` = total - foreign - reserved - margin (< 0: over-committed).

    A named tuple, not a dataclass: every planning run builds one per GPU of the fleet (4,000 in the
    scale benchmarks), and a tuple is built in about a third of the time.
    """

    node: str
    uuid: str
    index: int  # type: ignore[assignment]  # the GPU index (it hides tuple.index, which nothing here calls)
    name: str
    total_mib: float
    reserved_mib: float
    foreign_mib: float
    margin_mib: float
    free_after_mib: float
    servers: tuple[str, ...]
    mig: bool = False  # a MIG device (its index is its parent GPU's)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "uuid": self.uuid,
            "index": self.index,
            "name": self.name,
            "totalMiB": mib(self.total_mib),
            "reservedMiB": mib(self.reserved_mib),
            "foreignMiB": mib(self.foreign_mib),
            "marginMiB": mib(self.margin_mib),
            "freeAfterMiB": mib(self.free_after_mib),
            "servers": list(self.servers),
            "mig": self.mig,
        }


@dataclass(frozen=True)
class Plan:
    """The outcome of `plan()`: every demand is in exactly one of placements and unplaced."""

    strategy: str
    placements: tuple[Placement, ...]
    unplaced: tuple[Unplaced, ...]
    warnings: tuple[str, ...]
    gpus: tuple[GpuSummary, ...]
    margin_mib: float

    def placement_of(self, key: str) -> Placement | None:
        """The placement of a server's replica 0 ("ns/name") or of replica i ("ns/name[i]")."""
        return next((p for p in self.placements if p.key == key), None)

    @property
    def placed_mib(self) -> float:
        """Total VRAM placed (budget x GPUs, summed over placements)."""
        return sum(p.budget_mib * len(p.gpu_uuids) for p in self.placements)

    def apply_to(self, ledger: Ledger) -> Ledger:
        """`ledger` with this plan's placements recorded (replacing those servers' old reservations)."""
        replaced = {p.key for p in self.placements}
        kept = tuple(r for r in ledger.reservations if r.key not in replaced)
        new = tuple(
            Reservation(p.server, p.node, p.gpu_uuids, p.budget_mib, p.dedicated, p.replica) for p in self.placements
        )
        return Ledger(kept + new)

    def to_json_dict(self) -> dict[str, Any]:
        """The `vram-operator plan -o json` document."""
        return {
            "strategy": self.strategy,
            "placements": [p.to_json_dict() for p in self.placements],
            "unplaced": [u.to_json_dict() for u in self.unplaced],
            "warnings": list(self.warnings),
            "gpus": [g.to_json_dict() for g in self.gpus],
            "marginMiB": mib(self.margin_mib),
        }
