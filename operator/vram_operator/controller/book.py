"""The operator's reservation book: statuses are the state of record, plus decisions in flight.

One asyncio.Lock makes decide + record a single writer, so two concurrent creates can never
both take the last free MiB of a GPU. A decision is held here the moment it is made (before its
status patch lands), dropped if the patch fails, and forgotten once the InferenceServer index
shows the same placement. On restart the book starts empty and the index (rebuilt from the
statuses) is the whole truth: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence

from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerStatus,
    PlacementStatus,
    ReplicaPlacementStatus,
)
from vram_operator.controller.assignment import same_placement


class ReservationBook:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        # server key -> its decided placement (None: decided to hold nothing, e.g. unplaced/deleted)
        self._pending: dict[str, PlacementStatus | None] = {}
        # server key -> every replica's decided placement (each holds a budget of its own)
        self._replicas: dict[str, list[ReplicaPlacementStatus]] = {}
        # server key -> (stored object, the stored object with its pending decision laid over it): made
        # once per decision and stored version, not once per reader (hold and drop forget it)
        self._overlaid: dict[str, tuple[InferenceServer, InferenceServer]] = {}

    def hold(
        self, key: str, placement: PlacementStatus | None, replicas: Sequence[ReplicaPlacementStatus] = ()
    ) -> None:
        """Record a decision before its status patch is written: `placement` (replica 0) and, with
        replicas, every replica's placement."""
        self._pending[key] = placement
        self._replicas[key] = list(replicas)
        self._overlaid.pop(key, None)

    def drop(self, key: str) -> None:
        """Forget a decision (its patch failed, or the index now shows it)."""
        self._pending.pop(key, None)
        self._replicas.pop(key, None)
        self._overlaid.pop(key, None)

    @property
    def pending(self) -> Mapping[str, PlacementStatus | None]:
        return dict(self._pending)

    def standing(
        self, indexed: Iterable[InferenceServer], *, exclude: str | Collection[str] = ()
    ) -> list[InferenceServer]:
        """Servers whose reservations stand: the indexed statuses overlaid with pending decisions.

        Pending decisions the index already reflects are forgotten here (settled), and so are those
        of servers no longer indexed (deleted: their reservation goes with them).
        """
        excluded = {exclude} if isinstance(exclude, str) else set(exclude)
        servers = list(indexed)
        known = {server.key for server in servers}
        for key in [k for k in self._pending if k not in known]:
            self.drop(key)
        result: list[InferenceServer] = []
        for stored in servers:
            key = stored.key
            server = stored
            current = stored.status.placement if stored.status else None
            if key in self._pending:
                decided = self._pending[key]
                replicas = self._replicas.get(key, [])
                if same_placement(decided, current) and _same_replicas(replicas, stored.status):
                    self.drop(key)
                else:
                    server = self._overlay(stored, decided, replicas)
                    current = decided
            if key not in excluded and current is not None and current.gpus:
                result.append(server)
        return result

    def _overlay(
        self, stored: InferenceServer, decided: PlacementStatus | None, replicas: list[ReplicaPlacementStatus]
    ) -> InferenceServer:
        """`stored` with its pending decision as its status (the copy made last while neither changed)."""
        made = self._overlaid.get(stored.key)
        if made is not None and made[0] is stored:
            return made[1]
        status = (stored.status or InferenceServerStatus()).model_copy(
            update={"placement": decided, "replica_placements": replicas}
        )
        server = stored.model_copy(update={"status": status})
        self._overlaid[stored.key] = (stored, server)
        return server


def _same_replicas(decided: list[ReplicaPlacementStatus], status: InferenceServerStatus | None) -> bool:
    """Whether the stored status shows the decided replicas (a decision without them: nothing to compare)."""
    if not decided:
        return True
    stored = status.replica_placements if status else []
    return len(stored) == len(decided) and all(
        a.replica == b.replica and same_placement(a, b) for a, b in zip(decided, stored, strict=True)
    )
