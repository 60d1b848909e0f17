"""The small search structures behind the planner, against brute force."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given
from hypothesis import strategies as st

from vram_operator.placement.exchange import best_fill
from vram_operator.placement.first_fit import NONE, FirstFitIndex


@given(st.lists(st.integers(1, 100), max_size=12), st.integers(0, 250))
def test_best_fill_is_the_best_single_or_pair(sizes: list[int], room: int) -> None:
    ordered = sorted(float(s) for s in sizes)
    chosen = best_fill(ordered, room)
    options = [()] + [(i,) for i in range(len(ordered))] + list(combinations(range(len(ordered)), 2))
    best = max(sum(ordered[i] for i in option) for option in options if sum(ordered[i] for i in option) <= room)
    assert len(set(chosen)) == len(chosen) <= 2
    assert sum(ordered[i] for i in chosen) == best


@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), min_size=1, max_size=40), st.integers(0, 60))
def test_first_fit_index_finds_the_lowest_position_with_room(values: list[int | None], need: int) -> None:
    index = FirstFitIndex(len(values))
    for position, value in enumerate(values):
        index.set(position, 99)  # overwritten below: the tree must follow updates both ways
        index.set(position, NONE if value is None else value)
    expected = next((i for i, v in enumerate(values) if v is not None and v >= need), None)
    assert index.first_at_least(need) == expected
