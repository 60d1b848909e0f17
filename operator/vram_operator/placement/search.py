"""Packing search for small problems: randomised greedy restarts, then depth-first branch and bound.

The greedy and repair passes are local: on small fleets they sometimes miss a better set of servers
that needs several tensor-parallel groups and a dedicated server moved at once. Here, first, greedy
fills in jittered orders (some servers left out, tensor-parallel groups put tightest or spread onto
large GPUs) find good sets quickly; then a depth-first search looks at every choice (one GPU, one group
of GPUs on one node, or none) server by server, largest first, and prunes a branch when even a perfect
fill of what is still usable cannot beat the best so far, or when a greedy fill places everything left.
Both are bounded by a number of steps, not by time, and the restarts use a fixed seed, so the same
input always gives the same plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from random import Random

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
    """Bin positions per packed item for a packing of more than `beat` MiB in all, the most found in about
    `steps` steps (half restarts, half search; a greedy fill, once begun, finishes); None when none was
    found. Items left out of the mapping are not packed."""
    search = _Search(bins, items, beat, steps)
    search.restarts(steps // 2)
    search.budget += steps - steps // 2
    search.descend(0, 0.0)
    return search.best


class _Search:
    def __init__(self, bins: Sequence[Bin], items: Sequence[Item], beat: float, steps: int) -> None:
        # Largest first; interchangeable items (same size, width and isolation) end up side by side.
        self.items = sorted(items, key=lambda it: (-it.total, -it.width, it.dedicated, it.name))
        self.free = [b.free if b.open else 0.0 for b in bins]
        self.tenants = [0 if b.vacant else 1 for b in bins]  # >0: not vacant
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
        self.twin = [
            i > 0
            and (it.size, it.width, it.dedicated) == (self.items[i - 1].size, self.items[i - 1].width, it.dedicated)
            for i, it in enumerate(self.items)
        ]
        self.record = beat
        self.budget = steps
        self.chosen: dict[str, tuple[int, ...]] = {}
        self.groups: list[tuple[int, ...] | None] = [None] * len(self.items)  # where item i went on this branch
        self.best: dict[str, tuple[int, ...]] | None = None

    def bound(self, i: int) -> float:
        smallest = self.smallest[i] - _EPS
        usable = sum(f for f, o in zip(self.free, self.open, strict=True) if o and f >= smallest)
        return min(self.rest[i], usable)

    def keep_if_better(self, placed: float) -> None:
        if placed > self.record + _EPS:
            self.record = placed
            self.best = dict(self.chosen)

    def descend(self, i: int, placed: float) -> None:
        self.budget -= 1
        self.keep_if_better(placed)
        if i == len(self.items) or self.budget <= 0 or placed + self.bound(i) <= self.record + _EPS:
            return
        if self.fill_greedily(i, placed):
            return  # every remaining item fits: this branch can do no better
        item = self.items[i]
        # A twin of the previous item goes no lower than it did (and nowhere if it was left out): the
        # same plans with twins swapped are not searched again.
        after = self.groups[i - 1] if self.twin[i] else ()
        if after is not None:
            for group in self.options(item, after):
                self.take(item, group)
                self.groups[i] = group
                self.descend(i + 1, placed + item.total)
                self.groups[i] = None
                self.give_back(item, group)
                if self.budget <= 0:
                    return
        self.descend(i + 1, placed)

    def restarts(self, steps: int) -> None:
        """Randomised greedy fills for `steps` steps: sizes jittered by up to 30%, one item in ten left out,
        and tensor-parallel groups put tightest, loosest (spreading onto large GPUs) or either at random.
        The generator has a fixed seed, so the same problem gets the same fills."""
        rng = Random(0)
        self.budget = steps
        while self.budget > 0:
            self.budget -= 1  # a fill that takes no item must still cost a step, or this never ends
            jitter = {it.name: rng.uniform(0.7, 1.3) for it in self.items}
            order = sorted(
                (it for it in self.items if rng.random() >= 0.1), key=lambda it: (-it.total * jitter[it.name], it.name)
            )
            loose = rng.choice((0.0, 0.5, 1.0))  # chance that a tensor-parallel item takes its loosest group
            taken: list[tuple[Item, tuple[int, ...]]] = []
            placed = 0.0
            for item in order:
                self.budget -= 1
                options = list(self.options(item, ()))
                if options:
                    group = options[-1] if item.width > 1 and rng.random() < loose else options[0]
                    self.take(item, group)
                    taken.append((item, group))
                    placed += item.total
            self.keep_if_better(placed)
            for item, group in reversed(taken):
                self.give_back(item, group)

    def fill_greedily(self, i: int, placed: float) -> bool:
        """Put the items from i on, in order, where each fits tightest; keep that if it is the best so far.
        True when all of them fitted. Costs a step per item."""
        taken: list[tuple[Item, tuple[int, ...]]] = []
        for item in self.items[i:]:
            self.budget -= 1
            group = next(self.options(item, ()), None)
            if group is not None:
                self.take(item, group)
                taken.append((item, group))
                placed += item.total
        self.keep_if_better(placed)
        for item, group in reversed(taken):
            self.give_back(item, group)
        return len(taken) == len(self.items) - i

    def options(self, item: Item, after: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        """Where `item` fits (groups not before `after`), tightest first; GPUs alike (same node, free and
        vacancy) are tried once."""
        found: dict[tuple[object, ...], tuple[float, tuple[int, ...]]] = {}
        for node, positions in self.nodes.items():
            fitting = [
                p
                for p in positions
                if self.open[p] and self.free[p] >= item.size - _EPS and (not self.tenants[p] or not item.dedicated)
            ]
            for group in combinations(fitting, item.width):
                if group < after:
                    continue
                alike = (node, tuple(sorted((round(self.free[p], 3), self.tenants[p] > 0) for p in group)))
                if alike not in found:
                    left = sum(self.free[p] for p in group) - item.total
                    found[alike] = (left, group)
        yield from (group for _, group in sorted(found.values()))

    def take(self, item: Item, group: tuple[int, ...]) -> None:
        self.chosen[item.name] = group
        for p in group:
            self.free[p] -= item.size
            self.tenants[p] += 1
            if item.dedicated:
                self.open[p] = False

    def give_back(self, item: Item, group: tuple[int, ...]) -> None:
        del self.chosen[item.name]
        for p in group:
            self.free[p] += item.size
            self.tenants[p] -= 1
            self.open[p] = True  # only open GPUs are taken, so each was open before
