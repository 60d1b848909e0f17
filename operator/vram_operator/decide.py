"""Deciding for a fleet: size every server, place them by strategy, fit each engine to its GPU.

The one entry point of the pure core that the CLI (`plan`) and the operator share: objects in
(servers, GPU nodes, reservations that stand), decisions out. No I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vram_operator.api import GpuAssignment, GpuNode, InferenceServer
from vram_operator.api.inference_server import EstimateStatus, PlacedGpu, PlacementStatus, ReplicaPlacementStatus
from vram_operator.fit.engine import engine_fit
from vram_operator.fit.errors import FitError
from vram_operator.fit.gpu_fit import GpuFit, fit_on_gpu
from vram_operator.fit.offer import GpuOffer
from vram_operator.fit.utilization import Tier, usual_range_warnings
from vram_operator.placement.agent_data import usable_agent_data
from vram_operator.placement.demand import ManualAssignment, ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.inventory import Inventory, SlotCache
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.ownership import ProcessOwners
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan
from vram_operator.placement.result import GpuSummary, Placement, Plan, Unplaced
from vram_operator.render import LlamaCppLaunch, PlacedReplica
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.generic import parse_quantity_mib
from vram_operator.sizing.measured import MeasuredRun, settings_key, sized_from_runs
from vram_operator.sizing.server import (
    REFERENCE_GPU_MIB,
    ServerSizing,
    size_server,
)

# ConfigMap data by (namespace, name).
ConfigMaps = Mapping[tuple[str, str], Mapping[str, str]]


@dataclass(frozen=True)
class ServerDecision:
    """Everything the operator writes into one server's status, and the CLI prints."""

    server: str
    estimate: EstimateStatus | None = None
    placement: PlacementStatus | None = None
    gpu_memory_utilization: float | None = None
    utilization_mode: Literal["auto", "manual"] | None = None
    engine_args: tuple[str, ...] = ()
    fits: bool = False
    fit_reason: str = ""
    fit_message: str = ""
    # The spec can never work (bad spec or config.json, whatever the fleet): the message and the spec
    # field to fix. Never set for a lack of room.
    sizing_error: str | None = None
    sizing_field: str | None = None
    # The spec is fine but does not fit now (InsufficientMemory, PinnedGpuUnavailable, ...): a reason
    # and a message with the numbers; deciding again once the fleet changes may place it.
    unplaced_reason: str | None = None
    unplaced_message: str | None = None
    warnings: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    # The engine fit of a placed server (llama.cpp layers and context are chosen by fitting).
    fit: GpuFit | None = None
    utilization_tier: Tier | None = None
    utilization_explanation: tuple[str, ...] = ()
    # With replicas, each is a placement of its own. A server's decision describes replica 0 (and
    # carries the warnings of all); `replicas` holds every placed replica's own decision, replica 0
    # first (empty when none is placed); `replicas_wanted` is how many the spec asks for.
    replica: int = 0
    replicas: tuple[ServerDecision, ...] = ()
    replicas_wanted: int = 1

    @property
    def replica_placements(self) -> list[ReplicaPlacementStatus]:
        """status.replicaPlacements: where each placed replica runs, with its own utilization."""
        return [
            ReplicaPlacementStatus(
                **r.placement.model_dump(), replica=r.replica, gpu_memory_utilization=r.gpu_memory_utilization
            )
            for r in self.replicas
            if r.placement is not None
        ]

    @property
    def llamacpp_launch(self) -> LlamaCppLaunch | None:
        """How to start llama.cpp where it was placed (layers on the GPU and context chosen by fitting)."""
        fit = self.fit
        if fit is None or fit.n_gpu_layers is None or fit.context_length is None:
            return None
        return LlamaCppLaunch(n_gpu_layers=fit.n_gpu_layers, context_length=fit.context_length, parallel=fit.parallel)


@dataclass(frozen=True)
class FleetDecision:
    """The plan and one decision per server asked about."""

    plan: Plan
    servers: dict[str, ServerDecision] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)

    def replica_decision(self, server: str, replica: int) -> ServerDecision:
        """The decision of one replica of a server: its own placement, utilization and fit."""
        decision = self.servers[server]
        return next((r for r in decision.replicas if r.replica == replica), decision)


def placed_replicas(decision: ServerDecision) -> list[PlacedReplica]:
    """What render needs of each placed replica: its placement, utilization and llama.cpp launch."""
    return [
        PlacedReplica(
            r.replica,
            r.placement,
            r.gpu_memory_utilization,
            r.llamacpp_launch,
            weights_mib=r.estimate.weights_mib if r.estimate else None,
        )
        for r in decision.replicas
        if r.placement is not None
    ]


def config_for(server: InferenceServer, config_maps: ConfigMaps) -> dict[str, object] | None:
    """The config.json a server names through model.configMapRef, parsed; None when it names none."""
    ref = server.spec.model.config_map_ref if server.spec.model else None
    if ref is None:
        return None
    namespace = server.metadata.namespace or "default"
    data = config_maps.get((namespace, ref.name))
    where = f"ConfigMap {namespace}/{ref.name}"
    if data is None:
        raise SizingError(f"{where} not found", field="model.configMapRef")
    if ref.key not in data:
        raise SizingError(f"{where} has no key {ref.key!r}", field="model.configMapRef.key")
    try:
        parsed = json.loads(data[ref.key])
    except json.JSONDecodeError as error:
        raise SizingError(f"{where} key {ref.key!r} is not JSON: {error.msg}", field="model.configMapRef") from None
    if not isinstance(parsed, dict):
        raise SizingError(f"{where} key {ref.key!r} is not a JSON object", field="model.configMapRef")
    return parsed


def demand_for(server: InferenceServer, sizing: ServerSizing, margin_mib: float = DEFAULT_MARGIN_MIB) -> ServerDemand:
    spec = server.spec
    pin = spec.placement

    @functools.lru_cache(maxsize=4096)
    def engine_check(budget_mib: float, gpu: GpuOffer) -> str | None:
        try:
            fit, _ = engine_fit(server, sizing, budget_mib, gpu, margin_mib)
        except ValueError as error:  # sizing and placement errors: the engine cannot be fitted there
            return str(error)
        return None if fit.fits else fit.message or fit.reason

    return ServerDemand(
        server=server.key,
        engine=spec.engine,
        preferred_mib=sizing.preferred_mib,
        min_mib=sizing.min_mib,
        tensor_parallel=spec.gpus_per_replica,
        dedicated=spec.isolation == "dedicated",
        latency_critical=spec.latency_critical,
        is_llm=sizing.is_llm,
        pin_node=pin.node if pin else None,
        pin_gpus=tuple(pin.gpus) if pin else (),
        fixed_utilization=sizing.fixed_utilization,
        beyond_share_mib=sizing.beyond_share_mib,
        notes=sizing.warnings,
        # A generic server's fit is its budget, which the planner already checks.
        engine_check=engine_check if sizing.engine != "generic" else None,
    )


def replica_demands(
    server: InferenceServer, sizing: ServerSizing, margin_mib: float = DEFAULT_MARGIN_MIB
) -> list[ServerDemand]:
    """One demand per replica: each is placed on its own (spec.replicas 0 still holds one placement)."""
    first = demand_for(server, sizing, margin_mib)
    return [first] + [dataclasses.replace(first, replica=i) for i in range(1, max(1, server.spec.replicas))]


def manual_assignments(assignment: GpuAssignment) -> tuple[ManualAssignment, ...]:
    """The manual pins of a GpuAssignment, budgets parsed."""
    return tuple(
        ManualAssignment(
            server=entry.server,
            node=entry.node,
            gpus=tuple(entry.gpus),
            budget_override_mib=(
                parse_quantity_mib(entry.vram_budget_override, "vramBudgetOverride")
                if entry.vram_budget_override is not None
                else None
            ),
        )
        for entry in assignment.spec.assignments
    )


def decide(
    servers: Sequence[InferenceServer],
    nodes: Iterable[GpuNode],
    *,
    strategy: str = "VRAMBased",
    margin_mib: float = DEFAULT_MARGIN_MIB,
    reserved: Iterable[InferenceServer] = (),
    config_maps: ConfigMaps | None = None,
    stale_nodes: frozenset[str] = frozenset(),
    manual: Sequence[ManualAssignment] = (),
    pod_uids: Mapping[str, Collection[str]] | None = None,
    measured: Mapping[str, Sequence[MeasuredRun]] | None = None,
    slot_cache: SlotCache | None = None,
    one_namespace_per_gpu: bool = False,
) -> FleetDecision:
    """Size and place `servers`; the placements of `reserved` servers (not re-planned) stand.

    `pod_uids` ("namespace/name" -> the UIDs of that server's pods) decides which GPU processes are
    ours; without it (offline, hand-written GpuNodes) a pod named after a server is (ownership.py).
    `measured` (settings key -> runs the engines reported) sizes a server of those settings from
    what its engine used before (sizing/measured.py). `slot_cache` keeps the GPUs of unchanged nodes
    from one call to the next (the operator decides batch after batch against the same fleet).
    `one_namespace_per_gpu` (dra pinning): servers of different namespaces never share a GPU.
    """
    deciding = {server.key for server in servers}
    standing = [server for server in reserved if server.key not in deciding]
    owners = ProcessOwners.of([*deciding, *(s.key for s in standing)], pod_uids)
    usable_nodes, unusable = usable_agent_data(list(nodes))  # odd agent data: left out with a reason
    inventory = Inventory.from_gpu_nodes(usable_nodes, owners, stale_nodes, slot_cache)
    usable = [slot.total_mib for slot in inventory.slots if slot.usable]
    reference_mib = max(usable) if usable else REFERENCE_GPU_MIB

    sizings: dict[str, ServerSizing] = {}
    decisions: dict[str, ServerDecision] = {}
    demands: list[ServerDemand] = []
    for server in servers:
        try:
            sizing = size_server(server.spec, config_for(server, config_maps or {}), gpu_total_mib=reference_mib)
            sizing = sized_from_runs(sizing, (measured or {}).get(settings_key(server.spec), ()))
            demands_of_server = replica_demands(server, sizing, margin_mib)
        except (SizingError, PlacementError, FitError) as error:
            decisions[server.key] = ServerDecision(server=server.key, sizing_error=str(error), sizing_field=error.field)
            continue
        sizings[server.key] = sizing
        demands.extend(demands_of_server)

    result = plan(
        inventory,
        demands,
        strategy,
        ledger=Ledger.from_servers(standing),
        margin_mib=margin_mib,
        manual=manual,
        one_namespace_per_gpu=one_namespace_per_gpu,
    )
    if unusable:
        left_out = tuple(f"GPU {gpu.uuid} on {gpu.node} left out: {gpu.message}" for gpu in unusable)
        result = dataclasses.replace(result, warnings=(*result.warnings, *left_out))
    by_key = {server.key: server for server in servers}
    placed: dict[str, list[ServerDecision]] = {}
    summaries = {summary.uuid: summary for summary in result.gpus}  # once per batch: a fleet has thousands
    for placement in result.placements:
        server = by_key[placement.server]
        decision = _placed(server, sizings[server.key], placement, result, summaries)
        if decision.placement is None:
            # The engine cannot start on the GPU the planner chose: not a placement.
            result = _withdrawn(result, placement, decision)
            summaries.update((gpu.uuid, gpu) for gpu in result.gpus if gpu.uuid in placement.gpu_uuids)
            continue
        placed.setdefault(server.key, []).append(decision)
    unplaced: dict[str, list[Unplaced]] = {}
    for item in result.unplaced:
        unplaced.setdefault(item.server, []).append(item)
    for key, sizing in sizings.items():
        server = by_key[key]
        on_gpus = sorted(placed.get(key, []), key=lambda d: d.replica)
        left = sorted(unplaced.get(key, []), key=lambda u: u.replica)
        wanted = len(on_gpus) + len(left)
        if on_gpus:
            decisions[key] = _with_replicas(on_gpus, left, wanted)
        else:
            decisions[key] = dataclasses.replace(
                _unplaced(server, sizing, left[0], result, inventory), replicas_wanted=wanted
            )
    return FleetDecision(plan=result, servers=decisions, inventory=inventory)


def _with_replicas(replicas: list[ServerDecision], left: list[Unplaced], wanted: int) -> ServerDecision:
    """The server's decision from its placed replicas (replica 0's, with every replica's warnings, and
    not fitting if one of them does not): partial placement says which replicas are left, and why."""
    first = replicas[0]
    warnings = [w for r in replicas for w in r.warnings]
    if left:
        missing = ", ".join(str(u.replica) for u in left)
        warnings.append(
            f"{len(replicas)}/{wanted} replicas placed; replica {missing} not: {left[0].reason}: {left[0].message}"
        )
    for uuid in dict.fromkeys(u for r in replicas for u in _uuids(r)):
        sharing = [r.replica for r in replicas if uuid in _uuids(r)]
        if len(sharing) > 1:
            warnings.append(
                f"replicas {', '.join(map(str, sharing))} share GPU {uuid}, each with its own budget: "
                "one GPU failure stops them all"
            )
    misfit = next((r for r in replicas if not r.fits), None)
    return dataclasses.replace(
        first,
        warnings=tuple(dict.fromkeys(warnings)),
        fits=misfit is None,
        fit_reason=first.fit_reason if misfit is None else misfit.fit_reason,
        fit_message=first.fit_message if misfit is None else _replica_text(misfit, misfit.fit_message),
        replicas=tuple(replicas),
        replicas_wanted=wanted,
        # Partly placed: why the others wait (the server is placed; the rest is retried).
        unplaced_reason=left[0].reason if left else None,
        unplaced_message=left[0].message if left else None,
    )


def _uuids(decision: ServerDecision) -> list[str]:
    return [g.uuid for g in decision.placement.gpus] if decision.placement else []


def _replica_text(decision: ServerDecision, text: str) -> str:
    return text if decision.replica == 0 or not text else f"replica {decision.replica}: {text}"


def _unplaced(
    server: InferenceServer, sizing: ServerSizing, unplaced: Unplaced, result: Plan, inventory: Inventory
) -> ServerDecision:
    """A server none of whose replicas is placed: the reason, and what vLLM would do at best."""
    best = _best_gpu_fit(server, sizing, result, inventory)
    return ServerDecision(
        server=unplaced.server,
        estimate=best.estimate
        if best
        else EstimateStatus(total_mib=round(sizing.preferred_mib, 1), source=sizing.source),
        gpu_memory_utilization=best.utilization if best else None,
        fit_reason=best.reason if best else "",
        fit_message=best.message if best else "",
        unplaced_reason=unplaced.reason,
        unplaced_message=unplaced.message,
        warnings=_sizing_warnings(sizing),
        reasons=sizing.reasons,
    )


def _sizing_warnings(sizing: ServerSizing) -> tuple[str, ...]:
    """Warnings of a server that holds no GPU: its sizing's, and a hand-set utilization out of range."""
    fixed = sizing.fixed_utilization
    return (*sizing.warnings, *(usual_range_warnings(fixed) if fixed is not None else ()))


def _best_gpu_fit(server: InferenceServer, sizing: ServerSizing, result: Plan, inventory: Inventory) -> GpuFit | None:
    """For an unplaced vLLM server: what vLLM would do on the usable GPU with the most free memory.

    This turns "does not fit" into the engine's own failure with numbers (start-up check, no KV blocks).
    """
    if sizing.engine != "vllm":
        return None
    usable = {slot.uuid for slot in inventory.slots if slot.usable}
    candidates = [g for g in result.gpus if g.uuid in usable]
    if not candidates:
        return None
    gpu = max(candidates, key=lambda g: (g.total_mib - g.foreign_mib - g.reserved_mib, g.total_mib))
    free = gpu.total_mib - gpu.foreign_mib - gpu.reserved_mib
    fixed = sizing.fixed_utilization
    budget = fixed * gpu.total_mib + sizing.beyond_share_mib if fixed else max(free - result.margin_mib, 0.0)
    return fit_on_gpu(sizing, server.spec, budget, gpu.total_mib, gpu_free_mib=max(free, 0.0), gpu_name=gpu.name)


def _withdrawn(result: Plan, placement: Placement, decision: ServerDecision) -> Plan:
    """`result` with `placement` moved to the unplaced (its budget no longer held on its GPUs)."""
    held = set(placement.gpu_uuids)
    gpus = tuple(
        gpu._replace(
            reserved_mib=gpu.reserved_mib - placement.budget_mib,
            free_after_mib=gpu.free_after_mib + placement.budget_mib,
            servers=tuple(s for s in gpu.servers if s != placement.key),
        )
        if gpu.uuid in held
        else gpu
        for gpu in result.gpus
    )
    unplaced = Unplaced(
        placement.server, decision.unplaced_reason or "", decision.unplaced_message or "", replica=placement.replica
    )
    return dataclasses.replace(
        result,
        placements=tuple(p for p in result.placements if p.key != placement.key),
        unplaced=(*result.unplaced, unplaced),
        gpus=gpus,
    )


def _placed(
    server: InferenceServer,
    sizing: ServerSizing,
    placement: Placement,
    result: Plan,
    summaries: Mapping[str, GpuSummary],
) -> ServerDecision:
    """`placement` as the server's decision; `summaries` are `result`'s GPUs by UUID."""
    gpus = [summaries[uuid] for uuid in placement.gpu_uuids]
    smallest = min(gpus, key=lambda g: g.total_mib)
    offer = GpuOffer(
        label=f"{smallest.node} GPU {smallest.index} {smallest.name} {smallest.total_mib:.0f}MiB",
        name=smallest.name,
        total_mib=smallest.total_mib,
        foreign_mib=smallest.foreign_mib,
        reserved_by_others_mib=smallest.reserved_mib - placement.budget_mib,
        # What vLLM's start-up check will see: the GPU without this server's own reservation.
        free_at_start_mib=min(g.total_mib - g.foreign_mib - (g.reserved_mib - placement.budget_mib) for g in gpus),
    )
    fit, choice = engine_fit(server, sizing, placement.budget_mib, offer, result.margin_mib)
    if sizing.engine == "vllm" and fit.utilization is None:
        # The planner checks the engine before it chooses a GPU; this is the last guard.
        where = f"{placement.node} GPU {smallest.index} ({smallest.name}, {smallest.total_mib:.0f}MiB)"
        return ServerDecision(
            server=placement.server,
            replica=placement.replica,
            estimate=fit.estimate,
            fit_reason=fit.reason,
            fit_message=fit.message,
            unplaced_reason="InsufficientMemory",
            unplaced_message=f"cannot start on {where}: {fit.message}",
            warnings=_sizing_warnings(sizing),
            reasons=sizing.reasons,
            fit=fit,
        )
    status = PlacementStatus(
        node=placement.node,
        gpus=[PlacedGpu(index=g.index, uuid=g.uuid, name=g.name, total_mib=g.total_mib, mig=g.mig) for g in gpus],
        gpu_summary=",".join(str(g.index) for g in gpus),
        budget_mib=round(placement.budget_mib, 1),
        strategy=result.strategy,
        reason=placement.explanation,
    )
    mode: Literal["auto", "manual"] | None = None
    if sizing.engine == "vllm":
        mode = "manual" if sizing.fixed_utilization is not None else "auto"
    warnings = tuple(dict.fromkeys((*sizing.warnings, *placement.warnings, *fit.warnings)))
    if not fit.fits and fit.message:
        warnings = (*warnings, fit.message)
    return ServerDecision(
        server=placement.server,
        replica=placement.replica,
        estimate=fit.estimate,
        placement=status,
        gpu_memory_utilization=fit.utilization,
        utilization_mode=mode,
        engine_args=fit.engine_args,
        fits=fit.fits,
        fit_reason=fit.reason,
        fit_message=fit.message,
        warnings=tuple(dict.fromkeys((*warnings, *(choice.warnings if choice else ())))),
        reasons=sizing.reasons,
        fit=fit,
        utilization_tier=choice.tier if choice else None,
        utilization_explanation=choice.explanation if choice else (),
    )
