"""InferenceServer handlers: reconcile (decide, record, apply) and the runtime check (measure, heal).

Reconcile order keeps a crash harmless: decide under the book's lock, write the status (the state
of record), then apply the children. Killed after the status write, the next run pins the server
to the placement its status records and applies the same children again (same names: no
duplicates; ownerReferences: no orphans).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus, PlacementStatus
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignment import same_placement
from vram_operator.controller.conditions import condition_status
from vram_operator.controller.decision import Inputs
from vram_operator.controller.failures import Failure, classify, correct
from vram_operator.controller.gpu_view import (
    headroom_mib,
    lost_gpus,
    pod_uids_of,
    process_owners,
    reserved_by,
    stale_nodes,
)
from vram_operator.controller.measure import estimate_error, measure_server, memory_changed
from vram_operator.controller.pods import PodFacts, pod_facts, readiness
from vram_operator.controller.runtime import (
    Runtime,
    first_error,
    now,
    parse_node,
    parse_server,
    rfc3339,
    values,
)
from vram_operator.controller.server_status import (
    Observation,
    Outcome,
    decided_status,
    observed_status,
    status_patch,
)
from vram_operator.placement.demand import ManualAssignment
from vram_operator.render import RenderError, render
from vram_operator.render.metadata import SERVER_LABEL

SERVERS = (GROUP, VERSION, "inferenceservers")
CHECK_CONCURRENCY = 32
log = logging.getLogger(__name__)


def pins_for(
    server: InferenceServer, current: InferenceServerStatus | None, *, replace: bool
) -> list[ManualAssignment]:
    """Where the server must go: a GpuAssignment's rollout, else where its status says it is
    (its reservation stands: a restart or a spec-only change never moves it), else free."""
    assigned = notes.assigned_placement(server.metadata.annotations)
    if assigned is not None:
        return [ManualAssignment(server.key, assigned.node, assigned.gpus, assigned.budget_mib)]
    placement = current.placement if current else None
    if replace or placement is None or not placement.gpus or server.spec.placement is not None:
        return []
    override = notes.utilization_override(server.metadata.annotations)
    if override is not None and current is not None and current.gpu_memory_utilization != override:
        return []  # a corrected utilization changes the budget: decide afresh
    return [ManualAssignment(server.key, placement.node, tuple(g.uuid for g in placement.gpus))]


def with_overrides(server: InferenceServer) -> InferenceServer:
    """The server as the planner should size it: a corrected utilization becomes a manual one."""
    override = notes.utilization_override(server.metadata.annotations)
    if override is None or server.spec.engine != "vllm":
        return server
    return server.model_copy(update={"spec": server.spec.model_copy(update={"gpu_memory_utilization": override})})


def for_render(server: InferenceServer) -> InferenceServer:
    """A server stopped for a rollout renders with no replicas."""
    if server.metadata.annotations.get(notes.STOPPED) != "true":
        return server
    return server.model_copy(update={"spec": server.spec.model_copy(update={"replicas": 0})})


def decision_event(before: PlacementStatus | None, outcome: Outcome) -> tuple[str, str, str]:
    """(type, reason, message) of the Event for one decision."""
    if outcome.estimate_error is not None:
        return "Warning", "EstimateFailed", outcome.estimate_error
    after = outcome.placement
    if after is None:
        return "Warning", outcome.unplaced_reason, outcome.unplaced_message or "not placed"
    where = f"{after.node} GPU {','.join(str(g.index) for g in after.gpus)} ({after.budget_mib:.0f}MiB per GPU)"
    if before is not None and before.gpus and not same_placement(before, after):
        return "Normal", "Rebalanced", f"moved from {before.node} to {where}"
    return "Normal", "Placed", where


def body_of(server: InferenceServer) -> kopf.Body:
    """Enough of the object for kopf to post an Event about it."""
    meta = {"name": server.metadata.name, "namespace": server.metadata.namespace, "uid": server.metadata.uid}
    return kopf.Body(cast(kopf.RawBody, {"apiVersion": server.api_version, "kind": server.kind, "metadata": meta}))


def nodes_of(gpu_nodes: Mapping[Any, Any]) -> list[GpuNode]:
    return [node for node in values(gpu_nodes) if node is not None]


def register(registry: kopf.OperatorRegistry, rt: Runtime) -> None:
    settings = rt.settings

    @kopf.index(*SERVERS, id="inference_servers", registry=registry)
    def inference_servers(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, InferenceServer]:
        try:
            return {f"{namespace}/{name}": parse_server(body)}
        except ValidationError:
            return {}  # a bad spec holds no reservation; its reconcile reports it

    @kopf.index(GROUP, VERSION, "gpunodes", id="gpu_nodes", registry=registry)
    def gpu_nodes(*, name: str, body: kopf.Body, **_: Any) -> dict[str, GpuNode]:
        node = parse_node(body)
        return {name: node} if node is not None else {}

    @kopf.index("", "v1", "pods", labels={SERVER_LABEL: kopf.PRESENT}, id="server_pods", registry=registry)
    def server_pods(
        *, namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any
    ) -> dict[str, PodFacts]:
        return {f"{namespace}/{labels[SERVER_LABEL]}": pod_facts(body)}

    async def write_status(server: InferenceServer, status: InferenceServerStatus) -> None:
        namespace, name = server.metadata.namespace or "default", server.metadata.name
        await asyncio.to_thread(rt.kube.patch_server_status, namespace, name, status_patch(status))
        rt.written[server.key] = (server.metadata.uid, status)

    async def config_maps_of(server: InferenceServer) -> dict[tuple[str, str], dict[str, str]]:
        ref = server.spec.model.config_map_ref if server.spec.model else None
        if ref is None:
            return {}
        namespace = server.metadata.namespace or "default"
        data = await asyncio.to_thread(rt.kube.config_map_data, namespace, ref.name)
        return {} if data is None else {(namespace, ref.name): data}

    async def reconcile(
        body: kopf.Body, server: InferenceServer, servers: Mapping[Any, Any], nodes: list[GpuNode], *, replace: bool
    ) -> Outcome:
        """Decide, record, apply. Returns the outcome (the caller reports bad specs)."""
        key = server.key
        started = time.perf_counter()
        current = rt.latest_status(server)
        sized = with_overrides(server)
        config_maps = await config_maps_of(server)
        moment = now()

        def inputs_for(deciding: frozenset[str]) -> Inputs:
            # Read when the batch runs: the indexes may have moved on since this request.
            latest_nodes = nodes_of(rt.indexes["gpu_nodes"]) if "gpu_nodes" in rt.indexes else nodes
            standing = rt.book.standing(values(servers), exclude=deciding)
            return Inputs(
                nodes=latest_nodes,
                reserved=standing,
                stale_nodes=stale_nodes(latest_nodes, moment, settings.heartbeat_stale),
                strategy=settings.strategy,
                margin_mib=settings.margin_mib,
                pod_uids=pod_uids_of(rt.indexes.get("server_pods")),  # which GPU processes are ours
            )

        pins = pins_for(server, current, replace=replace)
        outcome, launch = await rt.batcher.decide(sized, pins, config_maps, inputs_for)
        placement = _with_assignment(outcome.placement, server)
        objects: list[dict[str, Any]] = []
        if placement is not None:
            try:  # rendering is pure: a spec it rejects fails before anything is written
                rendered = render(for_render(server), placement, outcome.utilization, settings.render, launch)
                objects = rendered.objects
            except RenderError as error:
                outcome = Outcome(estimate_error=str(error), estimate_error_reason="RenderFailed")
                placement = None
                rt.book.hold(key, None)
        outcome = dataclasses.replace(outcome, placement=placement)
        status = decided_status(current, outcome, generation=server.metadata.generation, now=rfc3339(moment))
        try:
            if status != current:
                await write_status(server, status)
        except Exception:
            rt.book.drop(key)
            raise
        for obj in objects:
            await asyncio.to_thread(rt.kube.apply, obj)
        before = current.placement if current else None
        if not (outcome.placement is not None and same_placement(before, outcome.placement)):
            kind, reason, message = decision_event(before, outcome)
            kopf.event(body, type=kind, reason=reason, message=message)
        result = "failed" if outcome.estimate_error else ("placed" if outcome.placement else "unplaced")
        rt.metrics.placements.labels(settings.strategy, result).inc()
        rt.metrics.reconciles.labels("InferenceServer", result).inc()
        rt.metrics.reconcile_seconds.labels("InferenceServer").observe(time.perf_counter() - started)
        if outcome.placement is not None:
            rt.metrics.server_reserved.labels(server.metadata.namespace or "default", server.metadata.name).set(
                outcome.placement.budget_mib
            )
        return outcome

    @kopf.on.resume(*SERVERS, id="reconcile", registry=registry)
    @kopf.on.create(*SERVERS, id="reconcile", registry=registry)
    @kopf.on.update(*SERVERS, id="reconcile", registry=registry)
    async def reconcile_server(*, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any) -> None:
        rt.remember_indexes(kwargs)
        key = f"{namespace}/{name}"
        async with rt.server_locks[key]:
            try:
                server = parse_server(body)
            except ValidationError as error:
                await _report_invalid(body, error)
                return
            outcome = await reconcile(
                body, server, kwargs["inference_servers"], nodes_of(kwargs["gpu_nodes"]), replace=False
            )
            rt.record_unplaced(key, time.monotonic(), outcome.placement is not None)
        if outcome.estimate_error is not None:
            # Retrying cannot fix a spec: stop here until the spec changes (no retry storm).
            raise kopf.PermanentError(outcome.estimate_error)

    async def _report_invalid(body: kopf.Body, error: ValidationError) -> None:
        message = first_error(error)
        meta = body.get("metadata", {})
        previous = InferenceServerStatus()
        status = decided_status(
            previous,
            Outcome(estimate_error=message, estimate_error_reason="InvalidSpec"),
            generation=meta.get("generation"),
            now=rfc3339(now()),
        )
        await asyncio.to_thread(
            rt.kube.patch_server_status, meta.get("namespace", "default"), meta["name"], status_patch(status)
        )
        kopf.event(body, type="Warning", reason="InvalidSpec", message=message)
        rt.metrics.reconciles.labels("InferenceServer", "invalid").inc()
        raise kopf.PermanentError(message)

    @kopf.on.delete(*SERVERS, id="forget", optional=True, registry=registry)
    def forget_server(*, namespace: str | None, name: str, **_: Any) -> None:
        # The reservation goes with the object (the index drops it); children go by garbage collection.
        rt.written.pop(f"{namespace}/{name}", None)
        rt.retry_unplaced.clear()  # its memory is free now: unplaced servers may fit
        rt.server_locks.pop(f"{namespace}/{name}", None)
        rt.metrics.forget_server(namespace or "default", name)

    async def check(server: InferenceServer, indexes: Mapping[str, Any]) -> None:
        """The runtime check of one server: retry placement, leave lost GPUs, measure, heal."""
        key = server.key
        body = body_of(server)
        async with rt.server_locks[key]:
            current = rt.latest_status(server)
            if current is None or current.phase == "Failed":
                return
            nodes = nodes_of(indexes["gpu_nodes"])
            placement = current.placement
            if placement is None:
                moment = time.monotonic()
                if rt.retry_due(key, moment):  # capacity may have freed
                    outcome = await reconcile(body, server, indexes["inference_servers"], nodes, replace=False)
                    rt.record_unplaced(key, moment, outcome.placement is not None)
                return
            lost = lost_gpus(placement, nodes)
            if lost:
                message = f"GPU {', '.join(lost)} on {placement.node} is unhealthy or gone: re-placing"
                kopf.event(body, type="Warning", reason="GpuLost", message=message)
                rt.metrics.replacements.labels("GpuLost").inc()
                await reconcile(body, server, indexes["inference_servers"], nodes, replace=True)
                return
            pods = list(indexes["server_pods"].get(key, []))
            await observe(
                body, server, current, placement, servers=indexes["inference_servers"], nodes=nodes, pods=pods
            )

    async def check_servers(indexes: Mapping[str, Any]) -> None:
        limit = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(server: InferenceServer) -> None:
            async with limit:
                try:
                    await check(server, indexes)
                except Exception:  # one server's trouble must not stop the others' checks
                    log.exception("check of %s failed", server.key)

        indexed = [s for s in values(indexes["inference_servers"]) if s is not None]
        await asyncio.gather(*(one(s) for s in indexed))
        record_gpu_gauges(rt, rt.book.standing(indexed), nodes_of(indexes["gpu_nodes"]))

    rt.checks.append(check_servers)

    async def observe(
        body: kopf.Body,
        server: InferenceServer,
        current: InferenceServerStatus,
        placement: PlacementStatus,
        *,
        servers: Mapping[Any, Any],
        nodes: list[GpuNode],
        pods: list[PodFacts],
    ) -> None:
        ready, ready_message = readiness(pods, server.spec.replicas)
        uuids = [gpu.uuid for gpu in placement.gpus]
        memory = measure_server({pod.uid for pod in pods}, uuids, [n.status for n in nodes if n.status])
        failure, crashed = await detect_failure(pods)
        reason = failure.kind.value if failure else None
        message = failure.message if failure else ""
        if failure is not None and crashed is not None:
            outcome = await heal(
                body, server, current, placement, servers=servers, nodes=nodes, failure=failure, pod=crashed
            )
            message = f"{failure.message} ({outcome})"
        observation = Observation(
            ready=ready, ready_message=ready_message, memory=memory, failure_reason=reason, failure_message=message
        )
        moment = rfc3339(now())
        status = observed_status(current, observation, generation=current.observed_generation, now=moment)
        if status.model_dump(exclude={"memory"}) != current.model_dump(exclude={"memory"}) or memory_changed(
            current.memory, status.memory
        ):
            await write_status(server, status)
            report_transitions(body, current, status)
        namespace = server.metadata.namespace or "default"
        if memory is not None:
            rt.metrics.server_measured.labels(namespace, server.metadata.name).set(memory.used_mib)
            ratio = estimate_error(memory, placement.budget_mib)
            if ratio is not None:
                rt.metrics.estimate_ratio.labels(namespace, server.metadata.name).set(ratio)

    async def detect_failure(pods: list[PodFacts]) -> tuple[Failure | None, PodFacts | None]:
        """A memory failure of a crashing pod: its termination message, else a bounded log tail."""
        for pod in pods:
            if not pod.crashing:
                continue
            failure = classify(pod.termination_message)
            if failure is None:
                tail = await asyncio.to_thread(rt.kube.log_tail, pod.namespace, pod.name, pod.container)
                failure = classify(tail)
            if failure is not None:
                return failure, pod
        return None, None

    async def heal(
        body: kopf.Body,
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
        )
        rt.metrics.corrections.labels(failure.kind.value, fix.action).inc()
        if fix.action == "give_up":
            if attempts == settings.max_corrections:
                kopf.event(body, type="Warning", reason="CorrectionsExhausted", message=fix.message)
                await asyncio.to_thread(
                    rt.kube.annotate_server,
                    server.metadata.namespace or "default",
                    server.metadata.name,
                    {notes.CORRECTIONS: str(attempts + 1)},
                )
            return fix.message
        update: dict[str, str | None] = {notes.CORRECTIONS: str(attempts + 1), notes.CORRECTED_POD: pod.uid}
        if fix.action == "adjust" and fix.utilization is not None:
            update[notes.UTILIZATION] = f"{fix.utilization:.2f}"
        kopf.event(body, type="Warning", reason="Corrected", message=fix.message)
        await asyncio.to_thread(
            rt.kube.annotate_server, server.metadata.namespace or "default", server.metadata.name, update
        )
        if fix.action == "replace":
            await reconcile(body, server, servers, nodes, replace=True)
        return fix.message

    def report_transitions(body: kopf.Body, before: InferenceServerStatus, after: InferenceServerStatus) -> None:
        if before.memory is None and after.memory is not None:
            kopf.event(body, type="Normal", reason="MemoryMeasured", message=after.memory.display)
        if (
            condition_status(after.conditions, "MemoryFits")
            == "False"
            != condition_status(before.conditions, "MemoryFits")
        ):
            fits = next(c for c in after.conditions if c.type == "MemoryFits")
            kopf.event(body, type="Warning", reason="MeasuredAboveBudget", message=fits.message)
        if condition_status(after.conditions, "Degraded") == "True" != condition_status(before.conditions, "Degraded"):
            degraded = next(c for c in after.conditions if c.type == "Degraded")
            kopf.event(body, type="Warning", reason="Degraded", message=f"{degraded.reason}: {degraded.message}")


def record_gpu_gauges(rt: Runtime, standing: list[InferenceServer], nodes: list[GpuNode]) -> None:
    """Reserved vs measured MiB per GPU: reservations from the book, use of our servers' processes from the agents."""
    reserved = reserved_by(standing)
    owners = process_owners(standing, rt.indexes.get("server_pods"))
    for node in nodes:
        for gpu in node.status.gpus if node.status else []:
            measured = sum(p.used_mib or 0.0 for p in gpu.processes if owners.owner_of(p) is not None)
            rt.metrics.gpu_reserved.labels(node.metadata.name, gpu.uuid).set(reserved.get(gpu.uuid, 0.0))
            rt.metrics.gpu_measured.labels(node.metadata.name, gpu.uuid).set(measured)


def _with_assignment(placement: PlacementStatus | None, server: InferenceServer) -> PlacementStatus | None:
    assigned = notes.assigned_placement(server.metadata.annotations)
    if placement is None or assigned is None:
        return placement
    return placement.model_copy(update={"assignment": assigned.assignment, "strategy": "Manual"})
