"""`vram-operator agent`: the node agent's command line and poll loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from vram_operator.agent.errors import AgentConfigError
from vram_operator.agent.exporter import AgentMetrics
from vram_operator.agent.nvml_backend import NvmlBackend
from vram_operator.agent.pods import PodDirectory, kubernetes_pod_lister
from vram_operator.agent.poller import Agent
from vram_operator.agent.reporter import GpuNodeReporter
from vram_operator.agent.simulated import SimulatedBackend
from vram_operator.agent.snapshot import GpuBackend

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options; defaults come from the environment the DaemonSet sets."""
    parser.add_argument(
        "--node-name", default=os.environ.get("NODE_NAME"), help="This node's name (default: $NODE_NAME)."
    )
    parser.add_argument(
        "--backend",
        choices=("nvml", "simulated"),
        default=os.environ.get("VRAM_AGENT_BACKEND", "nvml"),
        help="Where GPU data comes from (default: nvml).",
    )
    parser.add_argument("--profile", type=Path, help="Simulated profile YAML (with --backend simulated).")
    parser.add_argument(
        "--proc-root",
        type=Path,
        default=Path(os.environ.get("HOST_PROC", "/proc")),
        help="Where the host's /proc is mounted (default: $HOST_PROC or /proc).",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="Seconds between polls (default: 10).")
    parser.add_argument(
        "--heartbeat", type=float, default=60.0, help="Write the status at least this often, in seconds (default: 60)."
    )
    parser.add_argument(
        "--metrics-port", type=int, default=9402, help="Prometheus port; 0 turns it off (default: 9402)."
    )
    parser.add_argument("--metrics-address", default="0.0.0.0", help="Address to serve metrics on.")
    parser.add_argument("--kubeconfig", help="Kubeconfig file (default: in-cluster config, then ~/.kube/config).")
    parser.add_argument("--no-report", action="store_true", help="Do not write GpuNode status (metrics only).")
    parser.add_argument("--once", action="store_true", help="Poll once, print the status as JSON and exit.")


def _check(args: argparse.Namespace) -> None:
    if not args.node_name:
        raise AgentConfigError("--node-name: required (or set NODE_NAME)", field="node_name")
    if args.interval <= 0:
        raise AgentConfigError(f"--interval: must be > 0, got {args.interval}", field="interval")
    if args.heartbeat < args.interval:
        raise AgentConfigError(
            f"--heartbeat: must be >= --interval ({args.interval}), got {args.heartbeat}", field="heartbeat"
        )
    if not 0 <= args.metrics_port <= 65535:
        raise AgentConfigError(f"--metrics-port: must be 0-65535, got {args.metrics_port}", field="metrics_port")
    if args.backend == "simulated" and args.profile is None:
        raise AgentConfigError("--profile: required with --backend simulated", field="profile")


def _backend(args: argparse.Namespace) -> GpuBackend:
    if args.backend == "simulated":
        return SimulatedBackend(args.profile, args.node_name)
    return NvmlBackend()


def kubernetes_clients(kubeconfig: str | None) -> tuple[Any, Any]:
    from kubernetes import client, config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(), client.CoreV1Api()


def build_agent(args: argparse.Namespace) -> tuple[Agent, AgentMetrics]:
    """The agent the arguments describe; AgentConfigError for bad arguments or profile."""
    _check(args)
    metrics = AgentMetrics(args.node_name)
    reporter = pods = None
    if not args.no_report and not args.once:
        custom_api, core_api = kubernetes_clients(args.kubeconfig)
        reporter = GpuNodeReporter(custom_api, args.node_name, heartbeat_s=args.heartbeat)
        pods = PodDirectory(kubernetes_pod_lister(core_api, args.node_name))
    agent = Agent(_backend(args), proc_root=args.proc_root, pods=pods, metrics=metrics, reporter=reporter)
    return agent, metrics


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT; 2 on bad input (one line on stderr), else 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        agent, metrics = build_agent(args)
    except AgentConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.once:
        status = agent.poll_once()
        print(status.model_dump_json(by_alias=True, exclude_none=True, indent=2) if status else "{}")
        return 0 if status is not None else 1
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    run_every(args.interval, agent.poll_once)
    return 0


def run_every(interval: float, step: Callable[[], object]) -> None:
    """Call `step` every `interval` seconds (less the time the call took) until SIGTERM or SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop.is_set():
        started = time.monotonic()
        step()
        stop.wait(max(interval - (time.monotonic() - started), 0.0))
