"""Output helpers shared by the CLI verbs."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def console() -> Console:
    # Wide enough that explanations are not chopped when piped; rich wraps on a terminal.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False, soft_wrap=False)


def mib_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}MiB"
