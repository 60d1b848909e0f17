"""`vram-operator estimate` reports what vLLM would do, with the contract keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vram_operator.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
CONTRACT_KEYS = {
    "weightsMiB", "activationMiB", "nonTorchMiB", "cudaGraphMiB", "kvCacheMiB", "kvCacheTokens", "kvBytesPerToken",
    "maxConcurrency", "minUtilization", "recommendedUtilization", "fits", "reason", "source",
}  # fmt: skip


def _estimate(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["estimate", *argv, "-o", "json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_contract_keys_and_calibrated_kv_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    # v0.19 on an H100 (79.19 GiB) at 0.95 logged 476,016 KV tokens for Llama-3.1-8B at 16k.
    result = _estimate(
        capsys, "--config", str(CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json"),
        "--gpu-memory-mib", str(79.19 * 1024), "--utilization", "0.95", "--max-model-len", "16384",
        "--engine-version", "0.19.0",
    )  # fmt: skip
    assert set(result) >= CONTRACT_KEYS
    assert result["fits"] is True
    assert abs(int(str(result["kvCacheTokens"])) - 476_016) / 476_016 < 0.05
    assert result["source"] == "config"


def test_startup_check_against_free_memory(capsys: pytest.CaptureFixture[str]) -> None:
    # 12 GB GPU with 7.8 GB used elsewhere: 0.40 asks for 4.8 GiB but only ~4.2 GiB are free.
    result = _estimate(
        capsys, "--config", str(CONFIGS / "Qwen__Qwen2.5-7B-Instruct.json"), "--gpu-memory-mib", "12288",
        "--gpu-free-mib", str(12288 - 7.8 * 1000 * 1000 * 1000 / 2**20), "--utilization", "0.40",
        "--max-model-len", "4096", "--quantization", "awq",
    )  # fmt: skip
    assert result["fits"] is False
    assert result["reason"] == "StartupFreeMemory"


def test_recommendation_fits_when_the_gpu_is_large_enough(capsys: pytest.CaptureFixture[str]) -> None:
    result = _estimate(
        capsys, "--config", str(CONFIGS / "Qwen__Qwen2.5-7B-Instruct.json"), "--gpu-memory-mib", "24564",
        "--max-model-len", "8192",
    )  # fmt: skip
    recommended = float(str(result["recommendedUtilization"]))
    assert result["fits"] is True
    assert float(str(result["minUtilization"])) <= recommended <= 0.9
    assert int(str(result["kvCacheTokens"])) >= 8192


def test_generic_budget_is_the_whole_footprint(capsys: pytest.CaptureFixture[str]) -> None:
    result = _estimate(capsys, "--engine", "generic", "--vram-budget", "650Mi", "--gpu-memory-mib", "4094")
    assert result["totalMiB"] == 650.0
    assert result["fits"] is True
