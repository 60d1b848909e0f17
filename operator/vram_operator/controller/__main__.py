"""`python -m vram_operator.controller [flags]`: the same as `vram-operator run`."""

from __future__ import annotations

import argparse
import sys

from vram_operator.controller.main import add_arguments, run
from vram_operator.errors import InputError


def main() -> int:
    parser = argparse.ArgumentParser(prog="vram-operator run", description="Run the vram-operator controller.")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        return run(args)
    except InputError as error:
        print(f"vram-operator: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
