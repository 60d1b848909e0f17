"""GpuAssignment handlers: plan (Preview), roll out (Apply) in a safe order, roll back.

Apply pins each moving server by an annotation (controller.annotations.ASSIGNED) wave by wave;
the server's own reconcile then re-renders its Deployment there. A timer advances the waves: the
next wave starts only when every server of the last one is Running where the plan put it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import kopf
from pydantic import ValidationError

from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_assignment import (
    GpuAssignment,
    GpuAssignmentStatus,
    PlanEntry,
    RolloutStatus,
)
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignment import plan_at_revision, plan_entry, record_revision, select_servers
from vram_operator.controller.assignment_events import EVENT_NAMESPACE, assignment_event
from vram_operator.controller.assignment_owner import (
    CONFLICT,
    NO_CONFLICT,
    OWNED_BY_OTHER,
    Claim,
    claim_of,
    conflict_message,
    held_by_others,
    owners,
    pinned_by,
)
from vram_operator.controller.assignment_plan import overcommits, plan_warnings, preview_inputs
from vram_operator.controller.conditions import condition_status, set_condition
from vram_operator.controller.decision import Inputs, decide
from vram_operator.controller.gpu_view import free_after_reservations, pod_uids_of, process_owners, stale_nodes
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.rollout_order import Move, safe_waves
from vram_operator.controller.runtime import Runtime, first_error, now, plain, rfc3339, values
from vram_operator.controller.server_reconciler import nodes_of
from vram_operator.errors import InputError
from vram_operator.fleet import manual_assignments
from vram_operator.placement.demand import ManualAssignment

ASSIGNMENTS = (GROUP, VERSION, "gpuassignments")
PlannedFrom = tuple[int | None, tuple[object, ...], frozenset[tuple[str, str]]]
log = logging.getLogger(__name__)


def rollback_pins(entries: Sequence[PlanEntry]) -> list[ManualAssignment]:
    """A stored plan as manual pins (its budgets included), so it is restored exactly."""
    return [ManualAssignment(e.server, e.node, tuple(e.gpus), e.budget_mib) for e in entries if e.node and e.gpus]


def stay_pins(servers: Sequence[InferenceServer], pinned: set[str]) -> list[ManualAssignment]:
    """Under Manual, a selected server nobody pinned stays where it runs."""
    stay = []
    for server in servers:
        placement = server.status.placement if server.status else None
        if server.key not in pinned and placement is not None and placement.gpus:
            stay.append(ManualAssignment(server.key, placement.node, tuple(g.uuid for g in placement.gpus)))
    return stay


def moves_for(
    pending: Sequence[str], plan: Mapping[str, PlanEntry], servers: Mapping[str, InferenceServer]
) -> list[Move]:
    """What each pending server holds now (nothing once stopped) and will hold under the plan."""
    moves = []
    for key in pending:
        entry = plan.get(key)
        server = servers.get(key)
        if entry is None or server is None:
            continue
        current = server.status.placement if server.status else None
        stopped = server.metadata.annotations.get(notes.STOPPED) == "true"
        old = {g.uuid: current.budget_mib for g in current.gpus} if current and not stopped else {}
        moves.append(Move(key, old=old, new=dict.fromkeys(entry.gpus, entry.budget_mib)))
    return moves


def arrived(server: InferenceServer | None, entry: PlanEntry) -> bool:
    """The server runs where the plan put it (and is Ready)."""
    placement = server.status.placement if server and server.status else None
    if placement is None or server is None or server.status is None:
        return False
    return (
        placement.node == entry.node
        and [g.uuid for g in placement.gpus] == entry.gpus
        and server.status.phase == "Running"
    )


@dataclass(frozen=True)
class PlanInputs:
    """What plans are made from, as one check sees it; `of` is compared with the last plan's."""

    servers: Sequence[InferenceServer]
    nodes: Sequence[GpuNode]
    stale: frozenset[str]
    owner_of: Mapping[str, str]
    claims: Mapping[str, Claim] = field(default_factory=dict)

    @cached_property
    def fleet(self) -> tuple[object, ...]:
        return preview_inputs(self.servers, self.nodes, self.stale)

    @cached_property
    def owners(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.owner_of.items())

    def of(self, assignment: GpuAssignment) -> PlannedFrom:
        return assignment.metadata.generation, self.fleet, self.owners


class AssignmentReconciler:
    """Plan, roll out and roll back GpuAssignments; the rollout advances from the check loop."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        # The last status written per assignment: newer than the index until the watch event arrives.
        self.written: dict[str, GpuAssignmentStatus] = {}
        # Per assignment, as of its last reconcile: the servers other assignments own (server -> owner),
        # the inputs its plan was made from, and the GPUs its plan over-commits (each warned of once).
        self.held: dict[str, dict[str, str]] = {}
        self.planned_from: dict[str, PlannedFrom] = {}
        self.overcommitted: dict[str, set[str]] = {}
        # One lock per assignment: its handler and the check loop never plan or roll it out at once.
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def write(self, name: str, status: GpuAssignmentStatus) -> None:
        await asyncio.to_thread(self.rt.kube.patch_assignment_status, name, {"status": status.wire()})
        self.written[name] = status

    def latest_status(self, name: str, assignment: GpuAssignment) -> GpuAssignmentStatus | None:
        """What we last wrote for this generation, else the stored status (an object without a status
        is new, perhaps under the name of a deleted one)."""
        mine = self.written.get(name)
        if assignment.status is not None and mine and mine.observed_generation == assignment.metadata.generation:
            return mine
        return assignment.status

    async def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event on the GpuAssignment itself, where `kubectl describe gpuassignment` finds it."""
        event = assignment_event(body, type_, reason, message, now())
        await asyncio.to_thread(self.rt.kube.create_event, EVENT_NAMESPACE, event)

    async def claims(self, servers: Sequence[InferenceServer], index: Mapping[str, Any]) -> dict[str, Claim]:
        """The claim of each assignment that may touch servers (controller.assignment_owner)."""
        assignments = [a for a, _ in values(index)]
        labels: dict[str, dict[str, str]] = {}
        if any(a.spec.namespace_selector for a in assignments):
            labels = await asyncio.to_thread(self.rt.kube.namespace_labels)
        found = [claim_of(a, self.latest_status(a.metadata.name, a), servers, labels) for a in assignments]
        return {c.assignment: c for c in found if c is not None}

    async def reconcile(
        self, body: kopf.Body, name: str, kwargs: Mapping[str, Any], owner_of: Mapping[str, str] | None = None
    ) -> None:
        """Plan (Preview), record a revision and start its rollout (Apply), or roll back.

        Servers another assignment owns are left out (a Conflict condition and a Warning event say
        so); when they become this one's, an Apply rolls them out. `owner_of`: from the caller, else
        computed here."""
        rt, settings = self.rt, self.rt.settings
        started = time.perf_counter()
        generation = body.get("metadata", {}).get("generation")
        moment = rfc3339(now())
        try:
            assignment = GpuAssignment.model_validate(plain(body))
        except ValidationError as error:
            await self.fail(body, name, GpuAssignmentStatus(), first_error(error), generation=generation, moment=moment)
            return
        status = self.latest_status(name, assignment) or GpuAssignmentStatus()
        spec = assignment.spec
        fresh = status.observed_generation != generation
        servers = [s for s in values(kwargs["inference_servers"]) if s is not None]
        nodes = nodes_of(kwargs["gpu_nodes"])
        if spec.rollback_to_revision is not None and fresh:
            try:
                applied = plan_at_revision(status.history, spec.rollback_to_revision)
            except InputError as error:
                await self.fail(body, name, status, str(error), generation=generation, moment=moment)
                return
            wanted = {e.server for e in applied.plan}
            selected = [s for s in servers if s.key in wanted]
            pins, strategy = rollback_pins(applied.plan), "Manual"
        else:
            labels = await asyncio.to_thread(rt.kube.namespace_labels) if spec.namespace_selector else {}
            selected = select_servers(spec, servers, labels)
            pins, strategy = list(manual_assignments(assignment)), spec.strategy
        if owner_of is None:
            owner_of = owners((await self.claims(servers, kwargs["gpu_assignments"])).values(), pinned_by(servers))
        held = held_by_others(name, [s.key for s in selected], owner_of)
        selected = [s for s in selected if s.key not in held]
        pins = [p for p in pins if p.server not in held]
        chosen = {s.key for s in selected}
        not_applied = chosen - ({e.server for e in status.history[-1].plan} if status.history else set())
        # It was kept from servers another assignment owned, and owns some of them now (after a restart
        # which ones is not known: any it has not rolled out).
        was_held = set(self.held[name]) if name in self.held else not_applied
        takeover = (
            spec.mode == "Apply"
            and condition_status(status.conditions, CONFLICT) == "True"
            and bool(not_applied & was_held)
        )
        if strategy == "Manual":
            pins += stay_pins(selected, {p.server for p in pins})
        async with rt.book.lock:
            inputs = Inputs(
                nodes=nodes,
                reserved=rt.book.standing([s for s in servers if s.key not in chosen]),
                stale_nodes=stale_nodes(nodes, now(), settings.heartbeat_stale),
                strategy=strategy,
                margin_mib=settings.margin_mib,
                pod_uids=pod_uids_of(rt.indexes.get("server_pods")),
            )
            decided = decide(selected, inputs, pins)
        entries = []
        for server in selected:
            outcome = decided.outcomes[server.key]
            current = server.status.placement if server.status else None
            why = outcome.estimate_error or (
                outcome.placement.reason
                if outcome.placement
                else f"{outcome.unplaced_reason}: {outcome.unplaced_message}"
            )
            entries.append(plan_entry(server.key, outcome.placement, outcome.utilization, current, why))
        warnings = plan_warnings(decided.plan_warnings, {s.key: decided.outcomes[s.key].warnings for s in selected})
        conditions = set_condition(
            status.conditions,
            "Planned",
            True,
            "Planned",
            f"{sum(1 for e in entries if e.node)} of {len(entries)} servers placed, "
            f"{sum(1 for e in entries if e.changed)} would move",
            generation=generation,
            now=moment,
        )
        if held or condition_status(conditions, CONFLICT) is not None:
            conditions = set_condition(
                conditions,
                CONFLICT,
                bool(held),
                OWNED_BY_OTHER if held else NO_CONFLICT,
                conflict_message(held) if held else "no selected server is owned by another GpuAssignment",
                generation=generation,
                now=moment,
            )
        update: dict[str, Any] = {
            "observed_generation": generation,
            "plan": entries,
            "warnings": warnings,
            "conditions": conditions,
        }
        applying = (fresh and (spec.mode == "Apply" or spec.rollback_to_revision is not None)) or takeover
        if applying:
            revision, history = record_revision(status.history, entries, strategy, moment)
            pending = [e.server for e in entries if e.changed]
            update |= {
                "applied_revision": revision,
                "history": history,
                "rollout": RolloutStatus(pending=pending),
                "conditions": set_condition(
                    conditions,
                    "Applied",
                    not pending,
                    "RolloutDone" if not pending else "RollingOut",
                    f"revision {revision}: {len(pending)} servers to restart",
                    generation=generation,
                    now=moment,
                ),
            }
            await self.event(body, "Normal", "Applied", f"revision {revision}, {len(pending)} to move")
        new_status = status.model_copy(update=update)
        if new_status != status:
            await self.write(name, new_status)
        await self.warn(body, name, held, overcommits(decided.gpus, chosen))
        self.planned_from[name] = PlanInputs(servers, nodes, inputs.stale_nodes, owner_of).of(assignment)
        rt.metrics.reconciles.labels("GpuAssignment", "applied" if applying else "planned").inc()
        rt.metrics.reconcile_seconds.labels("GpuAssignment").observe(time.perf_counter() - started)
        if applying:
            await self.advance(body, name, new_status, servers, nodes)

    async def fail(
        self,
        body: kopf.Body,
        name: str,
        status: GpuAssignmentStatus,
        message: str,
        *,
        generation: int | None,
        moment: str,
    ) -> None:
        conditions = set_condition(
            status.conditions, "Planned", False, "InvalidSpec", message, generation=generation, now=moment
        )
        await self.write(name, status.model_copy(update={"conditions": conditions, "observed_generation": generation}))
        await self.event(body, "Warning", "InvalidSpec", message)
        raise kopf.PermanentError(message)

    async def warn(self, body: kopf.Body, name: str, held: dict[str, str], overcommitted: Mapping[str, str]) -> None:
        """Warning events for what is new since the last plan: servers another assignment owns, GPUs
        the plan over-commits."""
        gained = {s: o for s, o in held.items() if self.held.get(name, {}).get(s) != o}
        if gained:
            await self.event(body, "Warning", OWNED_BY_OTHER, f"left alone: {conflict_message(gained)}")
        self.held[name] = held
        known = self.overcommitted.setdefault(name, set())
        for uuid, message in overcommitted.items():
            if uuid not in known:
                await self.event(body, "Warning", "OverCommitted", f"the plan over-commits {message}")
        known.intersection_update(overcommitted)
        known.update(overcommitted)

    async def advance(
        self,
        body: kopf.Body,
        name: str,
        status: GpuAssignmentStatus,
        servers: Sequence[InferenceServer],
        nodes: Sequence[GpuNode],
    ) -> None:
        """Mark arrived servers healthy; when the wave in flight is done, start the next one."""
        settings = self.rt.settings
        rollout = status.rollout
        if (
            rollout is None
            or not status.history
            or not (rollout.pending or set(rollout.restarted) - set(rollout.healthy))
        ):
            return
        plan = {e.server: e for e in status.history[-1].plan}
        by_key = {s.key: s for s in servers}
        healthy = [k for k in rollout.restarted if k in rollout.healthy or arrived(by_key.get(k), plan[k])]
        in_flight = [k for k in rollout.restarted if k not in healthy]
        pending = [k for k in rollout.pending if k in by_key]
        if not in_flight and pending:
            owners = process_owners(servers, self.rt.indexes.get("server_pods"))
            free = free_after_reservations(nodes, servers, settings.margin_mib, owners)
            for key in pending:  # a server stopped for the rollout no longer holds its memory
                server = by_key[key]
                stopped = server.metadata.annotations.get(notes.STOPPED) == "true"
                for placement in server.status.placed_replicas() if server.status and stopped else []:
                    for gpu in placement.gpus:  # every replica of it is stopped
                        free[gpu.uuid] = free.get(gpu.uuid, 0.0) + placement.budget_mib
            wave = safe_waves(moves_for(pending, plan, by_key), free)[0]
            for key in wave.stop:
                await self.annotate(by_key[key], {notes.STOPPED: "true"})
            for key in wave.start:
                entry = plan[key]
                pin = notes.AssignedPlacement(
                    name, status.applied_revision or 0, entry.node or "", tuple(entry.gpus), entry.budget_mib
                )
                await self.annotate(by_key[key], {notes.ASSIGNED: pin.encode(), notes.STOPPED: None})
            pending = [k for k in pending if k not in wave.start]
            in_flight = list(wave.start)
            if wave.start:
                await self.event(body, "Normal", "RollingOut", f"starting {', '.join(wave.start)}")
        restarted = list(dict.fromkeys([*rollout.restarted, *in_flight]))
        new_rollout = RolloutStatus(restarted=restarted, pending=pending, healthy=healthy)
        if new_rollout != rollout:
            done = not pending and not in_flight
            conditions = set_condition(
                status.conditions,
                "Applied",
                done,
                "RolloutDone" if done else "RollingOut",
                f"{len(healthy)} healthy, {len(in_flight)} restarting, {len(pending)} pending",
                generation=status.observed_generation,
                now=rfc3339(now()),
            )
            await self.write(name, status.model_copy(update={"rollout": new_rollout, "conditions": conditions}))

    async def annotate(self, server: InferenceServer, update: dict[str, str | None]) -> None:
        namespace = server.metadata.namespace or "default"
        await asyncio.to_thread(self.rt.kube.annotate_server, namespace, server.metadata.name, update)

    async def refresh(
        self, assignment: GpuAssignment, body: kopf.Body, indexes: Mapping[str, Any], inputs: PlanInputs
    ) -> None:
        """Plan again what went stale: a Preview when any of its inputs changed, an assignment that
        may touch servers when which of them another assignment owns changed (an owner deleted, or
        no longer selecting a server). A new generation is left to the update handler."""
        name = assignment.metadata.name
        status = self.latest_status(name, assignment)
        before = self.planned_from.get(name)
        if before is None or status is None or status.observed_generation != assignment.metadata.generation:
            return
        if assignment.spec.mode == "Preview" and assignment.spec.rollback_to_revision is None:
            stale = before != inputs.of(assignment)
        else:
            claim = inputs.claims.get(name)
            held = held_by_others(name, claim.servers, inputs.owner_of) if claim else {}
            stale = held != self.held.get(name, {})
        if stale:
            await self.reconcile(body, name, indexes, inputs.owner_of)

    async def refresh_all(
        self, indexes: Mapping[str, Any], servers: Sequence[InferenceServer], nodes: Sequence[GpuNode]
    ) -> None:
        index = indexes["gpu_assignments"]
        for gone in set(self.planned_from) - set(index):  # deleted: forget what was kept about it
            for kept in (self.planned_from, self.held, self.overcommitted):
                kept.pop(gone, None)
        try:
            claims = await self.claims(servers, index)
        except Exception:  # retried at the next check
            log.exception("the owners of servers GpuAssignments select are unknown")
            return
        stale = stale_nodes(nodes, now(), self.rt.settings.heartbeat_stale)
        inputs = PlanInputs(servers, nodes, stale, owners(claims.values(), pinned_by(servers)), claims)
        for name, store in list(indexes["gpu_assignments"].items()):
            for assignment, body in list(store):
                async with self.locks[name]:
                    try:
                        await self.refresh(assignment, body, indexes, inputs)
                    except Exception:  # retried at the next check
                        log.exception("planning GpuAssignment %s again failed", name)

    async def check(self, indexes: Mapping[str, Any]) -> None:
        servers = [s for s in values(indexes["inference_servers"]) if s is not None]
        nodes = nodes_of(indexes["gpu_nodes"])
        await self.refresh_all(indexes, servers, nodes)
        for name, store in list(indexes["gpu_assignments"].items()):
            for assignment, body in list(store):
                mine = self.written.get(name)
                status = mine if mine and mine.observed_generation == assignment.metadata.generation else None
                status = status or assignment.status
                if status is not None:
                    try:
                        await self.advance(body, name, status, servers, nodes)
                    except Exception:  # retried at the next check
                        log.exception("rollout of GpuAssignment %s failed", name)


@kopf.index(*ASSIGNMENTS, id="gpu_assignments", registry=REGISTRY)
def gpu_assignments(*, name: str, body: kopf.Body, **_: Any) -> dict[str, tuple[GpuAssignment, kopf.Body]]:
    try:
        return {name: (GpuAssignment.model_validate(plain(body)), kopf.Body(cast(kopf.RawBody, plain(body))))}
    except ValidationError:
        return {}


@kopf.on.resume(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
@kopf.on.create(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
@kopf.on.update(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
async def reconcile_assignment(*, body: kopf.Body, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    cast(Runtime, memo["rt"]).remember_indexes(kwargs)
    reconciler = cast(AssignmentReconciler, memo["assignments"])
    async with reconciler.locks[name]:
        await reconciler.reconcile(body, name, kwargs)
