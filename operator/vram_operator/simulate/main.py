"""`vram-operator simulate`: the simulated GPU runtime for KWOK nodes (command line and loop)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vram_operator.agent.main import kubernetes_clients, run_every
from vram_operator.errors import InputError
from vram_operator.simulate.engines import Perturbation
from vram_operator.simulate.runtime import FaultsFile, Twin, TwinSettings
from vram_operator.simulate.world import Backoff

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="Kubeconfig file (default: in-cluster config, then ~/.kube/config).")
    parser.add_argument("--faults", type=Path, help="Faults YAML, re-read whenever it changes (optional).")
    parser.add_argument("--state-file", type=Path, help="Write the simulated GPUs' state here as JSON every tick.")
    parser.add_argument(
        "--logs-dir", type=Path, help="Write engines' start-up logs here and serve them as pod logs (KWOK Logs)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the per-server model error (default: 0).")
    parser.add_argument(
        "--activation-error", type=float, default=0.08, help="Relative error on activation memory (default: 0.08)."
    )
    parser.add_argument(
        "--weights-error", type=float, default=0.02, help="Relative error on weights memory (default: 0.02)."
    )
    parser.add_argument("--interval", type=float, default=1.0, help="Seconds between passes (default: 1).")
    parser.add_argument(
        "--backoff-seconds", type=float, default=10.0, help="First CrashLoopBackOff delay (default: 10, as kubelet)."
    )
    parser.add_argument(
        "--backoff-max-seconds", type=float, default=300.0, help="Longest CrashLoopBackOff delay (default: 300)."
    )
    parser.add_argument(
        "--heartbeat", type=float, default=30.0, help="Write each GpuNode status at least this often (default: 30)."
    )


def settings_from(args: argparse.Namespace) -> TwinSettings:
    """The twin's settings; InputError naming the flag for a value it cannot use."""
    for flag, value in (("--activation-error", args.activation_error), ("--weights-error", args.weights_error)):
        if not 0 <= value < 1:
            raise InputError(f"must be within [0, 1), got {value}", field=flag)
    for flag, value in (
        ("--interval", args.interval),
        ("--backoff-seconds", args.backoff_seconds),
        ("--heartbeat", args.heartbeat),
    ):
        if not value > 0:
            raise InputError(f"must be > 0, got {value}", field=flag)
    if args.backoff_max_seconds < args.backoff_seconds:
        raise InputError(
            f"must be >= --backoff-seconds ({args.backoff_seconds}), got {args.backoff_max_seconds}",
            field="--backoff-max-seconds",
        )
    if args.faults is not None:
        FaultsFile(args.faults).check()
    return TwinSettings(
        seed=args.seed,
        perturbation=Perturbation(seed=args.seed, activation=args.activation_error, weights=args.weights_error),
        backoff=Backoff(initial_s=args.backoff_seconds, max_s=args.backoff_max_seconds),
        heartbeat_s=args.heartbeat,
        faults_path=args.faults,
        state_path=args.state_file,
        logs_dir=args.logs_dir,
    )


def run(args: argparse.Namespace) -> int:
    """Play the engines until SIGTERM/SIGINT; 2 on bad input (one line on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args)
    except InputError as error:
        print(f"vram-operator simulate: error: {error}", file=sys.stderr)
        return 2
    custom, core = kubernetes_clients(args.kubeconfig)
    twin = Twin(core, custom, settings)

    def tick() -> None:
        try:
            twin.tick()
        except Exception:  # the API server restarting, a conflict: log and try again next pass
            log.exception("simulation pass failed")

    log.info("simulating the GPUs of the fake nodes (seed %d)", settings.seed)
    run_every(args.interval, tick)
    twin.close()
    return 0
