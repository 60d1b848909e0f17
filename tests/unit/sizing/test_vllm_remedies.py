"""What would make a vLLM model fit a GPU it does not: each answer sits exactly at its boundary."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.vllm import VllmSettings
from vram_operator.sizing.vllm_remedies import (
    MIN_MODEL_LEN,
    VllmShape,
    longest_model_len,
    remedies,
    smallest_tensor_parallel,
)

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
LLAMA_70B = from_config(json.loads((CONFIGS / "meta-llama__Llama-3.3-70B-Instruct.json").read_text()))


def _shape(gpu_mib: float, quantization: str | None = "fp8", **changes: int) -> VllmShape:
    weights = weights_bytes_for_architecture(LLAMA_70B, "auto", quantization)
    return VllmShape(LLAMA_70B, weights, VllmSettings(**changes), gpu_mib)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([24564.0, 46068.0, 81559.0, 143771.0]), st.sampled_from([0.8, 0.9, 0.95]))
def test_smallest_tensor_parallel_fits_and_the_one_below_does_not(gpu: float, limit: float) -> None:
    shape = _shape(gpu)
    tp = smallest_tensor_parallel(shape, limit)
    if shape.fits(limit):
        return
    assert tp is not None and shape.with_tensor_parallel(tp).fits(limit)
    assert not any(shape.with_tensor_parallel(k).fits(limit) for k in range(1, tp))


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([71000.0, 81559.0, 95000.0, 143771.0]), st.sampled_from([0.85, 0.9, 0.95]))
def test_longest_model_len_fits_and_one_token_more_does_not(gpu: float, limit: float) -> None:
    shape = _shape(gpu)
    if shape.fits(limit):
        return
    length = longest_model_len(shape, limit)
    if length is None:  # the weights alone take more than the limit
        assert not shape.with_model_len(MIN_MODEL_LEN).fits(limit)
        return
    assert shape.with_model_len(length).fits(limit)
    assert not shape.with_model_len(length + 1).fits(limit)


def test_nothing_fits_when_the_weights_alone_do_not() -> None:
    shape = _shape(24564.0, quantization=None)  # 131 GiB of bf16 weights on a 24 GB GPU
    found = remedies(shape, 0.9, {})
    assert found.max_model_len is None and found.quantization is None
    assert found.tensor_parallel_size == 16  # 64 heads: 16 ranks of 4; at 8 the full-context KV does not fit
    assert found.required_mib_per_gpu > 131 * 1024
    assert found.lines() == ("fits with tensor parallel size 16 (at utilization <= 0.90 on each GPU)",)


def test_the_first_quantization_that_fits_is_suggested() -> None:
    shape = _shape(81559.0, quantization=None, max_model_len=4096)
    sizes = {q: weights_bytes_for_architecture(LLAMA_70B, "auto", q) for q in ("fp8", "awq")}
    assert remedies(shape, 0.9, sizes).quantization == "fp8"
    assert remedies(shape, 0.9, {"awq": sizes["awq"]}).quantization == "awq"
