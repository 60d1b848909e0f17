"""`vram-operator` command line: plan, estimate, render, crds, run, agent, simulate."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from vram_operator import __version__
from vram_operator.errors import InputError

Command = Callable[[argparse.Namespace], int]

# verb -> (module with add_arguments/run, help). Only the chosen verb's module is imported, so
# `plan` does not pay for kopf and the operator does not pay for rich tables.
VERBS: dict[str, tuple[str, str]] = {
    "plan": ("vram_operator.commands.plan", "place servers on GPU nodes offline, from YAML"),
    "estimate": ("vram_operator.commands.estimate", "VRAM one model needs on one GPU"),
    "render": ("vram_operator.commands.render", "print the objects the operator would create"),
    "crds": ("vram_operator.commands.crds", "write the CRDs generated from the API models"),
    "run": ("vram_operator.controller.main", "the operator: place, roll out and measure InferenceServers"),
    "agent": ("vram_operator.agent.main", "node agent: report this node's GPUs into GpuNode/<node>"),
    "simulate": (
        "vram_operator.simulate.main",
        "the simulated GPU runtime for KWOK nodes: plays the engines' memory behaviour for the pods bound there",
    ),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser; `verb` (when known) gets its full arguments, the others only their help line."""
    parser = argparse.ArgumentParser(prog="vram-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vram-operator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in VERBS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in arguments if not a.startswith("-")), None)
    args = build_parser(verb if verb in VERBS else None).parse_args(arguments)
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
