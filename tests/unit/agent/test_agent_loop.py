"""The loop of the agent and of the simulated runtime: a step every interval until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from vram_operator.agent.main import run_every


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """run_every installs handlers for SIGTERM and SIGINT: the test process gets its own back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_steps_until_a_signal_and_not_after_it(own_handlers: None, signum: int) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 3:
            os.kill(os.getpid(), signum)

    run_every(0.0, step)
    assert calls == [0, 1, 2]
