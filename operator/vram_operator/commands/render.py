"""`vram-operator render`: the Kubernetes objects the operator would create, offline, from YAML.

`--format compose` writes the same plan for a host without Kubernetes (see render/compose.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vram_operator.api.gpu_assignment import STRATEGIES
from vram_operator.commands.plan import decide_from_manifests, plan_document
from vram_operator.decide import FleetDecision, placed_replicas
from vram_operator.errors import InputError
from vram_operator.manifests import Manifests, load
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.render import PINNING_MODES, RenderError, RenderSettings, render
from vram_operator.render.compose import (
    ASSIGNMENTS_FILE,
    OVERRIDE_FILE,
    ComposeService,
    compose_override,
    gpu_assignments,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", action="append", required=True, metavar="PATH",
                        help="GpuNode and InferenceServer YAML (file or directory; repeatable)")  # fmt: skip
    parser.add_argument("--pinning-mode", choices=PINNING_MODES, default="envvar")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None)
    parser.add_argument("--margin-mib", type=float, default=DEFAULT_MARGIN_MIB)
    parser.add_argument("--allow-host-access", action="store_true",
                        help="render hostPath volumes (as an operator run with --allow-host-access would)")  # fmt: skip
    parser.add_argument("--no-server-network-policy", dest="server_network_policy", action="store_false",
                        help="no NetworkPolicy per server (as an operator run with that flag)")  # fmt: skip
    parser.add_argument("--format", choices=("kubernetes", "compose"), default="kubernetes",
                        help=f"kubernetes: stdout; compose: {OVERRIDE_FILE} and {ASSIGNMENTS_FILE}")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=Path("."), metavar="DIR",
                        help="where --format compose writes its files (default: the current directory)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    manifests = load(args.filename)
    one_per_gpu = args.pinning_mode == "dra"
    decision = decide_from_manifests(manifests, args.strategy, args.margin_mib, one_namespace_per_gpu=one_per_gpu)
    settings = RenderSettings(
        pinning_mode=args.pinning_mode,
        allow_host_access=args.allow_host_access,
        server_network_policy=args.server_network_policy,
    )
    if args.format == "compose":
        return _write_compose(manifests, decision, settings, args.output_dir)
    documents = []
    for server in manifests.servers:
        choice = decision.servers[server.key]
        if choice.placement is None:
            print(f"# {server.key}: not placed ({choice.unplaced_reason}): {choice.unplaced_message}", file=sys.stderr)
            continue
        try:
            rendered = render(server, placed_replicas(choice), settings)
        except RenderError as error:
            raise InputError(str(error), source=manifests.source_of("InferenceServer", server.key)) from None
        for warning in rendered.warnings:
            print(f"# {server.key}: {warning}", file=sys.stderr)
        documents.extend(rendered.objects)
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0


def _write_compose(manifests: Manifests, decision: FleetDecision, settings: RenderSettings, directory: Path) -> int:
    entries = []
    for server in manifests.servers:
        choice = decision.servers[server.key]
        if choice.placement is None:
            print(f"# {server.key}: not placed ({choice.unplaced_reason}): {choice.unplaced_message}", file=sys.stderr)
        for replica in placed_replicas(choice):
            warnings = decision.replica_decision(server.key, replica.replica).warnings
            entries.append(ComposeService(server, replica, tuple(warnings)))
    try:
        override = compose_override(entries, settings)
    except RenderError as error:
        raise InputError(str(error)) from None
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory", field="--output-dir")
    for name, text in ((OVERRIDE_FILE, override), (ASSIGNMENTS_FILE, gpu_assignments(plan_document(decision)))):
        (directory / name).write_text(text, encoding="utf-8")
        print(f"wrote {directory / name}", file=sys.stderr)
    return 0
