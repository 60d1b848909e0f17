"""Choosing which unplaced servers fill a GPU best: the largest single or pair that fits a room."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def best_fill(sizes: Sequence[float], room: float) -> tuple[int, ...]:
    """Indices of one or two of `sizes` (sorted ascending) with the largest total <= `room` (() if none fits)."""
    last = bisect_right(sizes, room) - 1
    if last < 0:
        return ()
    best: tuple[int, ...] = (last,)
    best_total = sizes[last]
    low, high = 0, last
    while low < high:
        total = sizes[low] + sizes[high]
        if total > room:
            high -= 1
            continue
        if total > best_total:
            best, best_total = (low, high), total
        low += 1
    return best
