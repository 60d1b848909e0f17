"""`vram-operator` command line: plan, estimate, render, crds, run, agent."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vram_operator import __version__
from vram_operator.errors import InputError

Command = Callable[[argparse.Namespace], int]


def _crds(args: argparse.Namespace) -> int:
    from vram_operator.api.crdgen import crd_files

    files = crd_files()
    if args.stdout:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        print(f"wrote {out / name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vram-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vram-operator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from vram_operator.commands import estimate, plan, render

    plan_parser = commands.add_parser("plan", help="place servers on GPU nodes offline, from YAML")
    plan.add_arguments(plan_parser)
    plan_parser.set_defaults(handler=plan.run)

    estimate_parser = commands.add_parser("estimate", help="VRAM one model needs on one GPU")
    estimate.add_arguments(estimate_parser)
    estimate_parser.set_defaults(handler=estimate.run)

    render_parser = commands.add_parser("render", help="print the objects the operator would create")
    render.add_arguments(render_parser)
    render_parser.set_defaults(handler=render.run)

    from vram_operator.agent import main as agent_main

    agent = commands.add_parser("agent", help="node agent: report this node's GPUs into GpuNode/<node>")
    agent_main.add_arguments(agent)
    agent.set_defaults(handler=agent_main.run)

    crds = commands.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--output-dir", default="crds", help="directory to write into (default: crds)")
    crds.add_argument("--stdout", action="store_true", help="print a multi-document YAML instead")
    crds.set_defaults(handler=_crds)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except InputError as error:
        print(f"vram-operator: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
