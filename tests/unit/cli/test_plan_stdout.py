"""`plan -o json` writes nothing but the JSON to stdout, in a fresh process (where a solver's banner would go)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_plan_json_on_a_fleet_the_solver_repacks_is_only_json() -> None:
    # shared-12gb leaves its 0.40 server unplaced, so the planner runs its solver on the rest.
    done = subprocess.run(
        [sys.executable, "-m", "vram_operator.cli", "plan", "-f", str(EXAMPLES / "shared-12gb"), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(done.stdout)
    assert "default/chat-manual-040" in [u["server"] for u in plan["unplaced"]]
