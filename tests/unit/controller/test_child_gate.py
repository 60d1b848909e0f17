"""The child gate: children wait while decisions are pending (one that waited long goes, one at a
time), and go the pool's width at once while none is."""

from __future__ import annotations

import asyncio

import pytest

from vram_operator.controller.child_gate import ChildGate

WIDTH = 4
LONG = 60.0  # a patience no test reaches


async def _hold(gate: ChildGate, name: str, started: list[str], release: asyncio.Event) -> None:
    async with gate.apply_slot():
        started.append(name)
        await release.wait()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_without_decisions_the_gate_admits_its_width_and_no_more() -> None:
    async def run() -> tuple[list[str], list[str]]:
        gate, started, release = ChildGate(WIDTH, LONG), [], asyncio.Event()
        tasks = [asyncio.create_task(_hold(gate, f"c{i}", started, release)) for i in range(WIDTH + 1)]
        await _settle()
        first = list(started)
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return first, started

    first, started = asyncio.run(run())
    assert first == [f"c{i}" for i in range(WIDTH)]  # the width, not one more
    assert started == [f"c{i}" for i in range(WIDTH + 1)]


def test_while_a_decision_is_pending_children_wait_then_go_the_width_in_order() -> None:
    async def run() -> tuple[list[str], list[str], list[str], int]:
        gate, started, release = ChildGate(WIDTH, LONG), [], asyncio.Event()
        with gate.decision():
            tasks = [asyncio.create_task(_hold(gate, f"c{i}", started, release)) for i in range(WIDTH + 2)]
            await _settle()
            while_deciding = list(started)
        await _settle()
        after_decision = list(started)
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return while_deciding, after_decision, started, gate.applying

    while_deciding, after_decision, started, applying = asyncio.run(run())
    assert while_deciding == []
    assert after_decision == [f"c{i}" for i in range(WIDTH)]
    assert started == [f"c{i}" for i in range(WIDTH + 2)]
    assert applying == 0


def test_children_wait_until_the_last_pending_decision_is_done() -> None:
    async def run() -> tuple[list[str], list[str]]:
        gate, started, release = ChildGate(WIDTH, LONG), [], asyncio.Event()
        release.set()
        first, second = gate.decision(), gate.decision()
        first.__enter__()
        second.__enter__()
        task = asyncio.create_task(_hold(gate, "c", started, release))
        await _settle()
        first.__exit__(None, None, None)
        await _settle()
        one_still_pending = list(started)
        second.__exit__(None, None, None)
        await asyncio.wait_for(task, 5)
        return one_still_pending, started

    one_still_pending, started = asyncio.run(run())
    assert one_still_pending == []
    assert started == ["c"]


def test_a_child_that_waited_its_patience_goes_one_at_a_time_while_decisions_go_on() -> None:
    patience = 0.05

    async def run() -> tuple[list[str], list[str], list[str], int]:
        gate, started, release = ChildGate(WIDTH, patience), [], asyncio.Event()
        with gate.decision():
            tasks = [asyncio.create_task(_hold(gate, f"c{i}", started, release)) for i in range(3)]
            await asyncio.sleep(patience / 2)
            before_patience = list(started)
            await asyncio.sleep(patience * 2)
            after_patience = list(started)  # one goes; the next waits for a slot, not for the decision
            release.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            return before_patience, after_patience, started, gate.deciding

    before_patience, after_patience, started, deciding = asyncio.run(run())
    assert before_patience == []
    assert after_patience == ["c0"]
    assert started == ["c0", "c1", "c2"]  # all applied while the decision was still pending
    assert deciding == 1


def test_a_decision_that_starts_while_children_apply_holds_back_the_next_ones() -> None:
    async def run() -> tuple[list[str], list[str]]:
        gate, started, first_release, second_release = ChildGate(WIDTH, LONG), [], asyncio.Event(), asyncio.Event()
        running = [asyncio.create_task(_hold(gate, f"a{i}", started, first_release)) for i in range(2)]
        await _settle()
        with gate.decision():
            waiting = [asyncio.create_task(_hold(gate, f"b{i}", started, second_release)) for i in range(2)]
            await _settle()
            first_release.set()
            await asyncio.wait_for(asyncio.gather(*running), 5)
            await _settle()
            held = list(started)
        second_release.set()
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        return held, started

    held, started = asyncio.run(run())
    assert held == ["a0", "a1"]  # those already applying finish; none more while deciding
    assert started == ["a0", "a1", "b0", "b1"]


def test_a_cancelled_waiter_gives_no_slot_away() -> None:
    async def run() -> tuple[list[str], int]:
        gate, started, release = ChildGate(1, LONG), [], asyncio.Event()
        first = asyncio.create_task(_hold(gate, "first", started, release))
        await _settle()
        cancelled = asyncio.create_task(_hold(gate, "cancelled", started, release))
        last = asyncio.create_task(_hold(gate, "last", started, release))
        await _settle()
        cancelled.cancel()
        release.set()
        await asyncio.wait_for(asyncio.gather(first, last), 5)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        return started, gate.applying

    started, applying = asyncio.run(run())
    assert started == ["first", "last"]
    assert applying == 0


def test_a_waiter_cancelled_after_its_slot_was_handed_over_passes_it_on() -> None:
    async def run() -> tuple[list[str], list[str], int]:
        gate, started, release = ChildGate(1, LONG), [], asyncio.Event()
        with gate.decision():
            handed = asyncio.create_task(_hold(gate, "handed", started, release))
            last = asyncio.create_task(_hold(gate, "last", started, release))
            await _settle()
        handed.cancel()  # the decision's end handed it the slot; it is cancelled before it runs
        await _settle()
        before_release = list(started)
        release.set()
        await asyncio.wait_for(last, 5)  # a slot lost would leave "last" waiting
        with pytest.raises(asyncio.CancelledError):
            await handed
        return before_release, started, gate.applying

    before_release, started, applying = asyncio.run(run())
    assert before_release == ["last"]  # the slot went on to the next waiter
    assert started == ["last"]
    assert applying == 0
