"""The llama.cpp memory model: KV cache, offload split, compute buffer, fitting a budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.llamacpp import (
    DEFAULT_N_CTX,
    LlamaCppModel,
    LlamaCppSettings,
    compute_buffer_bytes,
    estimate_llamacpp,
    fit_llamacpp,
)

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
LLAMA_8B = from_config(json.loads((CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json").read_text()))
# Llama-3.1-8B-Instruct Q4_K_M: llama.cpp reports "model size = 4.58 GiB (4.89 BPW)".
Q4_K_M_BYTES = round(4.58 * 2**30)
MODEL = LlamaCppModel.from_architecture(LLAMA_8B, Q4_K_M_BYTES)
MIB = 2**20


def test_kv_cache_of_llama_8b_matches_llama_cpp_log() -> None:
    # llama.cpp: 32768 cells x 32 layers x (8 heads x 128) x 2 (K and V) x 2 bytes = 4096 MiB.
    estimate = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=32768))
    assert estimate.kv_cache_mib == 4096.0
    assert estimate.kv_bytes_per_token == 32 * 1024 * 2 * 2
    assert estimate.kv_cells == 32768


@pytest.mark.parametrize(("cache_type", "mib"), [("f16", 4096.0), ("q8_0", 2176.0), ("q4_0", 1152.0), ("f32", 8192)])
def test_cache_types(cache_type: str, mib: float) -> None:
    config = LlamaCppSettings(n_ctx=32768, cache_type_k=cache_type, cache_type_v=cache_type)
    assert estimate_llamacpp(MODEL, config).kv_cache_mib == mib


def test_context_is_shared_by_the_parallel_slots() -> None:
    one = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=16384))
    four = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=16384, parallel=4))
    assert four.kv_cache_mib == one.kv_cache_mib
    assert (one.ctx_per_slot, four.ctx_per_slot) == (16384, 4096)


def test_kv_size_is_padded_and_defaults_follow_llama_server() -> None:
    assert estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=1000)).kv_cells == 1024
    assert estimate_llamacpp(MODEL, LlamaCppSettings()).n_ctx == DEFAULT_N_CTX
    assert estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=0)).n_ctx == 131072  # 0 = training context


def test_sliding_window_layers_keep_only_the_window() -> None:
    gemma = ModelArchitecture(
        model_type="gemma2",
        num_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=64,
        intermediate_size=512,
        vocab_size=1000,
        sliding_window=1024,
        layer_types=("sliding_attention", "full_attention") * 2,
    )
    model = LlamaCppModel.from_architecture(gemma, 10 * MIB)
    estimate = estimate_llamacpp(model, LlamaCppSettings(n_ctx=32768))
    per_cell = 2 * 64 * 2 * 2  # K and V, f16
    full = 2 * 32768 * per_cell
    sliding = 2 * (1024 + 512) * per_cell  # window + one micro-batch
    assert estimate.kv_cache_mib * MIB == full + sliding


def test_mla_keeps_one_compressed_row_and_no_v() -> None:
    model = replace(MODEL, kv_lora_rank=512, rope_dim=64)
    estimate = estimate_llamacpp(model, LlamaCppSettings(n_ctx=4096))
    assert estimate.kv_bytes_per_token == 32 * (512 + 64) * 2


def test_even_split_is_close_to_llama_cpp_buffers() -> None:
    # llama.cpp for this file: "CUDA0 model buffer size = 4403.49 MiB", "CPU_Mapped ... = 281.81 MiB"
    # (Q6_K output, Q4_K embedding); the estimate splits by parameter share.
    estimate = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=8192))
    assert estimate.weights_mib == pytest.approx(4403.49, rel=0.01)
    assert estimate.host_weights_mib == pytest.approx(281.81, rel=0.1)
    assert estimate.kv_cache_mib == 1024.0  # "KV self size = 1024.00 MiB"


def test_offload_split() -> None:
    full = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=4096))
    assert full.n_gpu_layers == 33
    # The token embedding stays on the host, everything else is on the GPU.
    assert (full.weights_mib + full.host_weights_mib) * MIB == pytest.approx(Q4_K_M_BYTES, abs=64)
    assert full.host_weights_mib * MIB == MODEL.input_bytes
    layers_only = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=4096, n_gpu_layers=32))
    assert full.weights_mib - layers_only.weights_mib == pytest.approx(MODEL.output_bytes / MIB)
    assert layers_only.kv_cache_mib == full.kv_cache_mib
    none = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=4096, n_gpu_layers=0))
    assert (none.weights_mib, none.kv_cache_mib) == (0, 0)
    assert none.host_kv_cache_mib == full.kv_cache_mib


def test_tied_embedding_is_also_the_gpu_output_layer() -> None:
    tied = LlamaCppModel.from_architecture(replace(LLAMA_8B, tie_word_embeddings=True), Q4_K_M_BYTES)
    assert tied.output_bytes == tied.input_bytes
    assert sum(tied.layer_bytes) + tied.input_bytes == pytest.approx(Q4_K_M_BYTES, abs=64)


def test_compute_buffer_matches_llama_cpp_log_without_flash_attention() -> None:
    # Llama-3.1-8B Q4_K_M, -c 8192, ubatch 512, flash_attn 0: "CUDA0 compute buffer size = 560.00 MiB".
    no_flash = LlamaCppSettings(n_ctx=8192, flash_attn=False)
    assert compute_buffer_bytes(MODEL, 8192, no_flash) == 560 * MIB


def test_compute_buffer_terms() -> None:
    flash = LlamaCppSettings(n_ctx=8192)
    hidden_states = 6 * 512 * 4096 * 4
    # With flash attention the logits (ubatch x vocab, f32) are the largest tensor.
    assert compute_buffer_bytes(MODEL, 8192, flash) == hidden_states + 512 * LLAMA_8B.vocab_size * 4
    # Logits are computed where the output layer is; without it the FFN activations lead.
    assert compute_buffer_bytes(MODEL, 8192, flash, output_on_gpu=False) == hidden_states + 2 * 512 * 14336 * 4
    # A micro-batch never exceeds the context.
    assert compute_buffer_bytes(MODEL, 256, flash) == 256 * (6 * 4096 + LLAMA_8B.vocab_size) * 4


def test_fits_as_configured() -> None:
    fit = fit_llamacpp(MODEL, 24 * 1024, LlamaCppSettings(n_ctx=8192))
    assert fit.fits and fit.full_offload
    assert fit.args == ("--n-gpu-layers", "33", "-c", "8192")
    assert fit.estimate.total_mib <= 24 * 1024
    assert fit.reason.startswith("fits as configured")


def test_context_shrinks_when_default_context_does_not_fit() -> None:
    budget = estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=2048)).total_mib + 10
    fit = fit_llamacpp(MODEL, budget, LlamaCppSettings(), min_ctx=1024)
    assert fit.fits and fit.full_offload
    assert 2048 <= fit.estimate.n_ctx < DEFAULT_N_CTX
    assert estimate_llamacpp(MODEL, LlamaCppSettings(n_ctx=fit.estimate.n_ctx + 256)).total_mib > budget
    assert "-c reduced from 4096" in fit.reason


def test_fixed_context_offloads_the_most_layers_that_fit() -> None:
    config = LlamaCppSettings(n_ctx=8192)
    fit = fit_llamacpp(MODEL, 4 * 1024, config)
    assert fit.fits and not fit.full_offload
    ngl = fit.estimate.n_gpu_layers
    assert 0 < ngl < 33 and fit.estimate.n_ctx == 8192
    assert fit.estimate.total_mib <= 4 * 1024
    assert estimate_llamacpp(MODEL, replace(config, n_gpu_layers=ngl + 1)).total_mib > 4 * 1024
    assert fit.args == ("--n-gpu-layers", str(ngl), "-c", "8192")
    assert any("run on the CPU" in warning for warning in fit.warnings)


def test_nothing_fits_a_tiny_budget() -> None:
    fit = fit_llamacpp(MODEL, 300, LlamaCppSettings(n_ctx=4096))
    assert not fit.fits
    assert "budget 300 MiB" in fit.reason
    assert fit.args == ("--n-gpu-layers", "33", "-c", "4096")


def test_fixed_layers_are_kept() -> None:
    fit = fit_llamacpp(MODEL, 2 * 1024, LlamaCppSettings(n_ctx=4096, n_gpu_layers=30))
    assert not fit.fits
    assert fit.estimate.n_gpu_layers == 30


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=500, max_value=20_000), st.sampled_from([None, 2048, 16384]))
def test_property_a_fit_never_exceeds_its_budget_and_more_budget_never_offloads_less(
    budget: float, n_ctx: int | None
) -> None:
    config = LlamaCppSettings(n_ctx=n_ctx)
    fit = fit_llamacpp(MODEL, budget, config)
    if fit.fits:
        assert fit.estimate.total_mib <= budget
    larger = fit_llamacpp(MODEL, budget * 1.5, config)
    assert larger.fits or not fit.fits
    if fit.fits:
        assert (larger.estimate.n_gpu_layers, larger.estimate.n_ctx) >= (fit.estimate.n_gpu_layers, fit.estimate.n_ctx)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (LlamaCppSettings(cache_type_k="q3_k"), "cache_type_k"),
        (LlamaCppSettings(cache_type_v="fp8"), "cache_type_v"),
        (LlamaCppSettings(cache_type_v="q8_0", flash_attn=False), "cache_type_v"),
        (LlamaCppSettings(n_ctx=-1), "n_ctx"),
        (LlamaCppSettings(parallel=0), "parallel"),
        (LlamaCppSettings(n_ubatch=0), "n_ubatch"),
        (LlamaCppSettings(overhead_mib=-5), "overhead_mib"),
    ],
)
def test_bad_settings_name_the_field(config: LlamaCppSettings, field: str) -> None:
    with pytest.raises(SizingError) as error:
        estimate_llamacpp(MODEL, config)
    assert error.value.field == field


def test_bad_budget_and_unknown_training_context() -> None:
    with pytest.raises(SizingError, match="budget"):
        fit_llamacpp(MODEL, 0)
    with pytest.raises(SizingError, match="training context"):
        estimate_llamacpp(replace(MODEL, n_ctx_train=None), LlamaCppSettings(n_ctx=0))
    with pytest.raises(SizingError, match="weights"):
        LlamaCppModel.from_architecture(LLAMA_8B, 0)
