"""`vram-operator plan` over the shipped examples: every placement is one the engine starts on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vram_operator.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_workstation_and_h100_rack_put_the_dedicated_qwen_32b_on_an_h100(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue: the 62 GB model at manual 0.92 landed on the 4 GB RTX A400 (3,766 MiB budget), Placed and fitting."""
    argv = ["plan", "-o", "json", "-f", str(EXAMPLES / "reference-fleet")]
    argv += ["-f", str(EXAMPLES / "h100-rack" / "nodes"), "-f", str(EXAMPLES / "h100-rack" / "servers")]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    placed = {p["server"]: p for p in document["placements"]}
    qwen = placed["llm/qwen-32b"]
    assert qwen["node"] in {"rack-a", "rack-b"}
    assert qwen["budgetMiB"] >= 0.92 * 81559 - 1
    assert all(p["fits"] for p in document["placements"]), [
        p["server"] for p in document["placements"] if not p["fits"]
    ]
