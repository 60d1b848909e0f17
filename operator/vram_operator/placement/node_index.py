"""Nodes indexed for tensor-parallel groups, so that placing a group looks at a few nodes, not every node.

A node holds a group of `size` GPUs that each need the same budget exactly when its size-th most free
usable GPU (its pivot, outside MIG for a group of two or more) holds the budget. Two indexes over pivots,
one per group size (and vacancy) asked about, kept by Occupancy (it refreshes the nodes whose GPUs
changed before each search):
- NodePivots: the pivots in buckets keyed like the GPUs' (total, bandwidth, vacant, LLM, latency-critical),
  most free first, ties by (node, index). Within a bucket every strategy prefers the pivot with more free
  memory, so a strategy's best nodes are among the first few of each bucket;
- FirstGroups: for the packing pass, the first node in inventory order whose group fits (a first-fit
  index over node positions).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vram_operator.placement.first_fit import NONE, FirstFitIndex

if TYPE_CHECKING:
    from vram_operator.placement.occupancy import BucketKey, Entry, GpuState


def pivot(open_gpus: Sequence[GpuState], size: int, *, vacant_only: bool = False) -> GpuState | None:
    """The size-th most free of a node's open GPUs (most free first) that a group of `size` may use, if any."""
    members = [g for g in open_gpus if (size == 1 or not g.slot.mig) and (g.vacant or not vacant_only)]
    return members[size - 1] if len(members) >= size else None


class NodePivots:
    """For one group size: each node's pivot as an entry (-free, node, index, position) in its GPU bucket."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buckets: dict[BucketKey, list[Entry]] = {}
        self._filed: dict[str, tuple[BucketKey, Entry]] = {}

    def refresh(self, node: str, open_gpus: Sequence[GpuState]) -> None:
        """File `node` again by its pivot among `open_gpus` (most free first)."""
        old = self._filed.pop(node, None)
        if old is not None:
            bucket = self.buckets[old[0]]
            del bucket[bisect_left(bucket, old[1])]
        chosen = pivot(open_gpus, self.size)
        if chosen is None or chosen.key is None:
            return
        entry = (-chosen.free, node, chosen.slot.index, chosen.position)
        insort(self.buckets.setdefault(chosen.key, []), entry)
        self._filed[node] = (chosen.key, entry)

    def leading(self, floor: float | None, count: int, eps: float) -> list[int]:
        """GPU positions of the pivots that lead their bucket: the first `count` of each with `floor` free
        (within `eps`; any free memory when `floor` is None)."""
        out: list[int] = []
        for bucket in self.buckets.values():
            for free, _, _, position in bucket[:count]:
                if floor is not None and -free < floor - eps:
                    break
                out.append(position)
        return out


class FirstGroups:
    """For one group size and vacancy: each node's pivot's free memory at the node's position."""

    def __init__(self, size: int, vacant_only: bool, nodes: int) -> None:
        self.size = size
        self.vacant_only = vacant_only
        self.index = FirstFitIndex(nodes)

    def refresh(self, position: int, open_gpus: Sequence[GpuState]) -> None:
        chosen = pivot(open_gpus, self.size, vacant_only=self.vacant_only)
        self.index.set(position, NONE if chosen is None else chosen.free)

    def first(self, need: float) -> int | None:
        """The position of the first node whose pivot holds `need`."""
        return self.index.first_at_least(need)
