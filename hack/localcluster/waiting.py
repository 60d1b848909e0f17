"""Polling until the cluster reaches a state: everything here is eventually consistent."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(RuntimeError):
    """The awaited state was not reached in time."""


def eventually(produce: Callable[[], T], what: str, timeout: float, interval: float = 0.25) -> T:
    """Call `produce` until it returns something truthy and return that; raise WaitTimeoutError
    naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = produce()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
