"""Exact packing for small problems: depth-first branch and bound over where each server goes.

The greedy and repair passes are local: on small fleets they sometimes miss a better set of servers
that needs several tensor-parallel groups and a dedicated server moved at once. This search looks at
every choice (one GPU, or one group of GPUs on one node, or none) server by server, largest first,
and prunes a branch when even a perfect fill of what is still usable cannot beat the best so far.
It is bounded by a number of search steps, not by time, so the same input always gives the same plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations

_EPS = 1e-6


@dataclass(frozen=True)
class Item:
    """A server to pack: its budget per GPU, how many GPUs of one node it needs, and whether alone."""

    name: str
    size: float
    width: int = 1
    dedicated: bool = False

    @property
    def total(self) -> float:
        return self.size * self.width


@dataclass(frozen=True)
class Bin:
    """A GPU as the search sees it: its node, free memory, whether it has no tenant, whether it takes any."""

    node: str
    free: float
    vacant: bool = True
    open: bool = True


def pack(bins: Sequence[Bin], items: Sequence[Item], *, beat: float, steps: int) -> dict[str, tuple[int, ...]] | None:
    """Bin positions per packed item for a packing of more than `beat` MiB in all, the most found in
    `steps` search steps; None when none was found. Items left out of the mapping are not packed."""
    search = _Search(bins, items, beat, steps)
    search.descend(0, 0.0)
    return search.best


class _Search:
    def __init__(self, bins: Sequence[Bin], items: Sequence[Item], beat: float, steps: int) -> None:
        self.items = sorted(items, key=lambda it: (-it.total, -it.width, it.name))
        self.free = [b.free if b.open else 0.0 for b in bins]
        self.vacant = [b.vacant for b in bins]
        self.open = [b.open and b.free > _EPS for b in bins]
        self.nodes: dict[str, list[int]] = {}
        for position, b in enumerate(bins):
            self.nodes.setdefault(b.node, []).append(position)
        # What the items from i on could add at most, and the smallest of them (GPUs with less free are lost).
        self.rest = [0.0] * (len(self.items) + 1)
        self.smallest = [float("inf")] * (len(self.items) + 1)
        for i in range(len(self.items) - 1, -1, -1):
            self.rest[i] = self.rest[i + 1] + self.items[i].total
            self.smallest[i] = min(self.smallest[i + 1], self.items[i].size)
        self.record = beat
        self.budget = steps
        self.chosen: dict[str, tuple[int, ...]] = {}
        self.best: dict[str, tuple[int, ...]] | None = None

    def bound(self, i: int) -> float:
        smallest = self.smallest[i] - _EPS
        usable = sum(f for f, o in zip(self.free, self.open, strict=True) if o and f >= smallest)
        return min(self.rest[i], usable)

    def descend(self, i: int, placed: float) -> None:
        self.budget -= 1
        if placed > self.record + _EPS:
            self.record = placed
            self.best = dict(self.chosen)
        if i == len(self.items) or self.budget <= 0 or placed + self.bound(i) <= self.record + _EPS:
            return
        item = self.items[i]
        for group in self.options(item):
            self.take(item, group)
            self.descend(i + 1, placed + item.total)
            self.give_back(item, group)
            if self.budget <= 0:
                return
        self.descend(i + 1, placed)

    def options(self, item: Item) -> Iterator[tuple[int, ...]]:
        """Where `item` fits, tightest first; GPUs alike (same node, free and vacancy) are tried once."""
        found: dict[tuple[object, ...], tuple[float, tuple[int, ...]]] = {}
        for node, positions in self.nodes.items():
            fitting = [
                p
                for p in positions
                if self.open[p] and self.free[p] >= item.size - _EPS and (self.vacant[p] or not item.dedicated)
            ]
            for group in combinations(fitting, item.width):
                alike = (node, tuple(sorted((round(self.free[p], 3), self.vacant[p]) for p in group)))
                if alike not in found:
                    left = sum(self.free[p] for p in group) - item.total
                    found[alike] = (left, group)
        yield from (group for _, group in sorted(found.values()))

    def take(self, item: Item, group: tuple[int, ...]) -> None:
        self.chosen[item.name] = group
        for p in group:
            self.free[p] -= item.size
            self.vacant[p] = False
            if item.dedicated:
                self.open[p] = False

    def give_back(self, item: Item, group: tuple[int, ...]) -> None:
        del self.chosen[item.name]
        for p in group:
            self.free[p] += item.size
            self.open[p] = True  # only open GPUs are taken, so each was open before
        for p in group:
            self.vacant[p] = not any(p in g for g in self.chosen.values()) and self.was_vacant[p]
