"""Decisions in batches: concurrent reconciles share one planner run under the book's lock.

One planning run costs about the same for one server as for a hundred (building the inventory
dominates), so the reconciles that arrive while a run is going on wait and go together in the
next one. The single-writer rule is kept: every run holds the book's lock from reading the
standing reservations to recording its own. What every decision reads from the API server (the
measured runs) is read once per batch, not once per server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus
from vram_operator.controller.book import ReservationBook
from vram_operator.controller.decision import Decided, Inputs, decide
from vram_operator.controller.server_status import Outcome, replica_statuses
from vram_operator.placement.demand import ManualAssignment
from vram_operator.render import LlamaCppLaunch

log = logging.getLogger(__name__)

# (servers standing besides the batch, given the batch's keys) -> inputs of the planning run
InputsFor = Callable[[frozenset[str]], Inputs]
# Brings what every decision reads up to date (awaited once before each batch).
Refresh = Callable[[], Awaitable[None]]


@dataclass
class Request:
    server: InferenceServer
    pins: Sequence[ManualAssignment]
    config_maps: dict[tuple[str, str], dict[str, str]]
    inputs_for: InputsFor
    refresh: Refresh | None = None
    result: asyncio.Future[tuple[Outcome, LlamaCppLaunch | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class DecisionBatcher:
    book: ReservationBook
    queue: list[Request] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None
    runs: int = 0  # planning runs made (for tests and metrics)

    async def decide(
        self,
        server: InferenceServer,
        pins: Sequence[ManualAssignment],
        config_maps: dict[tuple[str, str], dict[str, str]],
        inputs_for: InputsFor,
        refresh: Refresh | None = None,
    ) -> tuple[Outcome, LlamaCppLaunch | None]:
        """The decision for one server, made in the next batch; its reservation is held in the book.

        The batch reads its inputs through the newest request's `inputs_for`, after awaiting its
        `refresh` (the requests queued meanwhile join the batch)."""
        request = Request(server, pins, config_maps, inputs_for, refresh)
        self.queue.append(request)
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._run())
        return await request.result

    async def _run(self) -> None:
        while self.queue:
            await asyncio.sleep(0)  # let the reconciles that are ready now join this batch
            refresh = self.queue[-1].refresh
            if refresh is not None:
                await _refreshed(refresh)
            batch, self.queue = self.queue, []
            async with self.book.lock:
                try:
                    self._decide(batch)
                except Exception as error:  # never leave a reconcile waiting forever
                    for request in batch:
                        if not request.result.done():
                            request.result.set_exception(error)

    def _decide(self, batch: list[Request]) -> None:
        latest = {r.server.key: r for r in batch}  # a server queued twice: its newest request wins
        base = batch[-1].inputs_for(frozenset(latest))
        inputs = replace(base, config_maps={k: v for r in latest.values() for k, v in r.config_maps.items()})
        requests = list(latest.values())
        decided = decide([r.server for r in requests], inputs, [p for r in requests for p in r.pins])
        if decided.run_error is not None and len(requests) > 1:
            decided = _one_by_one(requests, inputs)  # one server's error must not fail its batch
        self.runs += 1
        for key in latest:
            outcome = decided.outcomes[key]
            self.book.hold(key, outcome.placement, replica_statuses(outcome))
        for request in batch:
            key = request.server.key
            if not request.result.done():
                request.result.set_result((decided.outcomes[key], decided.launches.get(key)))


async def _refreshed(refresh: Refresh) -> None:
    """Await a refresh; one that fails leaves the batch to decide from what was read last."""
    try:
        await refresh()
    except Exception:
        log.exception("cannot refresh the inputs of a decision; deciding from what was read last")


def _one_by_one(requests: list[Request], inputs: Inputs) -> Decided:
    """Each server alone, later ones seeing the earlier ones' reservations."""
    outcomes: dict[str, Outcome] = {}
    launches: dict[str, LlamaCppLaunch] = {}
    reserved = list(inputs.reserved)
    for request in requests:
        key = request.server.key
        decided = decide([request.server], replace(inputs, reserved=list(reserved)), request.pins)
        outcomes[key] = decided.outcomes[key]
        if key in decided.launches:
            launches[key] = decided.launches[key]
        placement = outcomes[key].placement
        if placement is not None:
            held = (request.server.status or InferenceServerStatus()).model_copy(
                update={"placement": placement, "replica_placements": replica_statuses(outcomes[key])}
            )
            reserved.append(request.server.model_copy(update={"status": held}))
    return Decided(outcomes, launches, ())
