#!/usr/bin/env python3
"""Start, inspect and stop the local control plane from a shell.

    python hack/cluster.py up       # prints the admin KUBECONFIG path on stdout
    python hack/cluster.py status
    python hack/cluster.py down

Binaries come from hack/build-tools.sh. The running cluster is recorded in a state file
(default: <tmpdir>/vram-operator-localcluster-<uid>.json, or $VRAM_LOCALCLUSTER_STATE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import (
    ComponentError,
    LocalCluster,
    MissingBinaryError,
    ResourceError,
    reference_fleet,
)
from localcluster.cluster import DEFAULT_CRD_DIR

EXIT_FAILED = 1
EXIT_USAGE = 2


def default_state_file() -> Path:
    override = os.environ.get("VRAM_LOCALCLUSTER_STATE")
    if override:
        return Path(override)
    return Path(tempfile.gettempdir()) / f"vram-operator-localcluster-{os.getuid()}.json"


def _load(state_file: Path) -> LocalCluster | None:
    if not state_file.exists():
        return None
    return LocalCluster.from_state(json.loads(state_file.read_text()))


def cmd_up(args: argparse.Namespace) -> int:
    existing = _load(args.state)
    if existing is not None and any(c.alive() for c in existing.components):
        print(f"error: a cluster is already up (state {args.state}); run 'down' first", file=sys.stderr)
        return EXIT_FAILED
    crd_dir = None if args.no_crds else args.crds
    cluster = LocalCluster(nodes=reference_fleet(args.h100_nodes), crd_dir=crd_dir).up()
    cluster.write_state(args.state)
    for what, seconds in cluster.timings.items():
        print(f"{what}: {seconds:.1f}s", file=sys.stderr)
    print(cluster.kubeconfig)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = _load(args.state)
    if cluster is None:
        print("down", file=sys.stderr)
        return EXIT_FAILED
    state = json.loads(args.state.read_text())
    print(f"server: {state['server']}\nkubeconfig: {state['kubeconfig']}")
    alive = True
    for component in cluster.components:
        running = component.alive()
        alive = alive and running
        print(f"{component.name:<24} pid {component.pid:<8} {'running' if running else 'EXITED'}")
    return 0 if alive else EXIT_FAILED


def cmd_down(args: argparse.Namespace) -> int:
    cluster = _load(args.state)
    if cluster is not None:
        cluster.down()
        args.state.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=default_state_file(), help="state file")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster; prints the admin kubeconfig path")
    up.add_argument("--h100-nodes", type=int, default=2, help="8x H100 nodes besides the workstation")
    up.add_argument("--crds", type=Path, default=DEFAULT_CRD_DIR, help="directory of CRD manifests")
    up.add_argument("--no-crds", action="store_true", help="install no CRDs")
    sub.add_parser("status", help="show the components and whether they run")
    sub.add_parser("down", help="stop every component and remove the working directory")
    args = parser.parse_args(argv)
    if args.command == "up" and args.h100_nodes < 0:
        parser.error("--h100-nodes: must be >= 0")
    handlers = {"up": cmd_up, "status": cmd_status, "down": cmd_down}
    try:
        return handlers[args.command](args)
    except MissingBinaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ComponentError, ResourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
