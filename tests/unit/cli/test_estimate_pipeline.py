"""`vram-operator estimate --pp`: the binding pipeline stage's figures per GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vram_operator.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
LLAMA_70B = str(CONFIGS / "meta-llama__Llama-3.3-70B-Instruct.json")


def _estimate(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["estimate", "--config", LLAMA_70B, "--gpu-memory-mib", "81559", "--max-model-len", "8192",
                 *argv, "-o", "json"]) == 0  # fmt: skip
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_pp_splits_the_layers_and_their_kv_cache(capsys: pytest.CaptureFixture[str]) -> None:
    tp2 = _estimate(capsys, "--tp", "2")
    pp2 = _estimate(capsys, "--tp", "2", "--pp", "2")
    # 80 layers: each stage holds 40, so half the KV bytes per token and about half the weights per GPU.
    assert pp2["kvBytesPerToken"] == int(str(tp2["kvBytesPerToken"])) // 2
    assert 0.45 < float(str(pp2["weightsMiB"])) / float(str(tp2["weightsMiB"])) < 0.55
    assert int(str(pp2["kvCacheTokens"])) > int(str(tp2["kvCacheTokens"]))


def test_bad_pp_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--config", LLAMA_70B, "--gpu-memory-mib", "81559", "--pp", "0"]) != 0
    assert "--pp" in capsys.readouterr().err
