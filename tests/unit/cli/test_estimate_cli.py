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


LLAMA_70B = str(CONFIGS / "meta-llama__Llama-3.3-70B-Instruct.json")
H100 = "81559"


def test_a_model_larger_than_the_gpu_gets_an_answer_with_what_would_fit(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: exit 2, "utilization 1.38 must be in (0, 1]". 70B in FP8 at its 131072-token context needs ~110 GiB.
    result = _estimate(capsys, "--config", LLAMA_70B, "--gpu-memory-mib", H100, "--tp", "1", "--quantization", "fp8")
    assert set(result) >= CONTRACT_KEYS
    assert result["fits"] is False
    assert result["reason"] == "InsufficientMemory"
    assert result["recommendedUtilization"] is None
    required = float(str(result["requiredMiBPerGpu"]))
    assert required > float(H100)
    # Required per GPU: the minimum share of the GPU plus the CUDA graphs 0.19 captures beyond it.
    share = required - float(str(result["cudaGraphMiB"]))
    assert float(str(result["minUtilization"])) == pytest.approx(share / float(H100), abs=0.01)
    assert f"needs {required:.0f} MiB per GPU" in str(result["message"])
    tp = int(str(result["minTensorParallelSize"]))
    length = int(str(result["maxFittingModelLen"]))
    assert (tp, any(f"tensor parallel size {tp}" in line for line in result["suggestions"])) == (2, True)  # type: ignore[attr-defined]

    # Each suggestion is right at its boundary: it fits (at vLLM's 0.9 or less), one step less does not.
    common = ["--config", LLAMA_70B, "--gpu-memory-mib", H100, "--quantization", "fp8"]
    split = _estimate(capsys, *common, "--tp", str(tp))
    assert split["fits"] is True and float(str(split["recommendedUtilization"])) <= 0.9
    shorter = _estimate(capsys, *common, "--max-model-len", str(length))
    assert shorter["fits"] is True and float(str(shorter["minUtilization"])) <= 0.9
    longer = _estimate(capsys, *common, "--max-model-len", str(length + 1))
    assert float(str(longer["minUtilization"])) > 0.9


def test_a_model_larger_than_the_gpu_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--config", LLAMA_70B, "--gpu-memory-mib", H100, "--quantization", "fp8"]) == 0
    out = capsys.readouterr().out
    assert "requiredMiBPerGpu" in out and "InsufficientMemory" in out
    assert "fits with tensor parallel size 2" in out


def test_a_quantization_that_fits_is_suggested(capsys: pytest.CaptureFixture[str]) -> None:
    # 70B in bf16 (~131 GiB) at 4k: FP8 (~68 GiB) fits an H100 at 0.9, so FP8 is the quantization suggested.
    common = ["--config", LLAMA_70B, "--gpu-memory-mib", H100, "--max-model-len", "4096"]
    result = _estimate(capsys, *common)
    assert (result["fits"], result["fittingQuantization"]) == (False, "fp8")
    assert _estimate(capsys, *common, "--quantization", "fp8")["fits"] is True


def test_an_engine_version_newer_than_the_model_knows_is_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--config", str(CONFIGS / "Qwen__Qwen2.5-7B-Instruct.json"), "--gpu-memory-mib", "24564"]
    result = _estimate(capsys, *common, "--engine-version", "9.9.9", "--max-model-len", "8192")
    assert result["fits"] is True
    assert any("9.9.9" in w and "assuming 0.33 behaviour" in w for w in result["warnings"])  # type: ignore[attr-defined]
    assert _estimate(capsys, *common, "--engine-version", "0.33.0", "--max-model-len", "8192")["warnings"] == []
    assert _estimate(capsys, *common, "--engine-version", "0.11.0+cu118", "--max-model-len", "8192")["warnings"] == []


# The 12 GB production report: an RTX 3060 (12288 MiB) with ~1.7 GB held by other services,
# Qwen2.5-7B-Instruct AWQ at 2048 tokens. vLLM failed at 0.40 ("No available memory for the cache
# blocks") and at 0.50 logged "Available KV cache memory: 0.37 GiB", "GPU KV cache size: 6,976
# tokens", "Maximum concurrency for 2,048 tokens per request: 3.41x".
SHARED_12GB = [
    "--config", str(CONFIGS / "Qwen__Qwen2.5-7B-Instruct.json"), "--quantization", "awq",
    "--gpu-memory-mib", "12288", "--gpu-free-mib", "10547", "--gpu-name", "NVIDIA GeForce RTX 3060",
    "--max-model-len", "2048", "--engine-version", "0.10.1",
]  # fmt: skip


def test_the_12gb_production_case_fails_at_040_for_the_kv_cache(capsys: pytest.CaptureFixture[str]) -> None:
    result = _estimate(capsys, *SHARED_12GB, "--utilization", "0.40")
    assert (result["fits"], result["reason"], result["kvCacheTokens"]) == (False, "NoCacheBlocks", 0)


def test_the_12gb_production_case_runs_at_050_with_the_logged_kv_cache(capsys: pytest.CaptureFixture[str]) -> None:
    result = _estimate(capsys, *SHARED_12GB, "--utilization", "0.50")
    assert result["fits"] is True
    assert result["kvCacheTokens"] == pytest.approx(6976, rel=0.15)
    assert result["kvCacheMiB"] == pytest.approx(0.37 * 1024, rel=0.15)
    assert result["maxConcurrency"] == pytest.approx(3.41, rel=0.15)
    assert result["kvBytesPerToken"] == 57344


def test_the_12gb_production_case_auto_picks_a_working_value_within_free_memory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = _estimate(capsys, *SHARED_12GB)
    utilization = float(result["utilization"])  # type: ignore[arg-type]
    assert result["fits"] is True
    # vLLM 0.10 captures its CUDA graphs beyond utilization x total: both must fit the free memory,
    # and no hundredth more would (0.80 x 12288 + 740 MiB of graphs = 10570 MiB > 10547).
    graphs = float(result["cudaGraphMiB"])  # type: ignore[arg-type]
    assert graphs > 0 and result["reservedMiB"] == pytest.approx(utilization * 12288 + graphs, abs=0.1)
    assert utilization >= 0.50 and utilization * 12288 + graphs <= 10547 < (utilization + 0.01) * 12288 + graphs
    assert result["kvCacheTokens"] > 6976  # more than the hand-set 0.50 gave


def test_what_would_fit_respects_the_free_memory(capsys: pytest.CaptureFixture[str]) -> None:
    # 0.91 of the H100 is needed at 8k, 60000 MiB is free: vLLM's start-up check fails. TP 2 fits in 0.71: the
    # 60000 MiB hold 0.71 x 81559 MiB and the 2066 MiB of CUDA graphs 0.19 captures beyond it (80 layers).
    result = _estimate(
        capsys, "--config", LLAMA_70B, "--gpu-memory-mib", H100, "--gpu-free-mib", "60000", "--quantization", "fp8",
        "--max-model-len", "8192",
    )  # fmt: skip
    assert (result["fits"], result["reason"]) == (False, "StartupFreeMemory")
    message = str(result["message"])
    assert message.startswith("does not fit the 60000 MiB free of one 81559 MiB GPU")
    assert "Free memory on device" in message  # vLLM's own words stay
    assert result["minTensorParallelSize"] == 2 and result["maxFittingModelLen"] is None
    assert any("utilization <= 0.71" in line for line in result["suggestions"])  # type: ignore[attr-defined]
