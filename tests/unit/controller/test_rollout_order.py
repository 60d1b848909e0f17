from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from vram_operator.controller.rollout_order import Move, Wave, safe_waves


def simulate(moves: list[Move], free: dict[str, float], waves: list[Wave]) -> None:
    """Replay the waves and assert no start ever sees less free memory than it needs."""
    by_name = {m.server: m for m in moves}
    free = defaultdict(float, free)
    stopped: set[str] = set()
    for wave in waves:
        for name in wave.stop:
            for gpu, mib in by_name[name].old.items():
                free[gpu] += mib
            stopped.add(name)
        taken: dict[str, float] = defaultdict(float)
        released: dict[str, float] = defaultdict(float)
        for name in wave.start:
            move = by_name[name]
            own = {} if name in stopped else move.old
            for gpu, mib in move.new.items():
                need = max(0.0, mib - own.get(gpu, 0.0))
                taken[gpu] += need
                assert taken[gpu] <= free[gpu] + 1e-6, f"{name} starts on {gpu} before memory is free"
            for gpu, mib in own.items():
                released[gpu] += max(0.0, mib - move.new.get(gpu, 0.0))
        for gpu in set(taken) | set(released):
            free[gpu] += released[gpu] - taken[gpu]


def test_server_freeing_memory_goes_before_the_one_needing_it() -> None:
    # A moves off GPU x to y; B moves onto x and needs A's memory there.
    a = Move("ns/a", old={"x": 10000}, new={"y": 10000})
    b = Move("ns/b", old={"z": 8000}, new={"x": 8000})
    waves = safe_waves([b, a], {"x": 2000, "y": 12000, "z": 0})
    assert waves == [Wave(start=("ns/a",)), Wave(start=("ns/b",))]


def test_swap_cycle_stops_both_first() -> None:
    a = Move("ns/a", old={"x": 10000}, new={"y": 10000})
    b = Move("ns/b", old={"y": 10000}, new={"x": 10000})
    waves = safe_waves([a, b], {"x": 0, "y": 0})
    assert waves[0] == Wave(stop=("ns/a", "ns/b"))
    assert set(waves[1].start) == {"ns/a", "ns/b"}


def test_a_mover_stopped_by_an_earlier_wave_is_started_not_stopped_again() -> None:
    # A Manual over-commit: the mover never fits. Its first wave stops it; recomputed after that
    # wave (its old memory gone), the first wave starts it.
    a = Move("ns/a", old={"x": 10000}, new={"y": 30000})
    assert safe_waves([a], {"x": 0, "y": 20000}) == [Wave(stop=("ns/a",)), Wave(start=("ns/a",))]
    stopped = Move("ns/a", new={"y": 30000})
    assert safe_waves([stopped], {"x": 10000, "y": 20000}, stopped={"ns/a"}) == [Wave(start=("ns/a",))]


def test_shrinking_in_place_counts_its_own_memory() -> None:
    a = Move("ns/a", old={"x": 10000}, new={"x": 12000})
    assert safe_waves([a], {"x": 2000}) == [Wave(start=("ns/a",))]


gpus = st.sampled_from(["g0", "g1", "g2", "g3"])
allocation = st.dictionaries(gpus, st.integers(min_value=1, max_value=20000), min_size=1, max_size=2)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Move], dict[str, float]]:
    count = draw(st.integers(min_value=1, max_value=6))
    moves = [Move(f"ns/s{i}", old=draw(allocation), new=draw(allocation)) for i in range(count)]
    # Free memory consistent with the new plan fitting once everything has moved.
    free = {g: float(draw(st.integers(min_value=0, max_value=20000))) for g in ("g0", "g1", "g2", "g3")}
    for gpu, drawn in list(free.items()):
        need = sum(m.new.get(gpu, 0) for m in moves) - sum(m.old.get(gpu, 0) for m in moves)
        free[gpu] = max(drawn, float(need))
    return moves, free


@given(scenarios())
def test_every_mover_starts_once_and_never_before_its_memory_is_free(
    scenario: tuple[list[Move], dict[str, float]],
) -> None:
    moves, free = scenario
    waves = safe_waves(moves, free)
    started = [name for wave in waves for name in wave.start]
    assert sorted(started) == sorted(m.server for m in moves)
    simulate(moves, free, waves)


@given(scenarios(), st.booleans())
def test_recomputed_after_each_wave_the_rollout_still_ends(
    scenario: tuple[list[Move], dict[str, float]], overcommit: bool
) -> None:
    """The operator recomputes the waves at every check from what stands then (a stopped mover
    holds nothing): each mover is stopped at most once and started once, whatever the plan."""
    moves, free = scenario
    free = defaultdict(float, free)
    if overcommit:  # a Manual plan that does not fit even once everything has moved
        free = defaultdict(float, {gpu: 0.0 for gpu in free})
    remaining = {m.server: m for m in moves}
    stopped: set[str] = set()
    started: list[str] = []
    for _ in range(2 * len(moves) + 1):
        if not remaining:
            break
        wave = safe_waves(list(remaining.values()), dict(free), stopped)[0]
        assert not set(wave.stop) & stopped, "a stopped mover stopped again"
        for name in wave.stop:
            for gpu, mib in remaining[name].old.items():
                free[gpu] += mib
            remaining[name] = Move(name, new=remaining[name].new)
            stopped.add(name)
        for name in wave.start:
            move = remaining.pop(name)
            for gpu, mib in move.old.items():
                free[gpu] += mib
            for gpu, mib in move.new.items():
                free[gpu] -= mib
            started.append(name)
            stopped.discard(name)
    assert not remaining, f"the rollout did not end: {sorted(remaining)} left"
    assert sorted(started) == sorted(m.server for m in moves)
