"""`vram-operator run`: flags, kopf settings, and the operator loop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, cast

import kopf
from kubernetes import client, config

from vram_operator.controller import logs
from vram_operator.controller.assignments import AssignmentReconciler
from vram_operator.controller.child_keeper import ChildKeeper
from vram_operator.controller.device_plugin import DevicePluginLabels
from vram_operator.controller.heartbeats import HeartbeatCheck, post_node_event
from vram_operator.controller.kube import Kube
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.runtime import CHILD_APPLY_THREADS, STATUS_WRITE_THREADS, Runtime
from vram_operator.controller.server_reconciler import ServerReconciler
from vram_operator.controller.servers import post_event
from vram_operator.controller.settings import ControllerSettings
from vram_operator.errors import InputError
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.placement.strategies import strategy_named
from vram_operator.render import PINNING_MODES, RenderError, RenderSettings
from vram_operator.render.tolerations import DEFAULT_TOLERATIONS, parse_tolerations

KOPF_PREFIX = "kopf.vram.dev"
API_THREADS = 32
# Net container allocations between two collections of the young generation (Python's default: 700).
YOUNG_COLLECTION_THRESHOLD = 10_000
WORKER_IDLE_SECONDS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--standalone", action="store_true", help="no peering (run one replica, Recreate strategy)")
    mode.add_argument("--peering", metavar="NAME", help="kopf peering object: one active replica among many")
    parser.add_argument("--priority", type=int, default=0, help="peering priority (distinct per replica)")
    parser.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeat; default all)")
    parser.add_argument("--pinning-mode", choices=PINNING_MODES, default="envvar", help="device pinning (envvar|dra)")
    parser.add_argument(
        "--device-class", default=RenderSettings.device_class, help="dra mode: DeviceClass of whole GPUs"
    )
    parser.add_argument(
        "--mig-device-class", default=RenderSettings.mig_device_class, help="dra mode: DeviceClass of MIG devices"
    )
    parser.add_argument("--strategy", default="VRAMBased", help="strategy for servers no GpuAssignment manages")
    parser.add_argument("--margin-mib", type=float, default=float(DEFAULT_MARGIN_MIB), help="safety margin per GPU")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    parser.add_argument("--health-port", type=int, default=8081, help="kopf liveness endpoint /healthz (0: off)")
    parser.add_argument(
        "--heartbeat-stale-seconds", type=float, default=120.0, help="agent silence before no new placements"
    )
    parser.add_argument(
        "--gpu-node-grace-seconds", type=float, default=60.0, help="a missing GpuNode's GPUs are lost after this"
    )
    parser.add_argument("--check-interval", type=float, default=10.0, help="seconds between runtime checks per server")
    parser.add_argument("--max-corrections", type=int, default=3, help="memory-failure corrections per server")
    parser.add_argument(
        "--estimate-error-threshold",
        type=float,
        default=0.10,
        help="EstimateAccurate=False when the engine's own report differs from the estimate by more (0.10 = 10%%)",
    )
    parser.add_argument(
        "--measured-runs-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the ConfigMap of measured runs (default: the operator's, $POD_NAMESPACE)",
    )
    parser.add_argument(
        "--allow-host-access",
        action="store_true",
        help="render servers whose pass-through fields reach the host (hostPath volumes); refused by default",
    )
    parser.add_argument(
        "--server-tolerations",
        default=json.dumps(list(DEFAULT_TOLERATIONS), separators=(",", ":")),
        metavar="JSON",
        help="tolerations of every server pod, a JSON list (default: nvidia.com/gpu Exists NoSchedule; [] for none)",
    )
    parser.add_argument(
        "--no-server-network-policy",
        dest="server_network_policy",
        action="store_false",
        help="render no NetworkPolicy for servers (by default one admits in-cluster clients to the engine port)",
    )
    parser.add_argument(
        "--no-device-plugin-label",
        dest="device_plugin_label",
        action="store_false",
        help="leave Nodes as they are (by default Nodes with a GpuNode are labelled "
        "nvidia.com/gpu.deploy.device-plugin=false: the device plugin would hand out the operator's GPUs)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--verbose", action="store_true", help="debug logs")


def settings_from(args: argparse.Namespace) -> ControllerSettings:
    """Flags to settings; a bad value is an InputError naming the flag."""
    try:
        strategy_named(args.strategy)
    except ValueError as error:
        raise InputError(str(error), field="--strategy") from None
    for flag, value in (
        ("--margin-mib", args.margin_mib),
        ("--check-interval", args.check_interval - 0.1),
        ("--heartbeat-stale-seconds", args.heartbeat_stale_seconds),
        ("--gpu-node-grace-seconds", args.gpu_node_grace_seconds),
        ("--max-corrections", args.max_corrections),
        ("--estimate-error-threshold", args.estimate_error_threshold),
    ):
        if value < 0:
            raise InputError(f"must be positive, got {value}", field=flag)
    return ControllerSettings(
        namespaces=tuple(args.namespace),
        strategy=args.strategy,
        margin_mib=args.margin_mib,
        heartbeat_stale=timedelta(seconds=args.heartbeat_stale_seconds),
        gpu_node_grace=timedelta(seconds=args.gpu_node_grace_seconds),
        check_interval=args.check_interval,
        max_corrections=args.max_corrections,
        estimate_error_threshold=args.estimate_error_threshold,
        measured_runs_namespace=args.measured_runs_namespace,
        device_plugin_label=args.device_plugin_label,
        render=RenderSettings(
            pinning_mode=args.pinning_mode,
            device_class=args.device_class,
            mig_device_class=args.mig_device_class,
            allow_host_access=args.allow_host_access,
            tolerations=_tolerations(args.server_tolerations),
            server_network_policy=args.server_network_policy,
        ),
    )


def _tolerations(text: str) -> tuple[Mapping[str, Any], ...]:
    try:
        return parse_tolerations(text)
    except RenderError as error:
        raise InputError(str(error)) from None  # the message names the flag


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """The --kubeconfig file, else in-cluster credentials, else $KUBECONFIG or ~/.kube/config."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as error:
        raise InputError(f"no usable cluster credentials: {error}", field="--kubeconfig") from None
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = API_THREADS + STATUS_WRITE_THREADS + CHILD_APPLY_THREADS  # one per thread
    return client.ApiClient(configuration)


@kopf.on.startup(registry=REGISTRY)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # API writes run in threads (the kubernetes client is synchronous): allow enough of them.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=API_THREADS))
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = cast(Runtime, memo["rt"]).diffbase  # no annotation to write
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    settings.posting.level = logging.WARNING  # events are posted explicitly, not from log lines
    settings.watching.server_timeout = 300
    # kopf keeps a task, a queue and an event per object while events come; its worker waits this long
    # for the next one before it goes (kopf's default: 5 s). At a thousand servers most objects have
    # an event every few seconds during a flood, so the default keeps one worker alive per object:
    # measured, 300 servers peak at 139.5 MiB with 0.5 s, 150.3 MiB with 5 s, at no more CPU.
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
    # No worker limit: kopf holds handlers until every index is filled, and limited workers
    # waiting for that would block the indexing of the rest (a deadlock at scale).


@kopf.on.login(registry=REGISTRY)
def login(*, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    return connection_info(memo["api"])


def memo_for(rt: Runtime, api: client.ApiClient) -> kopf.Memo:
    """What every handler shares: the runtime, the reconcilers (their checks run in its loop), the client."""
    servers = ServerReconciler(rt, post_event)
    gpu_assignments = AssignmentReconciler(rt)
    children = ChildKeeper(rt, post_event)
    heartbeats = HeartbeatCheck(rt, post_node_event)
    device_plugin = DevicePluginLabels(rt)
    rt.checks.extend(
        [servers.check_servers, gpu_assignments.check, children.check, heartbeats.check, device_plugin.check]
    )
    return kopf.Memo(rt=rt, servers=servers, assignments=gpu_assignments, api=api)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every handler and timer run per object: too much at a thousand servers.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    api = api_client(args.kubeconfig)
    metrics = Metrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    rt = Runtime(settings=settings, kube=Kube(api), metrics=metrics)
    tune_garbage_collection()
    asyncio.run(
        kopf.operator(
            registry=REGISTRY,
            memo=memo_for(rt, api),
            standalone=args.standalone or not args.peering,
            peering_name=args.peering,
            priority=args.priority,
            namespaces=settings.namespaces,
            clusterwide=not settings.namespaces,
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
        )
    )
    return 0


def tune_garbage_collection() -> None:
    """Leave what start-up made (modules, classes, the clients' and models' code: most of the process's
    objects, none of them garbage) out of every later collection, and collect the young generation
    less often. Each full collection walked every imported object again, and Python's default young
    threshold ran one every few watch events in a flood, promoting the objects of events still being
    handled to the older generations; full collections then came every ~70,000 allocations."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the kubernetes client's configuration (kopf's own piggybacking
    login does not understand the current client's configuration object)."""
    conf = api.configuration
    authorization = str((conf.api_key or {}).get("authorization") or (conf.api_key or {}).get("BearerToken") or "")
    scheme, _, credential = authorization.partition(" ")
    token = (credential if scheme.lower() == "bearer" else authorization).strip() or None
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        scheme="Bearer" if token else None,
        token=token,
    )
