"""Delta debugging (Zeller's ddmin) over a failing step list, with a bounded number of replays.

Each replay on the cluster costs tens of seconds, so the search stops after `budget` replays and
returns the smallest failing list found so far (always one that was seen to fail).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shrunk(Generic[T]):
    items: list[T]
    replays: int
    complete: bool  # False: the budget ran out before the list was 1-minimal


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], budget: int) -> Shrunk[T]:
    """The smallest sub-list (order kept) of `items` for which `fails` is true that ddmin finds in
    at most `budget` calls of `fails`. `items` itself is assumed to fail and is not replayed."""
    replays = 0
    seen: dict[tuple[int, ...], bool] = {}
    current = list(range(len(items)))
    granularity = 2
    while len(current) >= 2:
        chunks = _split(current, granularity)
        # Each chunk alone (n=2: the complements are the chunks themselves), then each complement.
        complements = [_without(current, chunk) for chunk in chunks] if granularity > 2 else []
        found: list[int] | None = None
        for candidate in chunks + complements:
            key = tuple(candidate)
            if key not in seen:
                if replays >= budget:
                    return Shrunk([items[i] for i in current], replays, complete=False)
                replays += 1
                seen[key] = fails([items[i] for i in candidate])
            if seen[key]:
                found = candidate
                break
        if found is not None:
            granularity = 2 if any(found == chunk for chunk in chunks) else max(granularity - 1, 2)
            current = found
        elif granularity >= len(current):
            break
        else:
            granularity = min(granularity * 2, len(current))
    return Shrunk([items[i] for i in current], replays, complete=True)


def _split(indices: list[int], parts: int) -> list[list[int]]:
    size, extra = divmod(len(indices), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        if end > start:
            chunks.append(indices[start:end])
        start = end
    return chunks


def _without(indices: list[int], chunk: list[int]) -> list[int]:
    drop = set(chunk)
    return [i for i in indices if i not in drop]
