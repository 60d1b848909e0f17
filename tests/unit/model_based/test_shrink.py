"""Delta debugging over step lists: what it returns still fails, is a sub-list, and is 1-minimal
when the replay budget allows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from model_based.shrink import ddmin


def is_sublist(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=40, unique=True), st.data())
def test_the_result_fails_keeps_order_and_is_one_minimal(items: list[int], data: st.DataObject) -> None:
    culprits = set(data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=3)))

    def fails(candidate: list[int]) -> bool:
        return culprits <= set(candidate)

    shrunk = ddmin(items, fails, budget=10_000)
    assert shrunk.complete
    assert fails(shrunk.items) and is_sublist(shrunk.items, items)
    # 1-minimal: removing any one step makes it pass; here that means exactly the culprits.
    assert sorted(shrunk.items) == sorted(culprits)


def test_an_order_dependent_failure_keeps_both_steps_in_order() -> None:
    def fails(candidate: list[str]) -> bool:
        return "lose" in candidate and "create" in candidate and candidate.index("create") < candidate.index("lose")

    shrunk = ddmin(["a", "create", "b", "c", "lose", "d", "e"], fails, budget=100)
    assert shrunk.items == ["create", "lose"]


def test_the_budget_bounds_the_replays_and_keeps_a_failing_list() -> None:
    calls: list[int] = []

    def fails(candidate: list[int]) -> bool:
        calls.append(len(candidate))
        return 7 in candidate and 13 in candidate

    shrunk = ddmin(list(range(32)), fails, budget=3)
    assert len(calls) == shrunk.replays == 3
    assert not shrunk.complete
    assert fails(shrunk.items) and len(shrunk.items) < 32  # progress within the budget


def test_a_budget_of_zero_replays_nothing() -> None:
    shrunk = ddmin([1, 2, 3], lambda candidate: True, budget=0)
    assert (shrunk.items, shrunk.replays, shrunk.complete) == ([1, 2, 3], 0, False)
