"""InferenceServer logic over the Kube port: reconcile (decide, record, apply) and the runtime check
(leave lost GPUs, measure, heal). The kopf handlers in servers.py only call into this class.

Reconcile order keeps a crash harmless: decide under the book's lock, write the status (the state
of record), then apply the children. Killed after the status write, the next run pins the server
to the placement its status records and applies the same children again (same names: no
duplicates; ownerReferences: no orphans).

Nothing the environment causes raises here: no room, a lost or oddly reported GPU, a missing
GpuNode or ConfigMap, a child the API server refuses all become a status with a reason, looked at
again when their inputs change and on the check loop's backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerStatus,
    PlacementStatus,
    ReplicaPlacementStatus,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignment import same_placement
from vram_operator.controller.conditions import condition_status
from vram_operator.controller.cordons import unschedulable, with_cordons
from vram_operator.controller.decision import Inputs
from vram_operator.controller.engine_reports import ESTIMATE_ACCURATE, report_errors, with_estimate_accuracy
from vram_operator.controller.engine_runs import EngineRuns
from vram_operator.controller.failures import Failure, classify, correct
from vram_operator.controller.gpu_health import placement_health
from vram_operator.controller.gpu_view import (
    Reservations,
    headroom_mib,
    pod_uids_of,
    process_owners,
    reserved_by,
    stale_nodes,
)
from vram_operator.controller.kube import ChildRefusedError
from vram_operator.controller.measure import estimate_error, measure_server, memory_changed
from vram_operator.controller.pods import ENGINE_CRASHING, PodFacts, crash_report, current_pods, readiness
from vram_operator.controller.rollout_state import assigned_pin, pin_refused
from vram_operator.controller.room import beyond_share_mib, room_shortfall
from vram_operator.controller.runtime import Runtime, now, rfc3339, values
from vram_operator.controller.server_status import (
    CHILD_REJECTED,
    Observation,
    Outcome,
    decided_status,
    observed_status,
    status_patch,
    with_nothing_running,
    with_refused_child,
)
from vram_operator.placement.demand import ManualAssignment, replica_key
from vram_operator.placement.ownership import ProcessOwners
from vram_operator.render import RenderError, render

log = logging.getLogger(__name__)
CHECK_CONCURRENCY = 32

# post(server, type, reason, message): an Event about a server (kopf.event in the operator).
PostEvent = Callable[[InferenceServer, str, str, str], None]


def pins_for(
    server: InferenceServer,
    current: InferenceServerStatus | None,
    *,
    replace: bool,
    moving: frozenset[int] = frozenset(),
) -> list[ManualAssignment]:
    """Where the server must go: a GpuAssignment's rollout, else where its status says it is
    (its reservation stands: a restart or a spec-only change never moves it), else free.
    `replace` re-places every replica; `moving` only the replicas with those indices."""
    assigned = assigned_pin(server)
    if assigned is not None:  # a GpuAssignment places replica 0; the other replicas stay where they are
        kept = [] if replace or current is None else replica_pins(server, current, moving)
        others = [pin for pin in kept if pin.server != server.key]
        return [assigned, *others]
    placement = current.placement if current else None
    if replace or placement is None or not placement.gpus or server.spec.placement is not None:
        return []
    override = notes.utilization_override(server.metadata.annotations)
    if override is not None and current is not None and current.gpu_memory_utilization != override:
        return []  # a corrected utilization changes the budget: decide afresh
    return replica_pins(server, current, moving) if current is not None else []


def replica_pins(
    server: InferenceServer, current: InferenceServerStatus, moving: frozenset[int] = frozenset()
) -> list[ManualAssignment]:
    """Each placed replica the spec still asks for stays where its status says it is (a replica
    scaled away holds nothing; one not yet placed, or moving off a lost GPU, is placed freely)."""
    wanted = max(1, server.spec.replicas)
    return [
        ManualAssignment(
            replica_key(server.key, placed.replica), placed.node, tuple(g.uuid for g in placed.gpus), standing=True
        )
        for placed in current.placed_replicas()
        if placed.replica < wanted and placed.gpus and placed.replica not in moving
    ]


def replicas_missing(server: InferenceServer, status: InferenceServerStatus) -> bool:
    """Fewer replicas placed than the spec asks for (partial placement: the rest is retried)."""
    return len(status.placed_replicas()) < max(1, server.spec.replicas)


def with_overrides(server: InferenceServer) -> InferenceServer:
    """The server as the planner should size it: a corrected utilization becomes a manual one."""
    override = notes.utilization_override(server.metadata.annotations)
    if override is None or server.spec.engine != "vllm":
        return server
    return server.model_copy(update={"spec": server.spec.model_copy(update={"gpu_memory_utilization": override})})


def for_render(server: InferenceServer) -> InferenceServer:
    """A server stopped for a rollout renders with no replicas."""
    if notes.stopped_by(server.metadata.annotations) is None:
        return server
    return server.model_copy(update={"spec": server.spec.model_copy(update={"replicas": 0})})


def decision_event(before: PlacementStatus | None, outcome: Outcome) -> tuple[str, str, str]:
    """(type, reason, message) of the Event for one decision."""
    if outcome.estimate_error is not None:
        return "Warning", outcome.estimate_error_reason, outcome.estimate_error
    after = outcome.placement
    if after is None:
        return "Warning", outcome.unplaced_reason, outcome.unplaced_message or "not placed"
    where = f"{after.node} GPU {','.join(str(g.index) for g in after.gpus)} ({after.budget_mib:.0f}MiB per GPU)"
    if outcome.estimate is not None and outcome.estimate.source == "measured":
        where = f"{where}, {outcome.predicted_fit_message}"
    if before is not None and before.gpus and not same_placement(before, after):
        return "Normal", "Rebalanced", f"moved from {before.node} to {where}"
    if outcome.replicas_missing:
        placed = outcome.replicas_wanted - outcome.replicas_missing
        return (
            "Warning",
            "PartiallyPlaced",
            f"{placed}/{outcome.replicas_wanted} replicas placed, replica 0 on {where}; the others wait: "
            f"{outcome.unplaced_reason}: {outcome.unplaced_message}",
        )
    return "Normal", "Placed", where


def nodes_of(gpu_nodes: Mapping[Any, Any]) -> list[GpuNode]:
    return [node for node in values(gpu_nodes) if node is not None]


def referenced_config_map(server: InferenceServer) -> tuple[str, str] | None:
    """(namespace, name) of the ConfigMap a server's model names, if any."""
    ref = server.spec.model.config_map_ref if server.spec.model else None
    return None if ref is None else (server.metadata.namespace or "default", ref.name)


@dataclass(frozen=True)
class CheckPass:
    """What each server's runtime check reads of all the other servers and of the fleet, taken once
    per pass of the check (not once per server: that would cost the square of the fleet); the next
    pass sees changes."""

    reservations: Reservations
    owners: ProcessOwners
    nodes: Sequence[GpuNode] = ()

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {node.metadata.name: i for i, node in enumerate(self.nodes)}

    def nodes_named(self, names: Collection[str]) -> list[GpuNode]:
        """The GpuNodes of these names, in the fleet's order: all that a lookup of a placement's GPUs
        can find (each server then reads its own nodes' GPUs, found by name, not by a scan of the fleet)."""
        return [self.nodes[i] for i in sorted(self._positions[name] for name in set(names) if name in self._positions)]


class ServerReconciler:
    """Reconcile, check, observe and heal InferenceServers; state lives in the Runtime."""

    def __init__(self, rt: Runtime, post_event: PostEvent) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.post_event = post_event
        self.engine_runs = EngineRuns(rt)

    # --- reconcile -------------------------------------------------------------------------------

    async def write_status(self, server: InferenceServer, status: InferenceServerStatus) -> None:
        namespace, name = server.metadata.namespace or "default", server.metadata.name
        await asyncio.get_running_loop().run_in_executor(
            self.rt.status_writer, self.rt.kube.patch_server_status, namespace, name, status_patch(status)
        )
        self.rt.written[server.key] = (server.metadata.uid, status)

    async def config_maps_of(self, server: InferenceServer) -> dict[tuple[str, str], dict[str, str]]:
        ref = referenced_config_map(server)
        if ref is None:
            return {}
        data = await asyncio.to_thread(self.rt.kube.config_map_data, *ref)
        return {} if data is None else {ref: data}

    async def reconcile(
        self,
        server: InferenceServer,
        servers: Mapping[Any, Any],
        nodes: list[GpuNode],
        *,
        replace: bool,
        moving: frozenset[int] = frozenset(),
    ) -> Outcome:
        """Decide, record, apply. Returns the outcome (the caller decides whether it is permanent)."""
        rt, settings = self.rt, self.settings
        started = time.perf_counter()
        current = rt.latest_status(server)
        with rt.child_gate.decision():  # children wait while decisions are pending
            outcome, status, objects = await self._decide_and_record(
                server, servers, nodes, current, replace=replace, moving=moving
            )
        before = current.placement if current else None
        placement = outcome.placement
        if not (placement is not None and same_placement(before, placement)):
            self.post_event(server, *decision_event(before, outcome))
        if before is not None and before.gpus and (placement is None or placement.budget_mib < before.budget_mib):
            rt.retry_unplaced.clear()  # memory was freed: unplaced servers may fit now
        await self.apply_children(server, status, objects, ever_rendered=current is not None)
        result = "failed" if outcome.estimate_error else ("placed" if placement else "unplaced")
        rt.metrics.placements.labels(settings.strategy, result).inc()
        rt.metrics.reconciles.labels("InferenceServer", result).inc()
        rt.metrics.reconcile_seconds.labels("InferenceServer").observe(time.perf_counter() - started)
        if placement is not None:
            rt.metrics.record_server_reserved(
                server.metadata.namespace or "default",
                server.metadata.name,
                max((r.placement.budget_mib for r in outcome.replicas), default=placement.budget_mib),
            )
        return outcome

    async def _decide_and_record(
        self,
        server: InferenceServer,
        servers: Mapping[Any, Any],
        nodes: list[GpuNode],
        current: InferenceServerStatus | None,
        *,
        replace: bool,
        moving: frozenset[int],
    ) -> tuple[Outcome, InferenceServerStatus, list[dict[str, Any]]]:
        """Decide in the next batch and write the status (the state of record): the outcome, the
        status written and the children to apply."""
        rt, settings = self.rt, self.settings
        key = server.key
        sized = with_overrides(server)
        config_maps = await self.config_maps_of(server)
        moment = now()

        def inputs_for(deciding: frozenset[str]) -> Inputs:
            # Read when the batch runs: the indexes may have moved on since this request.
            latest_nodes = nodes_of(rt.indexes["gpu_nodes"]) if "gpu_nodes" in rt.indexes else nodes
            latest_nodes = with_cordons(latest_nodes, unschedulable(rt.indexes.get("unschedulable_nodes")))
            standing = rt.book.standing(values(servers), exclude=deciding)
            return Inputs(
                nodes=latest_nodes,
                reserved=standing,
                stale_nodes=stale_nodes(latest_nodes, moment, settings.heartbeat_stale),
                strategy=settings.strategy,
                margin_mib=settings.margin_mib,
                pod_uids=pod_uids_of(rt.indexes.get("server_pods")),  # which GPU processes are ours
                measured=rt.measured,
                slot_cache=rt.slot_cache,
                one_namespace_per_gpu=settings.render.pinning_mode == "dra",
            )

        pins = pins_for(server, current, replace=replace, moving=moving)
        outcome, _ = await rt.batcher.decide(
            sized, pins, config_maps, inputs_for, refresh=self.engine_runs.load_measured_runs
        )
        outcome = pin_refused(outcome, notes.assigned_placement(server.metadata.annotations))
        placement = _with_assignment(outcome.placement, server)
        objects: list[dict[str, Any]] = []
        if placement is not None:
            try:  # rendering is pure: a spec it rejects fails before anything is written
                rendered = render(for_render(server), outcome.replicas, settings.render)
                objects = rendered.objects
            except RenderError as error:
                outcome = Outcome(estimate_error=str(error), estimate_error_reason=error.reason)
                placement = None
                rt.book.hold(key, None)
        outcome = dataclasses.replace(outcome, placement=placement)
        status = decided_status(current, outcome, generation=server.metadata.generation, now=rfc3339(moment))
        status = with_nothing_running(
            status, server.spec.replicas, generation=server.metadata.generation, now=rfc3339(moment)
        )
        if placement is None:
            rt.refused.pop(key, None)
        status = with_refused_child(
            status, rt.refused.get(key), generation=server.metadata.generation, now=rfc3339(moment)
        )
        try:
            if status != current:
                await self.write_status(server, status)
        except Exception:
            rt.book.drop(key)
            raise
        return outcome, status, objects

    async def apply_children(
        self,
        server: InferenceServer,
        status: InferenceServerStatus,
        objects: Sequence[dict[str, Any]],
        *,
        ever_rendered: bool = True,
    ) -> None:
        """Apply every child; one the API server refuses is reported (status and Event), not retried.

        `ever_rendered` False: the server never had a status, so it has no children yet (its status
        is written before any child is applied) and none can be stale. Other API errors propagate:
        kopf retries them with its backoff."""
        key = server.key
        refused: list[str] = []
        applied: dict[tuple[str, str], dict[str, Any]] = {}
        self.rt.applied[key] = applied  # filled as each child lands: what the ChildKeeper restores
        loop = asyncio.get_running_loop()
        for obj in objects:
            try:
                async with self.rt.child_gate.apply_slot():
                    await loop.run_in_executor(self.rt.child_writer, self.rt.kube.apply, obj)
            except ChildRefusedError as error:
                refused.append(str(error))
            else:
                applied[(obj["kind"], obj["metadata"]["name"])] = obj
        namespace = server.metadata.namespace or "default"
        if ever_rendered and objects:  # replicas no longer rendered (scaled down, fewer placed) lose their Deployments
            names = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Deployment"}
            await asyncio.to_thread(self.rt.kube.delete_stale_replicas, namespace, server.metadata.name, names)
        elif ever_rendered and status.placement is None:  # unplaced or failed: its reservation is gone, so are its pods
            await asyncio.to_thread(self.rt.kube.delete_deployments, namespace, server.metadata.name)
        message = "; ".join(refused) or None
        before = self.rt.refused.get(key)
        if message is None:
            self.rt.refused.pop(key, None)
        else:
            self.rt.refused[key] = message
        if message == before:
            return
        after = with_refused_child(status, message, generation=status.observed_generation, now=rfc3339(now()))
        if after != status:
            await self.write_status(server, after)
        if message is not None:
            self.post_event(server, "Warning", CHILD_REJECTED, message)

    async def reconcile_referencing(self, config_map: tuple[str, str], servers: Mapping[Any, Any]) -> None:
        """Reconcile the servers whose model names this ConfigMap (it appeared or changed)."""
        for server in [s for s in values(servers) if s is not None and referenced_config_map(s) == config_map]:
            async with self.rt.server_locks[server.key]:
                outcome = await self.reconcile(
                    server, servers, nodes_of(self.rt.indexes.get("gpu_nodes", {})), replace=False
                )
                self.rt.record_unplaced(server.key, time.monotonic(), outcome.fully_placed)

    # --- the runtime check ---------------------------------------------------------------------

    def note_missing_nodes(
        self, servers: Sequence[InferenceServer], nodes: Sequence[GpuNode], moment: datetime
    ) -> None:
        """Remember when each GpuNode that servers stand on went missing (forget the ones back)."""
        present = {node.metadata.name for node in nodes}
        for name in [n for n in self.rt.missing_since if n in present]:
            del self.rt.missing_since[name]
        for server in servers:
            for placed in server.status.placed_replicas() if server.status else []:
                if placed.node not in present:
                    self.rt.missing_since.setdefault(placed.node, moment)

    async def check(self, server: InferenceServer, indexes: Mapping[str, Any], seen: CheckPass) -> None:
        """The runtime check of one server: retry placement, leave lost GPUs, measure, heal."""
        rt = self.rt
        key = server.key
        async with rt.server_locks[key]:
            current = rt.latest_status(server)
            if current is None or current.phase == "Failed":
                return  # the spec (or its ConfigMap's content) must change first: their events reconcile
            nodes = list(seen.nodes)
            placement = current.placement
            if placement is None:
                moment = time.monotonic()
                if rt.retry_due(key, moment):  # capacity may have freed
                    outcome = await self.reconcile(server, indexes["inference_servers"], nodes, replace=False)
                    rt.record_unplaced(key, moment, outcome.fully_placed)
                return
            healths = {
                placed.replica: placement_health(
                    placed,
                    seen.nodes_named([placed.node]),
                    missing_since=rt.missing_since.get(placed.node),
                    now=now(),
                    grace=self.settings.gpu_node_grace,
                )
                for placed in current.placed_replicas()
            }
            waiting = [h for h in healths.values() if h.state == "unknown"]
            if waiting:
                log.info("%s: %s", key, waiting[0].message)
                return
            lost = frozenset(replica for replica, h in healths.items() if h.state == "lost")
            if lost:
                for replica in sorted(lost):
                    self.post_event(server, "Warning", "GpuLost", healths[replica].message)
                rt.metrics.replacements.labels("GpuLost").inc()
                # Only the replicas on lost GPUs move; the others keep their GPUs (and keep running).
                await self.reconcile(server, indexes["inference_servers"], nodes, replace=False, moving=lost)
                return
            if replicas_missing(server, current) and rt.retry_due(key, time.monotonic()):
                # A partly placed server: its placed replicas stay (pinned by status), the others try again.
                moment = time.monotonic()
                outcome = await self.reconcile(server, indexes["inference_servers"], nodes, replace=False)
                rt.record_unplaced(key, moment, outcome.fully_placed)
                return
            pods = list(indexes["server_pods"].get(key, []))
            await self.observe(
                server, current, placement, servers=indexes["inference_servers"], nodes=nodes, pods=pods, seen=seen
            )

    async def check_servers(self, indexes: Mapping[str, Any]) -> None:
        limit = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(server: InferenceServer) -> None:
            async with limit:
                try:
                    await self.check(server, indexes, seen)
                except Exception:  # one server's trouble must not stop the others' checks
                    log.exception("check of %s failed", server.key)

        nodes = nodes_of(indexes["gpu_nodes"])
        indexed = [s for s in values(indexes["inference_servers"]) if s is not None]
        self.note_missing_nodes(indexed, nodes, now())
        seen = CheckPass(
            Reservations(self.rt.book.standing(indexed)),
            process_owners(indexed, self.rt.indexes.get("server_pods")),
            nodes,
        )
        await asyncio.gather(*(one(s) for s in indexed))
        record_gpu_gauges(self.rt, self.rt.book.standing(indexed), nodes)

    async def observe(
        self,
        server: InferenceServer,
        current: InferenceServerStatus,
        placement: PlacementStatus,
        *,
        servers: Mapping[Any, Any],
        nodes: list[GpuNode],
        pods: list[PodFacts],
        seen: CheckPass,
    ) -> None:
        rt = self.rt
        ready, ready_message = readiness(current_pods(pods, current.placed_replicas()), server.spec.replicas)
        uuids = list(dict.fromkeys(gpu.uuid for placed in current.placed_replicas() for gpu in placed.gpus))
        replicas = current.placed_replicas()
        own_nodes = seen.nodes_named([placed.node for placed in replicas])
        memory = measure_server({pod.uid for pod in pods}, uuids, [n.status for n in own_nodes if n.status])
        failure, crashed = await self.detect_failure(pods)
        reason = failure.kind.value if failure else None
        message = failure.message if failure else ""
        if failure is not None and crashed is not None:
            outcome = await self.heal(
                server, current, placement, servers=servers, nodes=nodes, failure=failure, pod=crashed
            )
            message = f"{failure.message} ({outcome})"
        refused = rt.refused.get(server.key)
        if reason is None and refused is not None:
            reason, message = CHILD_REJECTED, refused
        crashing = crash_report(pods) if reason is None else None
        if crashing is not None:
            reason, message = ENGINE_CRASHING, crashing
        shortfall = next(
            (
                short
                for placed in replicas
                if (
                    short := room_shortfall(
                        placed,
                        placed.gpu_memory_utilization,
                        own_nodes,
                        besides(placed, replicas, seen.reservations.besides, server.key),
                        seen.owners,
                        beyond_share=beyond_share_mib(current),
                    )
                )
                is not None
            ),
            None,
        )
        observation = Observation(
            ready=ready,
            ready_message=ready_message,
            memory=memory,
            failure_reason=reason,
            failure_message=message,
            room_message=shortfall.message if shortfall else None,
        )
        moment = rfc3339(now())
        status = observed_status(current, observation, generation=current.observed_generation, now=moment)
        status = await self.engine_runs.read_engine_report(server, status, pods, moment)
        status = with_estimate_accuracy(
            status, self.settings.estimate_error_threshold, generation=current.observed_generation, now=moment
        )
        if status.model_dump(exclude={"memory"}) != current.model_dump(exclude={"memory"}) or memory_changed(
            current.memory, status.memory
        ):
            await self.write_status(server, status)
            self.report_transitions(server, current, status)
        await self.engine_runs.record_run(server, status, moment)
        namespace = server.metadata.namespace or "default"
        for error in report_errors(status):
            rt.metrics.estimate_error.labels(namespace, server.metadata.name, error.figure).set(error.error)
        if memory is not None:
            rt.metrics.record_server_measured(namespace, server.metadata.name, [g.used_mib for g in memory.per_gpu])
            ratio = estimate_error(memory, placement.budget_mib)
            if ratio is not None:
                rt.metrics.estimate_ratio.labels(namespace, server.metadata.name).set(ratio)

    async def detect_failure(self, pods: list[PodFacts]) -> tuple[Failure | None, PodFacts | None]:
        """A memory failure of a crashing pod: its termination message, else a bounded log tail."""
        for pod in pods:
            if not pod.crashing:
                continue
            failure = classify(pod.termination_message)
            if failure is None:
                tail = await asyncio.to_thread(self.rt.kube.log_tail, pod.namespace, pod.name, pod.container)
                failure = classify(tail)
            if failure is not None:
                return failure, pod
        return None, None

    async def heal(
        self,
        server: InferenceServer,
        current: InferenceServerStatus,
        placement: PlacementStatus,
        *,
        servers: Mapping[Any, Any],
        nodes: list[GpuNode],
        failure: Failure,
        pod: PodFacts,
    ) -> str:
        """One bounded correction per crashed pod; the count lives in an annotation."""
        rt, settings = self.rt, self.settings
        annotations = server.metadata.annotations
        if annotations.get(notes.CORRECTED_POD) == pod.uid:
            return "correction in progress"
        attempts = notes.corrections(annotations)
        others = rt.book.standing(values(servers), exclude=server.key)
        first = placement.gpus[0]
        fix = correct(
            failure,
            attempts=attempts,
            max_attempts=settings.max_corrections,
            utilization=current.gpu_memory_utilization or 0.0,
            total_mib=first.total_mib,
            headroom_mib=headroom_mib(
                first.uuid,
                placement.node,
                nodes,
                others,
                process_owners(values(servers), rt.indexes.get("server_pods")),
            ),
            margin_mib=settings.margin_mib,
            beyond_share_mib=beyond_share_mib(current),
        )
        rt.metrics.corrections.labels(failure.kind.value, fix.action).inc()
        namespace = server.metadata.namespace or "default"
        if fix.action == "give_up":
            if attempts == settings.max_corrections:
                self.post_event(server, "Warning", "CorrectionsExhausted", fix.message)
                await asyncio.to_thread(
                    rt.kube.annotate_server, namespace, server.metadata.name, {notes.CORRECTIONS: str(attempts + 1)}
                )
            return fix.message
        update: dict[str, str | None] = {notes.CORRECTIONS: str(attempts + 1), notes.CORRECTED_POD: pod.uid}
        if fix.action == "adjust" and fix.utilization is not None:
            update[notes.UTILIZATION] = f"{fix.utilization:.2f}"
        self.post_event(server, "Warning", "Corrected", fix.message)
        await asyncio.to_thread(rt.kube.annotate_server, namespace, server.metadata.name, update)
        if fix.action == "replace":
            await self.reconcile(server, servers, nodes, replace=True)
        return fix.message

    def report_transitions(
        self, server: InferenceServer, before: InferenceServerStatus, after: InferenceServerStatus
    ) -> None:
        if before.memory is None and after.memory is not None:
            self.post_event(server, "Normal", "MemoryMeasured", after.memory.display)
        fits = next((c for c in after.conditions if c.type == "MemoryFits"), None)
        was = next((c for c in before.conditions if c.type == "MemoryFits"), None)
        if (
            fits is not None
            and fits.status == "False"
            and (was is None or (was.status, was.reason) != ("False", fits.reason))
        ):
            self.post_event(server, "Warning", fits.reason, fits.message)
        accurate = next((c for c in after.conditions if c.type == ESTIMATE_ACCURATE), None)
        was_accurate = next((c for c in before.conditions if c.type == ESTIMATE_ACCURATE), None)
        if (
            accurate is not None
            and accurate.status == "False"
            and (was_accurate is None or was_accurate.status != "False")
        ):
            self.post_event(server, "Warning", accurate.reason, accurate.message)
        if condition_status(after.conditions, "Degraded") == "True" != condition_status(before.conditions, "Degraded"):
            degraded = next(c for c in after.conditions if c.type == "Degraded")
            if degraded.reason != CHILD_REJECTED:  # its Event was posted when the child was refused
                self.post_event(server, "Warning", "Degraded", f"{degraded.reason}: {degraded.message}")


def besides(
    placed: ReplicaPlacementStatus,
    replicas: Sequence[ReplicaPlacementStatus],
    reserved_besides: Callable[[str, str], float],
    key: str,
) -> dict[str, float]:
    """MiB reserved on each GPU of this replica by everything but it: other servers (`reserved_besides`
    (server key, GPU UUID)) and the server's other replicas (two replicas share a GPU only when both
    budgets fit; each needs its room at its own restart)."""
    reserved = {gpu.uuid: reserved_besides(key, gpu.uuid) for gpu in placed.gpus}
    for sibling in replicas:
        if sibling.replica != placed.replica:
            for gpu in sibling.gpus:
                if gpu.uuid in reserved:
                    reserved[gpu.uuid] += sibling.budget_mib
    return reserved


def record_gpu_gauges(rt: Runtime, standing: list[InferenceServer], nodes: list[GpuNode]) -> None:
    """Reserved vs measured MiB per GPU: reservations from the book, use of our servers' processes from the agents."""
    reserved = reserved_by(standing)
    owners = process_owners(standing, rt.indexes.get("server_pods"))
    for node in nodes:
        for gpu in node.status.gpus if node.status else []:
            measured = sum(p.used_mib or 0.0 for p in gpu.processes if owners.owner_of(p) is not None)
            rt.metrics.record_gpu(
                node.metadata.name, gpu.index, gpu.uuid, reserved_mib=reserved.get(gpu.uuid, 0.0), measured_mib=measured
            )


def _with_assignment(placement: PlacementStatus | None, server: InferenceServer) -> PlacementStatus | None:
    assigned = notes.assigned_placement(server.metadata.annotations)
    if placement is None or assigned is None:
        return placement
    return placement.model_copy(update={"assignment": assigned.assignment, "strategy": "Manual"})
