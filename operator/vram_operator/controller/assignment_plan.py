"""What a GpuAssignment's plan reports besides its entries, and when a Preview is planned again.

- plan_warnings: the planning run's warnings and each server's own, every one listed once and
  prefixed with its server once (the planner already names the server in some of its warnings).
- overcommits: the GPUs the plan over-commits where one of the assignment's servers is placed, one
  message each with the amounts (a Manual assignment may do this, and is warned).
- preview_inputs: what a Preview's plan depends on besides its own spec (the servers, the GpuNodes'
  GPUs and memory), without what changes at every heartbeat; a Preview is planned again only when
  these (or its generation) differ, and its status is written only when the plan differs.

Pure: models in, values out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller.annotations import PREFIX as OPERATOR_PREFIX
from vram_operator.placement.result import GpuSummary

WARNINGS_LIMIT = 256


def _names_server(warning: str, server: str) -> bool:
    return warning.startswith((f"{server}: ", f"{server}["))


def plan_warnings(run: Sequence[str], per_server: Mapping[str, Sequence[str]]) -> list[str]:
    """The run's warnings, then each server's (prefixed with the server unless it already names it),
    without repeats, at most WARNINGS_LIMIT."""
    merged = list(run)
    for server, warnings in per_server.items():
        merged += [w if _names_server(w, server) else f"{server}: {w}" for w in warnings]
    return list(dict.fromkeys(merged))[:WARNINGS_LIMIT]


def _server_of(tenant: str) -> str:
    """The server of a planner tenant key ("ns/name" or "ns/name[i]" for replica i)."""
    return tenant.split("[", 1)[0]


def overcommits(gpus: Iterable[GpuSummary], servers: Collection[str]) -> dict[str, str]:
    """Per GPU UUID the plan over-commits and that holds one of `servers`: a message naming the GPU,
    its amounts and its tenants."""
    found = {}
    for gpu in gpus:
        if gpu.free_after_mib >= 0 or not any(_server_of(t) in servers for t in gpu.servers):
            continue
        found[gpu.uuid] = (
            f"{gpu.node} GPU {gpu.index} ({gpu.name or 'unknown'}, {gpu.uuid}) over-committed by "
            f"{-gpu.free_after_mib:.0f}MiB: reserved {gpu.reserved_mib:.0f}MiB + foreign {gpu.foreign_mib:.0f}MiB "
            f"+ margin {gpu.margin_mib:.0f}MiB > total {gpu.total_mib:.0f}MiB (servers: {', '.join(gpu.servers)})"
        )
    return found


def _server_facts(server: InferenceServer) -> tuple[object, ...]:
    replicas = server.status.placed_replicas() if server.status else []
    placed = tuple((p.node, tuple(g.uuid for g in p.gpus), round(p.budget_mib)) for p in replicas)
    notes = tuple(sorted((k, v) for k, v in server.metadata.annotations.items() if k.startswith(OPERATOR_PREFIX)))
    return (server.key, server.metadata.generation, tuple(sorted(server.metadata.labels.items())), placed, notes)


def _node_facts(node: GpuNode) -> tuple[object, ...]:
    gpus = node.status.gpus if node.status else []
    return (
        node.metadata.name,
        node.spec.cordoned,
        tuple(
            (
                g.uuid,
                g.memory_total_mib,
                g.memory_reserved_mib,
                g.unattributed_mib,
                g.healthy,
                g.mig_enabled,
                tuple(sorted((p.pod_uid or "", p.pid, p.used_mib or 0.0) for p in g.processes)),
            )
            for g in gpus
        ),
    )


def preview_inputs(
    servers: Iterable[InferenceServer], nodes: Iterable[GpuNode], stale_nodes: Collection[str]
) -> tuple[object, ...]:
    """A value that changes when a plan input besides the assignment itself changes: each server's
    spec, labels, placement and operator annotations, each GPU's capacity, health and the memory its
    processes use, cordons, and which agents are stale. Heartbeat times are left out."""
    return (
        frozenset(_server_facts(s) for s in servers),
        frozenset(_node_facts(n) for n in nodes),
        frozenset(stale_nodes),
    )
