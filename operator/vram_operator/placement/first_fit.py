"""Find the first GPU (in (node, index) order) with at least some free memory, in O(log n).

A max segment tree over GPU positions: each leaf holds a GPU's free memory, or -inf when the GPU
may not take the kind of server asked about. The planner's packing pass (first fit decreasing)
uses it so that it stays fast on fleets of thousands of GPUs.
"""

from __future__ import annotations

NONE = float("-inf")


class FirstFitIndex:
    """Leaves 0..size-1; `first_at_least(x)` is the lowest position whose value is >= x."""

    def __init__(self, size: int) -> None:
        self.width = 1
        while self.width < max(size, 1):
            self.width *= 2
        self.tree = [NONE] * (2 * self.width)

    def set(self, position: int, value: float) -> None:
        node = position + self.width
        self.tree[node] = value
        node //= 2
        while node:
            best = max(self.tree[2 * node], self.tree[2 * node + 1])
            if self.tree[node] == best:
                break  # ancestors are unchanged too
            self.tree[node] = best
            node //= 2

    def first_at_least(self, value: float) -> int | None:
        if self.tree[1] < value:
            return None
        node = 1
        while node < self.width:
            node = 2 * node if self.tree[2 * node] >= value else 2 * node + 1
        return node - self.width
