"""`vram-operator plan`: the placement of servers on GPU nodes, offline, from YAML."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from vram_operator.api.gpu_assignment import STRATEGIES
from vram_operator.commands.output import console, mib_text, print_json
from vram_operator.decide import FleetDecision, decide, manual_assignments
from vram_operator.errors import InputError
from vram_operator.fit.errors import FitError
from vram_operator.manifests import Manifests, load
from vram_operator.placement.demand import ManualAssignment
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.placement.result import mib
from vram_operator.sizing.errors import SizingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="GpuNode, InferenceServer, GpuAssignment YAML (file or directory; repeatable)",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=None,
        help="placement strategy (default: the GpuAssignment's, else VRAMBased)",
    )
    parser.add_argument(
        "--margin-mib",
        type=float,
        default=DEFAULT_MARGIN_MIB,
        help=f"safety margin kept free on every GPU (default {DEFAULT_MARGIN_MIB:g})",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _strategy_and_pins(manifests: Manifests, requested: str | None) -> tuple[str, tuple[ManualAssignment, ...]]:
    if len(manifests.assignments) > 1:
        names = ", ".join(a.metadata.name for a in manifests.assignments)
        raise InputError(f"more than one GpuAssignment given ({names}); plan one at a time")
    assignment = manifests.assignments[0] if manifests.assignments else None
    pins: tuple[ManualAssignment, ...] = ()
    if assignment is not None:
        source = manifests.source_of("GpuAssignment", assignment.metadata.name)
        try:
            pins = manual_assignments(assignment)
        except SizingError as error:
            raise InputError(str(error), source=source, field=error.field) from None
    strategy = requested or (assignment.spec.strategy if assignment else "VRAMBased")
    return strategy, pins


def decide_from_manifests(
    manifests: Manifests, strategy: str | None, margin_mib: float, *, one_namespace_per_gpu: bool = False
) -> FleetDecision:
    """The fleet decision over what was read; bad input becomes an InputError naming file and field.

    `one_namespace_per_gpu`: as for dra pinning (servers of different namespaces never share a GPU).
    """
    if not manifests.nodes:
        raise InputError("no GpuNode in the input: nothing to place servers on", field="kind")
    if margin_mib < 0:
        raise InputError("must not be negative", field="--margin-mib")
    chosen, pins = _strategy_and_pins(manifests, strategy)
    try:
        decision = decide(
            manifests.servers,
            manifests.nodes,
            strategy=chosen,
            margin_mib=margin_mib,
            config_maps=manifests.config_maps,
            manual=pins,
            one_namespace_per_gpu=one_namespace_per_gpu,
        )
    except (PlacementError, FitError) as error:
        raise InputError(str(error), field=error.field) from None
    for server in manifests.servers:
        failed = decision.servers[server.key]
        if failed.sizing_error is not None:
            raise InputError(
                failed.sizing_error,
                source=manifests.source_of("InferenceServer", server.key),
                field=f"spec.{failed.sizing_field}" if failed.sizing_field else None,
            )
    return decision


def run(args: argparse.Namespace) -> int:
    decision = decide_from_manifests(load(args.filename), args.strategy, args.margin_mib)
    if args.output == "json":
        print_json(plan_document(decision))
    else:
        print_table(decision)
    return 0


def plan_document(decision: FleetDecision) -> dict[str, Any]:
    """The contract JSON: the planner's document with each engine's fitted utilization and warnings."""
    document = decision.plan.to_json_dict()
    for entry in document["unplaced"]:
        server = decision.servers[entry["server"]]
        if server.fit_message:
            entry["engine"] = {"reason": server.fit_reason, "message": server.fit_message}
    for entry in document["placements"]:
        server = decision.replica_decision(entry["server"], entry["replica"])
        entry["gpuMemoryUtilization"] = server.gpu_memory_utilization
        entry["warnings"] = list(server.warnings)
        if server.estimate is not None:
            entry["estimate"] = server.estimate.wire()
        entry["fits"] = server.fits
        if server.utilization_tier is not None or server.utilization_explanation:
            entry["utilizationTier"] = server.utilization_tier
            entry["utilizationExplanation"] = list(server.utilization_explanation)
    return document


def print_table(decision: FleetDecision) -> None:
    out = console()
    plan = decision.plan
    placed = Table(title=f"Placements (strategy {plan.strategy}, margin {mib(plan.margin_mib)}MiB per GPU)")
    for column in ("SERVER", "NODE", "GPU", "BUDGET", "UTIL", "WARNINGS"):
        placed.add_column(column, overflow="fold")
    for placement in plan.placements:
        server = decision.replica_decision(placement.server, placement.replica)
        util = server.gpu_memory_utilization
        placed.add_row(
            placement.key,
            placement.node,
            ",".join(str(i) for i in placement.gpu_indices),
            mib_text(placement.budget_mib),
            "-" if util is None else f"{util:.2f}",
            "\n".join(server.warnings) or "-",
        )
    out.print(placed)
    if plan.unplaced:
        unplaced = Table(title="Unplaced")
        for column in ("SERVER", "REASON", "MESSAGE"):
            unplaced.add_column(column, overflow="fold")
        for item in plan.unplaced:
            engine = decision.servers[item.server].fit_message
            unplaced.add_row(item.key, item.reason, f"{item.message}\n{engine}" if engine else item.message)
        out.print(unplaced)
    gpus = Table(title="GPUs after the plan")
    for column in ("NODE", "GPU", "NAME", "TOTAL", "FOREIGN", "RESERVED", "FREE AFTER", "SERVERS"):
        gpus.add_column(column, overflow="fold")
    for gpu in plan.gpus:
        free = mib_text(gpu.free_after_mib)
        gpus.add_row(
            gpu.node,
            str(gpu.index),
            gpu.name,
            mib_text(gpu.total_mib),
            mib_text(gpu.foreign_mib),
            mib_text(gpu.reserved_mib),
            f"[red]{free}[/red]" if gpu.free_after_mib < 0 else free,
            ", ".join(gpu.servers) or "-",
        )
    out.print(gpus)
    if plan.warnings:
        out.print("[bold]Warnings[/bold]")
        for warning in plan.warnings:
            out.print(f"  - {warning}")
    out.print("[bold]Why[/bold]")
    for placement in plan.placements:
        out.print(f"  {placement.key}: {placement.explanation}")
        for line in decision.replica_decision(placement.server, placement.replica).utilization_explanation:
            out.print(f"      utilization: {line}")
