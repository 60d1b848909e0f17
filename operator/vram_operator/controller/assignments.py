"""GpuAssignment handlers: plan (Preview), roll out (Apply) in a safe order, roll back.

Apply pins each moving server by an annotation (controller.annotations.ASSIGNED) wave by wave;
the server's own reconcile then re-renders its Deployment there. The check loop advances the
waves from the state of record in the API (controller.rollout_state): the next wave starts only
when every server of the last one has a Ready pod where the plan put it and the pods of the
servers it stopped are gone. Deleting an assignment gives its servers back (kopf's finalizer).
"""

from __future__ import annotations

import asyncio
import dataclasses
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
    GpuAssignmentSpec,
    GpuAssignmentStatus,
    PlanEntry,
    RollbackRecord,
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
from vram_operator.controller.cordons import unschedulable, with_cordons
from vram_operator.controller.decision import Inputs, decide
from vram_operator.controller.diffbase import deleted
from vram_operator.controller.gpu_view import free_after_reservations, pod_uids_of, process_owners, stale_nodes
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.rollout_order import Move, safe_waves
from vram_operator.controller.rollout_state import (
    Progress,
    applied_condition,
    progress,
    release,
    rollback_condition,
    rollback_due,
    stopped_outside,
    unplaced,
)
from vram_operator.controller.runtime import Runtime, first_error, now, plain, rfc3339, values
from vram_operator.controller.server_reconciler import nodes_of
from vram_operator.decide import manual_assignments
from vram_operator.errors import InputError
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
        stopped = notes.stopped_by(server.metadata.annotations) is not None
        old = {g.uuid: current.budget_mib for g in current.gpus} if current and not stopped else {}
        moves.append(Move(key, old=old, new=dict.fromkeys(entry.gpus, entry.budget_mib)))
    return moves


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
        cleared = {"rolledBack": None}  # a merge patch: a field that is gone must be written as null
        await asyncio.to_thread(self.rt.kube.patch_assignment_status, name, {"status": {**cleared, **status.wire()}})
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
        rolling_back = fresh and rollback_due(spec, status)
        if rolling_back:
            assert spec.rollback_to_revision is not None
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
                nodes=with_cordons(nodes, unschedulable(rt.indexes.get("unschedulable_nodes"))),
                reserved=rt.book.standing([s for s in servers if s.key not in chosen]),
                stale_nodes=stale_nodes(nodes, now(), settings.heartbeat_stale),
                strategy=strategy,
                margin_mib=settings.margin_mib,
                pod_uids=pod_uids_of(rt.indexes.get("server_pods")),
                one_namespace_per_gpu=settings.render.pinning_mode == "dra",
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
        if spec.rollback_to_revision is None:
            update["rolled_back"] = None
        applying = (fresh and (spec.mode == "Apply" or rolling_back)) or takeover
        if applying:
            revision, history = record_revision(status.history, entries, strategy, moment)
            pending = [e.server for e in entries if e.changed]
            if rolling_back and spec.rollback_to_revision is not None and generation is not None:
                update["rolled_back"] = RollbackRecord(
                    to_revision=spec.rollback_to_revision, revision=revision, generation=generation
                )
            done, reason, message = applied_condition(Progress(pending=tuple(pending), unplaced=unplaced(entries)))
            update |= {
                "applied_revision": revision,
                "history": history,
                "rollout": RolloutStatus(pending=pending),
                "conditions": set_condition(
                    conditions,
                    "Applied",
                    done,
                    reason,
                    f"revision {revision}: {message}",
                    generation=generation,
                    now=moment,
                ),
            }
            await self.event(body, "Normal", "Applied", f"revision {revision}, {len(pending)} to move")
        update["conditions"] = rollback_condition(
            update["conditions"],
            update.get("rolled_back", status.rolled_back),
            update.get("applied_revision", status.applied_revision),
            generation=generation,
            now=moment,
        )
        new_status = status.model_copy(update=update)
        if new_status != status:
            await self.write(name, new_status)
        await self.warn(body, name, held, overcommits(decided.gpus, chosen))
        self.planned_from[name] = PlanInputs(servers, nodes, inputs.stale_nodes, owner_of).of(assignment)
        rt.metrics.reconciles.labels("GpuAssignment", "applied" if applying else "planned").inc()
        rt.metrics.reconcile_seconds.labels("GpuAssignment").observe(time.perf_counter() - started)
        if applying:
            moving = set(new_status.rollout.pending if new_status.rollout else ())
            for server in stopped_outside(name, servers, moving):  # an earlier revision stopped it
                await self.annotate(server, {notes.STOPPED: None})
            await self.advance(body, name, new_status, spec, servers=servers, nodes=nodes)

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
        spec: GpuAssignmentSpec,
        *,
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
        applied = status.history[-1]
        plan = {e.server: e for e in applied.plan}
        by_key = {s.key: s for s in servers}
        index = self.rt.indexes.get("server_pods") or {}
        pods = {key: list(index.get(key, [])) for key in [*rollout.restarted, *rollout.pending]}
        state = progress(name, rollout, plan, by_key, pods)
        if state.wave_due:
            owners = process_owners(servers, index or None)
            free = free_after_reservations(nodes, servers, settings.margin_mib, owners)
            for key in state.stopped:  # a server stopped for the rollout no longer holds its memory
                server = by_key[key]
                for placement in server.status.placed_replicas() if server.status else []:
                    for gpu in placement.gpus:  # every replica of it is stopped
                        free[gpu.uuid] = free.get(gpu.uuid, 0.0) + placement.budget_mib
            wave = safe_waves(moves_for(state.pending, plan, by_key), free, state.stopped)[0]
            for key in wave.stop:
                await self.annotate(by_key[key], {notes.STOPPED: name})
            overrides = {a.server for a in spec.assignments if a.vram_budget_override is not None}
            for key in wave.start:
                entry, server = plan[key], by_key[key]
                pin = notes.AssignedPlacement(
                    name,
                    status.applied_revision or 0,
                    entry.node or "",
                    tuple(entry.gpus),
                    entry.budget_mib,
                    generation=server.metadata.generation,
                    utilization=notes.utilization_override(server.metadata.annotations),
                    budget_override=key in overrides,
                    overcommit=applied.strategy == "Manual",
                )
                await self.annotate(server, {notes.ASSIGNED: pin.encode(), notes.STOPPED: None})
            stopped = [*[k for k in state.stopped if k not in wave.start], *wave.stop]
            state = dataclasses.replace(
                state,
                pending=tuple(k for k in state.pending if k not in wave.start),
                in_flight=tuple(wave.start),
                stopped=tuple(stopped),
                draining=tuple(wave.stop),
                waiting=tuple(f"{k}: its new pod" for k in wave.start) + tuple(f"{k}: to stop" for k in wave.stop),
                blocked=False,
            )
            if wave.start:
                await self.event(body, "Normal", "RollingOut", f"starting {', '.join(wave.start)}")
        new_rollout = RolloutStatus(
            restarted=list(dict.fromkeys([*rollout.restarted, *state.in_flight])),
            pending=list(state.pending),
            healthy=list(state.healthy),
            stopped=list(state.stopped),
        )
        done, reason, message = applied_condition(state)
        conditions = set_condition(
            status.conditions,
            "Applied",
            done,
            reason,
            message,
            generation=status.observed_generation,
            now=rfc3339(now()),
        )
        if new_rollout != rollout or conditions != status.conditions:
            await self.write(name, status.model_copy(update={"rollout": new_rollout, "conditions": conditions}))

    async def release(self, name: str, status: GpuAssignmentStatus | None, servers: Sequence[InferenceServer]) -> None:
        """The assignment is being deleted: take its pins off its servers and start the ones it stopped.
        Each server's own reconcile (an annotation changed) then places it by the operator's strategy
        where it stands, and its status.placement no longer names the assignment."""
        rollout = status.rollout if status else None
        for server in servers:
            update = release(server, name, rollout)
            if update:
                await self.annotate(server, update)

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
                if body.get("metadata", {}).get("deletionTimestamp"):
                    continue  # being released (release_assignment): no new wave
                async with self.locks[name]:  # never beside its own handler's wave; its status read after it
                    mine = self.written.get(name)
                    status = mine if mine and mine.observed_generation == assignment.metadata.generation else None
                    status = status or assignment.status
                    if status is None:
                        continue
                    try:
                        await self.advance(body, name, status, assignment.spec, servers=servers, nodes=nodes)
                    except Exception:  # retried at the next check
                        log.exception("rollout of GpuAssignment %s failed", name)


@kopf.index(*ASSIGNMENTS, id="gpu_assignments", registry=REGISTRY)
async def gpu_assignments(*, name: str, body: kopf.Body, **_: Any) -> dict[str, tuple[GpuAssignment, kopf.Body]]:
    try:
        return {name: (GpuAssignment.model_validate(plain(body)), kopf.Body(cast(kopf.RawBody, plain(body))))}
    except ValidationError:
        return {}


@kopf.on.event(*ASSIGNMENTS, id="gone", when=deleted, registry=REGISTRY)
async def assignment_gone(*, uid: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Deleted: kopf's record of what it last handled of the assignment goes (it is kept in memory)."""
    cast(Runtime, memo["rt"]).diffbase.forget(uid or "")


@kopf.on.resume(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
@kopf.on.create(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
@kopf.on.update(*ASSIGNMENTS, id="reconcile", registry=REGISTRY)
async def reconcile_assignment(*, body: kopf.Body, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    cast(Runtime, memo["rt"]).remember_indexes(kwargs)
    reconciler = cast(AssignmentReconciler, memo["assignments"])
    async with reconciler.locks[name]:
        await reconciler.reconcile(body, name, kwargs)


# Not optional: kopf's finalizer holds the deletion until the servers are given back, so an
# assignment deleted while the operator is down still releases its pins and stopped servers.
@kopf.on.delete(*ASSIGNMENTS, id="release", registry=REGISTRY)
async def release_assignment(*, body: kopf.Body, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    cast(Runtime, memo["rt"]).remember_indexes(kwargs)
    try:
        status = GpuAssignmentStatus.model_validate(plain(body).get("status") or {})
    except ValidationError:
        status = None  # an unreadable status: the annotations still name what is ours
    servers = [s for s in values(kwargs["inference_servers"]) if s is not None]
    reconciler = cast(AssignmentReconciler, memo["assignments"])
    async with reconciler.locks[name]:
        await reconciler.release(name, status, servers)
