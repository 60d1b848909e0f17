"""Safe start order for servers that move between GPUs.

A moving server's Deployment uses the Recreate strategy, so its old pod stops before its new one
starts: a server may count its own old reservation. Memory that other movers free is only
counted once their wave has finished, so vLLM's start-up check (free >= utilization x total)
always sees the memory a server needs. When no mover fits (a cycle), the remaining movers are
stopped first in a wave of their own, then started.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Move:
    """A server whose placement changes: MiB it holds now and will hold, per GPU UUID."""

    server: str
    old: Mapping[str, float] = field(default_factory=dict)
    new: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Wave:
    """Scale `stop` to zero, then roll out `start`; the next wave waits until this one is done."""

    stop: tuple[str, ...] = ()
    start: tuple[str, ...] = ()


def _net_need(move: Move) -> float:
    return sum(move.new.values()) - sum(move.old.values())


def safe_waves(moves: Sequence[Move], free_mib: Mapping[str, float], stopped: Collection[str] = ()) -> list[Wave]:
    """Waves that never start a server before the memory it needs is free.

    `free_mib` is the memory free per GPU now, with every server at its old place. Servers that
    free memory go first. If even stopping every remaining mover cannot make room, the rest start
    in one last wave (the plan itself over-commits; the planner has already warned). `stopped`
    names movers an earlier wave already stopped (their `old` is empty): they are never stopped
    again, so a rollout recomputed after its stop wave goes on to start them.
    """
    free: dict[str, float] = defaultdict(float, free_mib)
    remaining = sorted(moves, key=lambda m: (_net_need(m), m.server))
    stopped = set(stopped)
    waves: list[Wave] = []
    while remaining:
        taken: dict[str, float] = defaultdict(float)
        released: dict[str, float] = defaultdict(float)
        started: list[Move] = []
        for move in remaining:
            own = {} if move.server in stopped else move.old
            consumption = {gpu: max(0.0, mib - own.get(gpu, 0.0)) for gpu, mib in move.new.items()}
            if all(need <= free[gpu] - taken[gpu] for gpu, need in consumption.items()):
                started.append(move)
                for gpu, need in consumption.items():
                    taken[gpu] += need
                for gpu, mib in own.items():
                    released[gpu] += max(0.0, mib - move.new.get(gpu, 0.0))
        if started:
            waves.append(Wave(start=tuple(m.server for m in started)))
            for gpu, mib in taken.items():
                free[gpu] -= mib
            for gpu, mib in released.items():
                free[gpu] += mib
            names = {m.server for m in started}
            remaining = [m for m in remaining if m.server not in names]
            continue
        to_stop = [m for m in remaining if m.server not in stopped]
        if not to_stop:
            waves.append(Wave(start=tuple(m.server for m in remaining)))
            break
        waves.append(Wave(stop=tuple(m.server for m in to_stop)))
        for move in to_stop:
            stopped.add(move.server)
            for gpu, mib in move.old.items():
                free[gpu] += mib
    return waves
