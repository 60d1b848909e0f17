"""`kubectl vram`: the live fleet by VRAM (top), a placement preview (plan), and why a server is
where it is (explain).

Installed as the console script `kubectl-vram`, so kubectl finds it as a plugin. The functions that
turn objects into tables are pure (objects in, rich renderables out); only `main` and the `fetch_*`
helpers talk to the API server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vram_operator.api import GpuNode, InferenceServer
from vram_operator.api.base import GROUP, VERSION
from vram_operator.api.gpu_assignment import STRATEGIES
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuProcess
from vram_operator.commands.output import console, mib_text, print_json
from vram_operator.commands.plan import decide_from_manifests, plan_document
from vram_operator.commands.plan import print_table as print_plan_table
from vram_operator.controller.gpu_view import reserved_by
from vram_operator.decide import FleetDecision, decide
from vram_operator.errors import InputError
from vram_operator.manifests import load
from vram_operator.placement.demand import replica_key
from vram_operator.placement.ownership import ProcessOwners, not_ours
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.render.metadata import SERVER_LABEL


class PluginError(Exception):
    """A one-line error for the user (bad argument, unreadable kubeconfig, API refusal)."""


# --- pure: who owns a GPU process -------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who a GPU process belongs to: an InferenceServer, another pod, or nothing in Kubernetes."""

    kind: str  # "server" | "pod" | "foreign"
    name: str

    def text(self) -> str:
        return {"server": f"infs {self.name}", "pod": f"pod {self.name}", "foreign": f"foreign: {self.name}"}[self.kind]


def in_namespace(owner: Owner, namespace: str) -> bool:
    """Whether a process's owner (a server or pod, named NAMESPACE/NAME) lives in `namespace`."""
    return owner.kind != "foreign" and owner.name.partition("/")[0] == namespace


def owner_of(process: GpuProcess, owners: ProcessOwners) -> Owner:
    """The InferenceServer by the one ownership rule (its pods' UIDs; placement/ownership.py), else the
    pod; a process of no pod is foreign, named by process."""
    server = owners.owner_of(process)
    if server is not None:
        return Owner("server", server)
    if process.pod_name:
        return Owner("pod", f"{process.pod_namespace or 'default'}/{process.pod_name}")
    if process.pod_uid:
        return Owner("pod", f"uid {process.pod_uid}")
    return Owner("foreign", process.name or f"pid {process.pid}")


# --- pure: top --------------------------------------------------------------------------------


GPU_BLANK = ("",) * 7  # a process row leaves the seven GPU columns empty


def _percent(used: float, total: float) -> str:
    return f"{100.0 * used / total:.1f}%" if total > 0 else "-"


def _gpu_state(gpu: GpuDeviceStatus, reserved_mib: float, owners: ProcessOwners) -> Text:
    """LOST; FULL (nothing free: a server restarting there fails); OVERCOMMITTED (reservations and
    foreign use exceed the memory: a restart may fail); else ok."""
    if not gpu.healthy or gpu.memory_total_mib <= 0:
        return Text("LOST", style="bold red")
    if gpu.memory_free_mib <= 0 or gpu.memory_used_mib >= gpu.memory_total_mib:
        return Text("FULL", style="bold red")
    if reserved_mib + not_ours(gpu, owners).mib > gpu.memory_total_mib:
        return Text("OVERCOMMITTED", style="yellow")
    return Text("ok", style="green")


def top_table(
    nodes: Sequence[GpuNode],
    servers: Sequence[InferenceServer],
    pod_uids: Mapping[str, Collection[str]],
    namespace: str | None = None,
) -> Table:
    """nvidia-smi for the cluster: one row per GPU (used / total, reserved by the operator), then one
    row per process with its owner; with `namespace`, only the processes of that namespace's servers
    and pods (every GPU row stays: its totals count everyone)."""
    reserved = reserved_by(servers)
    owners = ProcessOwners.of((server.key for server in servers), pod_uids)
    table = Table(title="GPU memory (from GpuNode status)", show_lines=False)
    for column, justify in (
        ("NODE", "left"),
        ("GPU", "right"),
        ("NAME", "left"),
        ("USED / TOTAL", "right"),
        ("USE", "right"),
        ("RESERVED", "right"),
        ("STATE", "left"),
        ("PID", "right"),
        ("OWNER", "left"),
        ("PROCESS USED", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for node in sorted(nodes, key=lambda n: n.metadata.name):
        status = node.status
        if status is None or not status.gpus:
            table.add_row(node.metadata.name, "-", "no report from the agent yet", *([""] * 7))
            continue
        for gpu in sorted(status.gpus, key=lambda g: g.index):
            table.add_row(
                node.metadata.name,
                str(gpu.index),
                gpu.name,
                f"{mib_text(gpu.memory_used_mib)} / {mib_text(gpu.memory_total_mib)}",
                _percent(gpu.memory_used_mib, gpu.memory_total_mib),
                mib_text(reserved.get(gpu.uuid, 0.0)),
                _gpu_state(gpu, reserved.get(gpu.uuid, 0.0), owners),
                "",
                "",
                "",
            )
            for process in sorted(gpu.processes, key=lambda p: -(p.used_mib or 0.0)):
                owner = owner_of(process, owners)
                if namespace is not None and not in_namespace(owner, namespace):
                    continue
                style = "yellow" if owner.kind == "foreign" else ""
                table.add_row(*GPU_BLANK, str(process.pid), Text(owner.text(), style=style), mib_text(process.used_mib))
            if gpu.unattributed_mib > 0:
                table.add_row(*GPU_BLANK, "-", "unattributed", mib_text(gpu.unattributed_mib))
    return table


# --- pure: plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """A server whose planned place differs from where it is now."""

    server: str
    now: str
    planned: str


def _where(node: str | None, indices: Iterable[int]) -> str:
    return f"{node}:{','.join(str(i) for i in indices)}" if node else "-"


def moves(servers: Sequence[InferenceServer], decision: FleetDecision) -> list[Move]:
    """Servers the plan would move (or place, or leave unplaced) compared with their status."""
    planned = {p.key: _where(p.node, p.gpu_indices) for p in decision.plan.placements}
    changed: list[Move] = []
    for server in sorted(servers, key=lambda s: s.key):
        placed = {p.replica: p for p in (server.status.placed_replicas() if server.status else [])}
        for replica in range(max(server.spec.replicas, len(placed), 1)):  # each replica is a placement
            key = replica_key(server.key, replica)
            where = placed.get(replica)
            now = _where(where.node, (g.index for g in where.gpus)) if where else "-"
            then = planned.get(key, "-")
            if now != then:
                changed.append(Move(key, now, then))
    return changed


def moves_table(changed: Sequence[Move]) -> RenderableType:
    if not changed:
        return Text("No server would move: the live placement matches the plan.")
    table = Table(title="Changes against the live placement (node:GPU indices)")
    for column in ("SERVER", "NOW", "PLANNED"):
        table.add_column(column, overflow="fold")
    for move in changed:
        table.add_row(move.server, move.now, move.planned)
    return table


def not_sized_table(decision: FleetDecision) -> RenderableType | None:
    failed = [d for d in decision.servers.values() if d.sizing_error is not None]
    if not failed:
        return None
    table = Table(title="Not sized (fix the spec)")
    for column in ("SERVER", "FIELD", "ERROR"):
        table.add_column(column, overflow="fold")
    for item in sorted(failed, key=lambda d: d.server):
        table.add_row(item.server, f"spec.{item.sizing_field}" if item.sizing_field else "-", item.sizing_error or "")
    return table


# --- pure: explain ----------------------------------------------------------------------------


def explain(server: InferenceServer) -> RenderableType:
    """Why the server is where it is: placement and its reason, estimate, warnings, conditions."""
    status = server.status
    head = Text(f"InferenceServer {server.key}  engine {server.spec.engine}", style="bold")
    if status is None:
        return Group(head, Text("No status yet: the operator has not reconciled this server."))
    parts: list[RenderableType] = [head, Text(f"Phase: {status.phase}")]
    placement = status.placement
    if placement is not None:
        gpus = ", ".join(f"{g.index} ({g.name or g.uuid}, {mib_text(g.total_mib)})" for g in placement.gpus)
        by = f"strategy {placement.strategy}"
        if placement.assignment:
            by += f", GpuAssignment {placement.assignment}"
        budget = mib_text(placement.budget_mib)
        parts += [
            Text(f"Placed on {placement.node}, GPU {gpus or '-'}; budget {budget} per GPU ({by})"),
            Text("Why: " + (placement.reason or "(no reason recorded)")),
        ]
    else:
        parts.append(Text("Not placed."))
    replicas = status.placed_replicas()
    if len(replicas) > 1 or server.spec.replicas > 1:
        parts.append(Text(f"Replicas placed: {len(replicas)}/{max(1, server.spec.replicas)}"))
        for placed in replicas:
            gpus = ",".join(str(g.index) for g in placed.gpus)
            utilization = (
                "" if placed.gpu_memory_utilization is None else f", utilization {placed.gpu_memory_utilization:.2f}"
            )
            parts.append(
                Text(
                    f"  replica {placed.replica}: {placed.node} GPU {gpus}; "
                    f"budget {mib_text(placed.budget_mib)}{utilization}"
                )
            )
    if status.gpu_memory_utilization is not None:
        parts.append(Text(f"gpu-memory-utilization {status.gpu_memory_utilization:.2f} ({status.utilization_mode})"))
    if status.memory is not None and status.memory.display:
        parts.append(Text(f"Measured: {status.memory.display}"))
    estimate = status.estimate
    if estimate is not None:
        table = Table(title=f"Estimate per GPU (source: {estimate.source})")
        for column in ("WEIGHTS", "ACTIVATION", "OVERHEAD", "KV CACHE", "TOTAL", "KV TOKENS", "MAX CONCURRENCY"):
            table.add_column(column, justify="right")
        table.add_row(
            mib_text(estimate.weights_mib),
            mib_text(estimate.activation_mib),
            mib_text(estimate.overhead_mib),
            mib_text(estimate.kv_cache_mib),
            mib_text(estimate.total_mib),
            f"{estimate.kv_cache_tokens:,}",
            f"{estimate.max_concurrency:.1f}",
        )
        parts.append(table)
    if status.warnings:
        parts.append(Text("Warnings:\n" + "\n".join(f"  - {w}" for w in status.warnings), style="yellow"))
    if status.conditions:
        table = Table(title="Conditions")
        for column in ("TYPE", "STATUS", "REASON", "MESSAGE"):
            table.add_column(column, overflow="fold")
        for condition in status.conditions:
            table.add_row(condition.type, condition.status, condition.reason, condition.message)
        parts.append(table)
    return Group(*parts)


# --- the API server ---------------------------------------------------------------------------


def parse_server(body: Mapping[str, Any]) -> InferenceServer:
    """An InferenceServer as served; a status this version cannot read is dropped, not fatal."""
    try:
        return InferenceServer.model_validate(body)
    except ValidationError:
        return InferenceServer.model_validate({k: v for k, v in body.items() if k != "status"})


def fetch_servers(api: Any, namespace: str | None = None) -> list[InferenceServer]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    listed: Any
    if namespace:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, InferenceServer.plural)
    else:
        listed = custom.list_cluster_custom_object(GROUP, VERSION, InferenceServer.plural)
    servers = []
    for item in listed.get("items", []):
        try:
            servers.append(parse_server(item))
        except ValidationError:
            continue  # the operator reports a bad spec on the object; the plugin skips it
    return servers


def fetch_gpu_nodes(api: Any) -> list[GpuNode]:
    from kubernetes import client

    listed: Any = client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, GpuNode.plural)
    return [GpuNode.model_validate(item) for item in listed.get("items", [])]


def fetch_server_pod_uids(api: Any) -> dict[str, set[str]]:
    """Per server ("namespace/name"), the UIDs of the pods carrying its vram.dev/server label."""
    from kubernetes import client

    pods: list[Any] = client.CoreV1Api(api).list_pod_for_all_namespaces(label_selector=SERVER_LABEL).items
    uids: dict[str, set[str]] = {}
    for pod in pods:
        server = (pod.metadata.labels or {}).get(SERVER_LABEL)
        if server and pod.metadata.uid:
            uids.setdefault(f"{pod.metadata.namespace}/{server}", set()).add(pod.metadata.uid)
    return uids


def fetch_config_maps(api: Any, servers: Iterable[InferenceServer]) -> dict[tuple[str, str], dict[str, str]]:
    """The ConfigMaps the servers name in model.configMapRef (a missing one is left out: the
    server then shows under "Not sized" with the reason)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    found: dict[tuple[str, str], dict[str, str]] = {}
    for server in servers:
        ref = server.spec.model.config_map_ref if server.spec.model else None
        if ref is None:
            continue
        key = (server.metadata.namespace or "default", ref.name)
        if key in found:
            continue
        try:
            found[key] = dict(core.read_namespaced_config_map(ref.name, key[0]).data or {})
        except ApiException as error:
            if error.status != 404:
                raise
    return found


def api_client(kubeconfig: str | None, context: str | None) -> Any:
    from kubernetes import config

    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise PluginError(f"--kubeconfig: cannot load cluster credentials: {error}") from None


def context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The namespace the kubeconfig's (current or named) context sets, as kubectl defaults to."""
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise PluginError(f"--kubeconfig: cannot load cluster credentials: {error}") from None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else current
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def split_server(reference: str, namespace: str | None) -> tuple[str, str]:
    """'ns/name', or 'name' with -n (default namespace "default")."""
    if "/" in reference:
        ns, _, name = reference.partition("/")
        if not ns or not name or "/" in name:
            raise PluginError(f"server: expected NAME or NAMESPACE/NAME, got {reference!r}")
        return ns, name
    return namespace or "default", reference


# --- command line -----------------------------------------------------------------------------


def _fleet_scope() -> argparse.ArgumentParser:
    """-n/-A of top and plan. GPUs are shared by every namespace, so both look at the whole fleet
    (like `kubectl top node`); -n only narrows what is listed to that namespace's servers."""
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("-n", "--namespace", help="list only this namespace's servers and processes")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="list every namespace (the default)")
    return scope


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl vram", description="GPU memory of the cluster, by VRAM.")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    verbs.add_parser("top", parents=[_fleet_scope()], help="GPU memory per node, GPU and process, with owners")
    plan = verbs.add_parser(
        "plan", parents=[_fleet_scope()], help="what a strategy would do with the live fleet (changes nothing)"
    )
    plan.add_argument("-f", "--filename", action="append", metavar="PATH",
                      help="plan GpuNode/InferenceServer/GpuAssignment files offline (no cluster needed)")  # fmt: skip
    # Manual needs a GpuAssignment's pins: with -f, a Manual GpuAssignment in the files is planned.
    plan.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "Manual"], default=None,
                      help="default: VRAMBased (with -f: the GpuAssignment's, else VRAMBased)")  # fmt: skip
    plan.add_argument("--margin-mib", type=float, default=float(DEFAULT_MARGIN_MIB), help="safety margin per GPU")
    plan.add_argument("-o", "--output", choices=("table", "json"), default="table")
    why = verbs.add_parser("explain", help="why a server is where it is")
    why.add_argument("server", help="NAME or NAMESPACE/NAME")
    why.add_argument("-n", "--namespace", help="namespace of NAME (default: the kubeconfig context's, else default)")
    return parser


def listed_namespace(args: argparse.Namespace) -> str | None:
    """The namespace top/plan list (None: all): -A wins over -n, as in kubectl."""
    return None if args.all_namespaces else args.namespace


def _top(api: Any, args: argparse.Namespace) -> int:
    servers = fetch_servers(api)
    console().print(top_table(fetch_gpu_nodes(api), servers, fetch_server_pod_uids(api), listed_namespace(args)))
    return 0


def _plan_files(args: argparse.Namespace) -> int:
    """plan -f: the offline planner over files, as `vram-operator plan -f`; no kubeconfig is read."""
    decision = decide_from_manifests(load(args.filename), args.strategy, args.margin_mib)
    if args.output == "json":
        print_json(plan_document(decision))
    else:
        print_plan_table(decision)
    return 0


def _plan(api: Any, args: argparse.Namespace) -> int:
    if args.margin_mib < 0:
        raise PluginError(f"--margin-mib: must not be negative, got {args.margin_mib:g}")
    servers = fetch_servers(api)
    nodes = fetch_gpu_nodes(api)
    if not nodes:
        raise PluginError("no GpuNode in the cluster: is the vram-operator agent running on the GPU nodes?")
    decision = decide(
        servers,
        nodes,
        strategy=args.strategy or "VRAMBased",
        margin_mib=args.margin_mib,
        config_maps=fetch_config_maps(api, servers),
        pod_uids=fetch_server_pod_uids(api),
    )
    namespace = listed_namespace(args)
    changed = [m for m in moves(servers, decision) if namespace is None or m.server.startswith(f"{namespace}/")]
    if args.output == "json":
        document = plan_document(decision)
        document["changes"] = [{"server": m.server, "now": m.now, "planned": m.planned} for m in changed]
        document["notSized"] = [
            {"server": d.server, "field": d.sizing_field, "message": d.sizing_error}
            for d in decision.servers.values()
            if d.sizing_error is not None
        ]
        print_json(document)
        return 0
    print_plan_table(decision)
    out = console()
    failed = not_sized_table(decision)
    if failed is not None:
        out.print(failed)
    out.print(moves_table(changed))
    return 0


def _explain(api: Any, args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace, name = split_server(args.server, args.namespace or context_namespace(args.kubeconfig, args.context))
    try:
        body: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, InferenceServer.plural, name
        )
    except ApiException as error:
        if error.status == 404:
            raise PluginError(f"server: InferenceServer {namespace}/{name} not found") from None
        raise
    console().print(explain(parse_server(body)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    args = build_parser().parse_args(argv)
    try:
        if args.verb == "plan" and args.filename:
            return _plan_files(args)
        api = api_client(args.kubeconfig, args.context)
        if args.verb == "top":
            return _top(api, args)
        if args.verb == "plan":
            return _plan(api, args)
        return _explain(api, args)
    except (PluginError, InputError) as error:
        print(f"kubectl-vram: error: {error}", file=sys.stderr)
        return 2
    except ApiException as error:
        print(f"kubectl-vram: error: the API server answered {error.status} {error.reason}", file=sys.stderr)
        return 1
    except HTTPError as error:
        print(f"kubectl-vram: error: cannot reach the API server: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
