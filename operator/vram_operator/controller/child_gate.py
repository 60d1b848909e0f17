"""Children after decisions: while any decision is being made or written, child applies wait; while
none is, as many go at once as the child pool has threads.

A flood of new servers then reaches the API server as statuses first (where each server goes: what
its user waits for) and as children after: each child apply brings the API server more work (the
controllers' ReplicaSet, Endpoints, EndpointSlice and ClusterIP writes), and in a flood of 1,000
servers that work, interleaved, slowed the decisions by a third. So that decisions that never stop
cannot starve children, a child that has waited `patience` seconds goes anyway, one at a time.
Slots are handed over in the order they were asked for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

# A flood of a thousand servers is decided in about ten seconds on a small control plane.
PATIENCE_SECONDS = 10.0


@dataclass
class ChildGate:
    width: int  # child applies at once while no decision is pending
    patience: float = PATIENCE_SECONDS
    deciding: int = 0
    applying: int = 0
    # Applies waiting for a slot, oldest first, with the loop time each began to wait; a waiter is
    # woken with its slot already counted in `applying`.
    waiting: deque[tuple[float, asyncio.Future[None]]] = field(default_factory=deque)

    def _limit(self, now: float) -> int:
        if not self.deciding:
            return self.width
        waited_long = bool(self.waiting) and now - self.waiting[0][0] >= self.patience
        return 1 if waited_long else 0

    @contextmanager
    def decision(self) -> Iterator[None]:
        """Held from a decision's start until its status is written (or it fails)."""
        self.deciding += 1
        try:
            yield
        finally:
            self.deciding -= 1
            self._hand_over()

    @asynccontextmanager
    async def apply_slot(self) -> AsyncIterator[None]:
        """Held around one child apply."""
        loop = asyncio.get_running_loop()
        if not self.waiting and self.applying < self._limit(loop.time()):
            self.applying += 1
        else:
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiting.append((loop.time(), waiter))
            loop.call_later(self.patience, self._hand_over)  # its patience may run out before any change
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # a slot was handed over: pass it on
                    self.applying -= 1
                    self._hand_over()
                raise
        try:
            yield
        finally:
            self.applying -= 1
            self._hand_over()

    def _hand_over(self) -> None:
        if not self.waiting:
            return
        now = asyncio.get_running_loop().time()
        while self.waiting:
            if self.waiting[0][1].done():  # cancelled while waiting
                self.waiting.popleft()
                continue
            if self.applying >= self._limit(now):
                return
            _, waiter = self.waiting.popleft()
            self.applying += 1
            waiter.set_result(None)
