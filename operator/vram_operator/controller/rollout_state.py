"""Where a GpuAssignment's rollout stands, read afresh from the API at every check (pure).

The state of record is in the API, never in the operator's memory: the assignment's
`status.rollout` (pending, restarted, stopped, healthy) and two annotations on each server, the
pin (annotations.ASSIGNED) and the stop (annotations.STOPPED, naming the assignment). So a
rollout recomputed after its stop wave starts the servers it stopped instead of stopping them
again, and a deleted assignment can give back exactly what it holds.

A server counts as arrived only when a pod rendered for its new placement (node, GPUs, budget)
is scheduled there and Ready, and a stopped server counts as stopped only when its pods are gone:
until then the old pods may still hold their GPU memory, and the next wave waits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vram_operator.api.base import Condition
from vram_operator.api.gpu_assignment import (
    GpuAssignmentSpec,
    GpuAssignmentStatus,
    PlanEntry,
    RollbackRecord,
    RolloutStatus,
)
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller import annotations as notes
from vram_operator.controller.conditions import set_condition
from vram_operator.controller.pods import PodFacts
from vram_operator.controller.server_status import Outcome
from vram_operator.placement.demand import ManualAssignment

WAITING_LISTED = 5  # servers named in the Applied condition's message; the rest are counted


def assigned_pin(server: InferenceServer) -> ManualAssignment | None:
    """The pin a rollout left on the server, on the terms that still hold (annotations.AssignedPlacement)."""
    annotations = server.metadata.annotations
    assigned = notes.assigned_placement(annotations)
    if assigned is None:
        return None
    planned = assigned.as_planned(server.metadata.generation, notes.utilization_override(annotations))
    return ManualAssignment(
        server.key,
        assigned.node,
        assigned.gpus,
        assigned.budget_mib if planned or assigned.budget_override else None,
        overcommit=planned and assigned.overcommit,
    )


def pin_refused(outcome: Outcome, assigned: notes.AssignedPlacement | None) -> Outcome:
    """An unplaced pinned server says which assignment pinned it (the pin is what refuses it)."""
    if assigned is None or outcome.placement is not None or outcome.estimate_error is not None:
        return outcome
    where = f"GpuAssignment {assigned.assignment} (revision {assigned.revision}) pins it to {assigned.node}"
    return dataclasses.replace(outcome, unplaced_message=f"{outcome.unplaced_message} ({where})")


def new_pods(server: InferenceServer, pods: Sequence[PodFacts]) -> list[PodFacts]:
    """The server's pods rendered for its replica 0's current placement, not being deleted."""
    placement = server.status.placement if server.status else None
    if placement is None:
        return []
    uuids = [g.uuid for g in placement.gpus]
    return [p for p in pods if not p.terminating and p.runs_on(placement.node, uuids, placement.budget_mib)]


def placed_as_planned(server: InferenceServer, entry: PlanEntry) -> bool:
    placement = server.status.placement if server.status else None
    return placement is not None and placement.node == entry.node and [g.uuid for g in placement.gpus] == entry.gpus


def arrived(server: InferenceServer | None, entry: PlanEntry, pods: Sequence[PodFacts]) -> bool:
    """The server is placed where the plan put it and a pod of that placement is Ready there."""
    if server is None or not placed_as_planned(server, entry):
        return False
    return any(pod.ready for pod in new_pods(server, pods))


def placed_condition(server: InferenceServer) -> Condition | None:
    return next((c for c in server.status.conditions if c.type == "Placed"), None) if server.status else None


def pin_kept_out(server: InferenceServer, name: str, entry: PlanEntry) -> bool:
    """The server's own reconcile took assignment `name`'s pin (its placement names it) and could not
    place there (its pinned GPU lost since the plan, say): it runs what it could elsewhere, the pinned
    replicas unplaced (Placed=True PartiallyPlaced). It will not arrive until the pin can be honoured."""
    placement = server.status.placement if server.status else None
    placed = placed_condition(server)
    return (
        placement is not None
        and placement.assignment == name
        and not placed_as_planned(server, entry)
        and placed is not None
        and placed.reason == "PartiallyPlaced"
    )


def refused(server: InferenceServer, name: str, entry: PlanEntry) -> bool:
    """The server's own reconcile refused its placement: Placed=False, or the pin kept it out."""
    placed = placed_condition(server)
    return (placed is not None and placed.status == "False") or pin_kept_out(server, name, entry)


def waiting_for(server: InferenceServer, name: str, entry: PlanEntry, pods: Sequence[PodFacts]) -> str:
    """What a restarted server that has not arrived waits for, in one phrase."""
    placed = placed_condition(server)
    if placed is not None and placed.status == "False":
        return f"{server.key} not placed: {placed.reason}: {placed.message}"
    if placed is not None and pin_kept_out(server, name, entry):
        return f"{server.key} not placed on {entry.node} as planned: {placed.reason}: {placed.message}"
    if not placed_as_planned(server, entry):
        return f"{server.key} not yet placed on {entry.node}"
    there = new_pods(server, pods)
    if not there:
        return f"{server.key}: its new pod is not scheduled on {entry.node} yet"
    return f"{server.key}: its new pod on {entry.node} is not Ready ({len(there)} there)"


@dataclass(frozen=True)
class Progress:
    """A rollout's servers by where they stand; `waiting` says what the rollout waits for."""

    healthy: tuple[str, ...] = ()
    in_flight: tuple[str, ...] = ()  # started on their new placement, not arrived yet
    pending: tuple[str, ...] = ()  # not started yet (the stopped ones among them)
    stopped: tuple[str, ...] = ()  # scaled to zero by a wave, not started yet
    draining: tuple[str, ...] = ()  # stopped, but pods of theirs are still there
    waiting: tuple[str, ...] = ()
    blocked: bool = False  # a started server's own reconcile refuses its placement
    unplaced: tuple[str, ...] = ()  # servers the plan could not place, with the planner's reason

    @property
    def done(self) -> bool:
        return not (self.in_flight or self.pending)

    @property
    def wave_due(self) -> bool:
        """Nothing in flight, every stopped server's pods gone, and servers left to move."""
        return bool(self.pending) and not self.in_flight and not self.draining


def progress(
    name: str,
    rollout: RolloutStatus,
    plan: Mapping[str, PlanEntry],
    servers: Mapping[str, InferenceServer],
    pods: Mapping[str, Sequence[PodFacts]],
) -> Progress:
    """Where each server of the rollout stands now (a deleted server is no longer waited for)."""
    healthy, in_flight, waiting = [], [], []
    blocked = False
    for key in rollout.restarted:
        server, entry = servers.get(key), plan.get(key)
        if key in rollout.healthy or (entry is not None and arrived(server, entry, pods.get(key, ()))):
            healthy.append(key)
        elif server is not None and entry is not None:
            in_flight.append(key)
            waiting.append(waiting_for(server, name, entry, pods.get(key, ())))
            blocked = blocked or refused(server, name, entry)
    pending = [k for k in rollout.pending if k in servers and k not in in_flight]
    stopped = [
        k
        for k in pending
        if k in rollout.stopped or notes.stopped_by(servers[k].metadata.annotations) in (name, "true")
    ]
    draining = [k for k in stopped if pods.get(k)]
    waiting += [f"{k}: its stopped pods to go" for k in draining]
    return Progress(
        unplaced=unplaced(plan.values()),
        healthy=tuple(healthy),
        in_flight=tuple(in_flight),
        pending=tuple(pending),
        stopped=tuple(stopped),
        draining=tuple(draining),
        waiting=tuple(waiting),
        blocked=blocked,
    )


def unplaced(plan: Iterable[PlanEntry]) -> tuple[str, ...]:
    """The plan's servers it could not place (a pin onto a cordoned node, say), each with why."""
    return tuple(f"{e.server}: {e.reason}" for e in plan if e.node is None)


def listing(items: Sequence[str]) -> str:
    listed = "; ".join(items[:WAITING_LISTED])
    more = len(items) - WAITING_LISTED
    return f"{listed}; and {more} more" if more > 0 else listed


def applied_condition(state: Progress) -> tuple[bool, str, str]:
    """(status, reason, message) of the Applied condition: RolloutDone; NotPlaced when the rollout is
    done but the plan left servers unplaced; else RollingOut / RolloutBlocked with what it waits for."""
    message = (
        f"{len(state.healthy)} healthy, {len(state.in_flight)} restarting, {len(state.pending)} pending"
        f" ({len(state.stopped)} stopped)"
    )
    if state.waiting:
        message += f"; waiting for {listing(state.waiting)}"
    if state.unplaced:
        message += f"; not placed: {listing(state.unplaced)}"
    if not state.done:
        return False, "RolloutBlocked" if state.blocked else "RollingOut", message
    if state.unplaced:
        return False, "NotPlaced", message
    return True, "RolloutDone", message


def rollback_due(spec: GpuAssignmentSpec, status: GpuAssignmentStatus) -> bool:
    """rollbackToRevision acts once: when it is set to a revision it has not rolled back to yet."""
    wanted = spec.rollback_to_revision
    done = status.rolled_back
    return wanted is not None and (done is None or done.to_revision != wanted)


def release(server: InferenceServer, name: str, rollout: RolloutStatus | None) -> dict[str, str | None]:
    """The annotation changes that give a server back when assignment `name` goes: its pin, and the
    stop of a server it scaled to zero (the server's own reconcile then starts it where it stands)."""
    annotations = server.metadata.annotations
    update: dict[str, str | None] = {}
    pin = notes.assigned_placement(annotations)
    if pin is not None and pin.assignment == name:
        update[notes.ASSIGNED] = None
    ours = {*rollout.stopped, *rollout.pending} if rollout else set()
    stopper = notes.stopped_by(annotations)
    if stopper == name or (stopper == "true" and server.key in ours):
        update[notes.STOPPED] = None
    return update


def stopped_outside(name: str, servers: Sequence[InferenceServer], moving: Collection[str]) -> list[InferenceServer]:
    """Servers assignment `name` stopped that its new revision no longer moves: they start where they stand."""
    return [s for s in servers if s.key not in moving and notes.stopped_by(s.metadata.annotations) == name]


def rollback_condition(
    conditions: Sequence[Condition],
    record: RollbackRecord | None,
    applied_revision: int | None,
    *,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """RolledBack: True while the rollback is the revision in effect; False (RollbackSuperseded) once
    a later spec change was applied over it while the field still names it; gone with the field."""
    if record is None:
        return [c for c in conditions if c.type != "RolledBack"]
    restored = (
        f"revision {record.to_revision} was restored as revision {record.revision} at generation {record.generation}"
    )
    if applied_revision == record.revision:
        return set_condition(
            conditions,
            "RolledBack",
            True,
            "RolledBack",
            f"{restored}; it acts once: later spec changes apply as usual",
            generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        "RolledBack",
        False,
        "RollbackSuperseded",
        f"{restored}; revision {applied_revision} applied the spec since. rollbackToRevision acts once: "
        "clear it, or set another revision to roll back again",
        generation=generation,
        now=now,
    )
