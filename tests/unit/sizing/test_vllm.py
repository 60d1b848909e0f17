"""Mechanisms of the vLLM start-up memory model, one at a time, plus invariants."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.dtypes import (
    bits_per_weight,
    kv_cache_dtype_bytes,
    resolve_dtype,
    weights_bytes_for_architecture,
    weights_bytes_from_params,
)
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.vllm import (
    GIB,
    MIB,
    BatchDefaults,
    EngineVersion,
    VllmProfile,
    VllmSettings,
    batch_defaults,
    fit,
    footprint_mib,
    kv_bytes_per_token_per_layer,
    memory_for_tokens,
    min_utilization,
    moe_workspace_bytes,
    profile,
    recommended_utilization,
    request_kv_bytes,
    utilization_within,
    version_warnings,
    weights_per_rank,
)

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
H100_MIB = 79.19 * 1024
RTX_A5500_MIB = 23.99 * 1024


def _arch(name: str = "meta-llama__Llama-3.1-8B-Instruct", **changes: Any) -> ModelArchitecture:
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return from_config(config | changes)


def _profile(arch: ModelArchitecture, gpu_mib: float = H100_MIB, **settings: Any) -> VllmProfile:
    options = VllmSettings(**({"max_model_len": 8192} | settings))
    weights = weights_bytes_for_architecture(arch, options.dtype, None)
    return profile(arch, weights_per_rank(weights, arch, options.tensor_parallel_size), options, gpu_mib)


# --- KV bytes per token ------------------------------------------------------------------


def test_kv_heads_split_by_tp_and_replicated_below_one_per_rank() -> None:
    arch = _arch()  # 8 KV heads of 128
    assert kv_bytes_per_token_per_layer(arch, 1, 2) == 2 * 8 * 128 * 2
    assert kv_bytes_per_token_per_layer(arch, 2, 2) == 2 * 4 * 128 * 2
    assert kv_bytes_per_token_per_layer(arch, 8, 2) == 2 * 1 * 128 * 2
    # 16 ranks, 8 heads: each rank keeps one whole head, the cache per rank stops shrinking.
    wide = replace(arch, num_attention_heads=64)
    assert kv_bytes_per_token_per_layer(wide, 16, 2) == kv_bytes_per_token_per_layer(wide, 8, 2)


def test_tp_that_cannot_split_the_heads_is_rejected() -> None:
    with pytest.raises(SizingError) as caught:
        _profile(_arch(), tensor_parallel_size=3)
    assert caught.value.field == "tensorParallelSize"


def test_fp8_kv_cache_doubles_tokens_in_the_same_pool() -> None:
    arch = _arch("Qwen__Qwen2.5-7B-Instruct")
    auto = fit(_profile(arch), H100_MIB, 0.9)
    fp8 = fit(_profile(arch, kv_cache_dtype="fp8"), H100_MIB, 0.9)
    assert fp8.kv_cache_mib == auto.kv_cache_mib
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token
    assert fp8.kv_cache_tokens == pytest.approx(2 * auto.kv_cache_tokens, abs=16)


def test_mla_caches_one_latent_per_layer_not_split_by_tp() -> None:
    arch = _arch("deepseek-ai__DeepSeek-V3")
    assert kv_bytes_per_token_per_layer(arch, 1, 2) == (512 + 64) * 2
    assert kv_bytes_per_token_per_layer(arch, 8, 2) == (512 + 64) * 2
    heads_cache = 2 * arch.num_kv_heads * 192 * 2  # what full MHA K/V would need
    assert kv_bytes_per_token_per_layer(arch, 1, 2) * 50 < heads_cache


def test_sliding_layers_need_only_the_window_per_request() -> None:
    gemma = _arch("google__gemma-3-27b-it")
    prof = _profile(gemma, max_model_len=32768)
    assert (prof.full_layers, prof.sliding_layers) == (10, 52)
    # Grouped like vLLM: groups of 10 layers, 1 full + 6 sliding groups.
    assert (prof.group_size, prof.num_groups) == (10, 7)
    page = prof.page_bytes
    full_only = 10 * (32768 // 16) * page
    window_blocks = -(-(1024 - 1 + prof.max_num_batched_tokens) // 16) + 1
    assert request_kv_bytes(prof, 32768) == full_only + 52 * window_blocks * page
    result = fit(prof, H100_MIB, 0.9)
    # vLLM logs blocks per group x block size.
    assert result.kv_cache_tokens == result.num_blocks // 7 * 16


def test_sliding_window_is_ignored_before_the_hybrid_manager() -> None:
    gemma = _arch("google__gemma-3-27b-it")
    old = _profile(gemma, engine_version="0.9.2", max_model_len=32768)
    assert (old.full_layers, old.sliding_layers, old.num_groups) == (62, 0, 1)
    new = _profile(gemma, engine_version="0.10.0", max_model_len=32768)
    assert request_kv_bytes(new, 32768) < request_kv_bytes(old, 32768)


def test_hybrid_mamba_layers_keep_state_not_tokens() -> None:
    jamba = _arch("ai21labs__Jamba-v0.1")
    prof = _profile(jamba, max_model_len=65536, tensor_parallel_size=4)
    assert (prof.full_layers, prof.state_layers) == (4, 28)
    # Attention block size grows until one attention page holds a whole mamba state.
    state = (jamba.state_conv_elements + jamba.state_ssm_elements) // 4 * 2
    assert prof.page_bytes >= state and prof.block_size % 16 == 0 and prof.block_size > 16
    assert prof.kv_bytes_per_token == 4 * kv_bytes_per_token_per_layer(jamba, 4, 2)


def test_qwen3_next_linear_layers_have_no_kv_per_token() -> None:
    arch = _arch("Qwen__Qwen3-Next-80B-A3B-Instruct")
    prof = _profile(arch, max_model_len=32768, tensor_parallel_size=2)
    assert prof.kv_bytes_per_token == 12 * kv_bytes_per_token_per_layer(arch, 2, 2)
    assert prof.state_layers == 36


def test_moe_weights_count_every_expert_and_activation_the_routed_ones() -> None:
    mixtral = _arch("mistralai__Mixtral-8x7B-v0.1")
    weights = weights_bytes_for_architecture(mixtral, "bfloat16", None)
    assert weights == pytest.approx(46.7e9 * 2, rel=0.01)
    dense_twin = replace(mixtral, num_experts=0, num_experts_per_tok=0, params_b=None)
    assert _profile(mixtral).activation_mib >= _profile(dense_twin).activation_mib


def test_awq_keeps_embeddings_in_fp16() -> None:
    arch = _arch("Qwen__Qwen2.5-7B-Instruct")
    parts = arch.param_breakdown()
    awq = weights_bytes_for_architecture(arch, "float16", "awq")
    all_4bit = weights_bytes_from_params(parts.total / 1e9, "float16", "awq")
    assert awq - all_4bit == pytest.approx((parts.total - parts.linear) * (2 - bits_per_weight("awq") / 8), rel=1e-6)
    assert 5.0 * GIB < awq < 5.4 * GIB  # published AWQ checkpoint: ~5.2 GiB


def test_gguf_and_unknown_quantizations() -> None:
    assert bits_per_weight("gguf-Q4_K_M") == pytest.approx(4.89)
    assert bits_per_weight("Q8_0".join(["gguf-", ""])) == 8.5
    for bad in ("gguf-Q9_K", "int3"):
        with pytest.raises(SizingError) as caught:
            bits_per_weight(bad)
        assert caught.value.field == "quantization"
    assert kv_cache_dtype_bytes("fp8_e5m2", "bfloat16") == 1
    assert kv_cache_dtype_bytes("auto", "float32") == 4
    assert resolve_dtype("auto", "float32") == "bfloat16"  # fp32 checkpoints run in bf16


# --- profile -------------------------------------------------------------------------------


def test_batch_defaults_follow_gpu_size_and_version() -> None:
    v19 = EngineVersion.parse("0.19.0")
    assert batch_defaults(v19, 8192, H100_MIB, "NVIDIA H100 80GB HBM3") == BatchDefaults(1024, 8192)
    assert batch_defaults(v19, 8192, H100_MIB, "NVIDIA A100-SXM4-80GB") == BatchDefaults(256, 2048)
    assert batch_defaults(v19, 8192, RTX_A5500_MIB) == BatchDefaults(256, 2048)
    v0 = EngineVersion.parse("~0.7.x (V0)")
    assert batch_defaults(v0, 4096, RTX_A5500_MIB) == BatchDefaults(256, 4096)
    assert batch_defaults(v0, 65536, RTX_A5500_MIB) == BatchDefaults(256, 2048)


def test_tp_above_one_adds_communication_buffers() -> None:
    arch = _arch()
    assert _profile(arch, tensor_parallel_size=2).non_torch_mib > 4 * _profile(arch).non_torch_mib


def test_moe_workspaces_stay_allocated_through_the_sampler_pass() -> None:
    # From 0.11 the fused-MoE workspaces live in buffers shared by all layers and kept between calls:
    # the sampler warm-up runs on top of chunk x top-k x (max(I, H) + max(2I, H)) elements. Qwen3-30B-A3B
    # (I 768, H 2048, top-8) at 8192 batched tokens: 8192 x 8 x (2048 + 2048) x 2 B = 512 MiB; its 0.19 log:
    # activation 2.68 GiB, 0.48 GiB above the sampler alone.
    arch = _arch("Qwen__Qwen3-30B-A3B")
    with_buffers = _profile(arch, engine_version="0.19.0")
    assert moe_workspace_bytes(arch, EngineVersion(0, 19), 1, 8192, 2) == 8192 * 8 * (2048 + 2048) * 2
    assert moe_workspace_bytes(arch, EngineVersion(0, 10), 1, 8192, 2) == 0  # freed after each layer
    assert moe_workspace_bytes(_arch(), EngineVersion(0, 19), 1, 8192, 2) == 0  # dense
    assert moe_workspace_bytes(_arch("openai__gpt-oss-20b"), EngineVersion(0, 19), 1, 8192, 2) == 0  # MXFP4 kernels
    # The sampler pass (15 B per logit over 1024 x 151936 logits, the hidden states) plus the workspaces.
    sampler = 1024 * arch.vocab_size * 15 + 8192 * arch.hidden_size * 2
    assert with_buffers.activation_mib * MIB == pytest.approx(sampler + 8192 * 8 * 4096 * 2)


def test_full_decode_graphs_only_from_0_11() -> None:
    # 0.10 captures piecewise graphs only (0.34 MiB per piece per size: its Qwen2-7B logs, 0.50 GiB);
    # FULL_AND_PIECEWISE, the default from 0.11, adds a full decode graph per size (5.9 MiB).
    arch = _arch()  # 32 layers: 33 pieces, 51 capture sizes
    assert _profile(arch, engine_version="0.10.1").cuda_graph_mib == pytest.approx(51 * 0.34 * 33)
    assert _profile(arch, engine_version="0.11.0").cuda_graph_mib == pytest.approx(51 * (5.9 + 0.34 * 33))


@given(
    utilization=st.integers(min_value=1, max_value=99).map(lambda n: n / 100),
    version=st.sampled_from(["0.19.0", "0.21.0"]),
)
def test_the_reservation_is_the_share_plus_the_graphs_beyond_it(utilization: float, version: str) -> None:
    prof = _profile(_arch(), engine_version=version)
    beyond = prof.graphs_outside_mib
    assert beyond == (0.0 if version == "0.21.0" else prof.cuda_graph_mib)
    reserved = footprint_mib(prof, H100_MIB, utilization)
    assert reserved == pytest.approx(utilization * H100_MIB + beyond)
    # The largest utilization a reservation holds: this one, not a hundredth more.
    assert utilization_within(prof, H100_MIB, reserved) == utilization
    assert utilization_within(prof, H100_MIB, reserved - 0.5) == round(utilization - 0.01, 2)


def test_graphs_that_do_not_fit_beyond_the_share_fail_after_the_startup_check() -> None:
    prof = _profile(_arch())  # 0.19: 873 MiB of graphs captured after the KV cache
    need = footprint_mib(prof, H100_MIB, 0.5)
    assert fit(prof, H100_MIB, 0.5, need).fits
    short = fit(prof, H100_MIB, 0.5, need - 1)
    assert (short.fits, short.reason) == (False, "CudaGraphsOutOfMemory")
    assert "CUDA out of memory while capturing CUDA graphs" in short.message and "--enforce-eager" in short.message
    # Free below the share itself: vLLM's start-up check refuses first.
    assert fit(prof, H100_MIB, 0.5, 0.5 * H100_MIB - 1).reason == "StartupFreeMemory"
    # Without a free figure the GPU itself bounds it; eager captures nothing.
    assert fit(prof, H100_MIB, 0.99).reason == "CudaGraphsOutOfMemory"
    assert fit(_profile(_arch(), enforce_eager=True), H100_MIB, 0.99).fits


def test_a_share_whose_graphs_overflow_the_gpu_is_no_minimum_utilization() -> None:
    prof = _profile(_arch())  # 0.19: 873 MiB of graphs beyond the share
    # Tokens whose share rounds to 0.99: the share fits, the graphs beyond it do not (the GPU is too small);
    # once vLLM subtracts its graphs (0.21) the same share is the minimum.
    tokens = max(t for t in range(0, 3_000_000, 1000) if memory_for_tokens(prof, t) <= 0.99 * H100_MIB)
    assert footprint_mib(prof, H100_MIB, 0.99) > H100_MIB
    assert min_utilization(prof, H100_MIB, tokens) > 1
    assert fit(prof, H100_MIB, 0.99).reason == "CudaGraphsOutOfMemory"
    eager = _profile(_arch(), enforce_eager=True)
    assert min_utilization(eager, H100_MIB, tokens) <= 0.99


@given(free=st.floats(min_value=0.3 * H100_MIB, max_value=H100_MIB))
def test_the_recommendation_leaves_room_for_the_graphs(free: float) -> None:
    prof = _profile(_arch())
    chosen = recommended_utilization(prof, H100_MIB, free)
    if chosen > min_utilization(prof, H100_MIB):
        assert footprint_mib(prof, H100_MIB, chosen) <= free < footprint_mib(prof, H100_MIB, chosen + 0.01) or (
            chosen == 0.9
        )
        assert fit(prof, H100_MIB, chosen, free).fits


def test_cuda_graphs_subtracted_only_since_0_21() -> None:
    arch = _arch()
    logged = _profile(arch, engine_version="0.19.0")
    subtracted = _profile(arch, engine_version="0.21.0")
    eager = _profile(arch, engine_version="0.21.0", enforce_eager=True)
    assert logged.cuda_graph_mib > 0 and not logged.cuda_graph_subtracted
    assert subtracted.cuda_graph_subtracted
    assert subtracted.non_kv_mib - logged.non_kv_mib == pytest.approx(subtracted.cuda_graph_mib)
    assert eager.cuda_graph_mib == 0 and not eager.cuda_graph_subtracted


def test_logits_for_more_sequences_raise_the_activation_peak() -> None:
    arch = _arch()
    assert _profile(arch, max_num_seqs=1024).activation_mib > _profile(arch, max_num_seqs=256).activation_mib


# --- fit -----------------------------------------------------------------------------------


def test_startup_check_message_matches_vllm() -> None:
    result = fit(_profile(_arch()), 24 * 1024, 0.9, gpu_free_mib=12 * 1024)
    assert not result.fits and result.reason == "StartupFreeMemory"
    assert result.message.startswith(
        "Free memory on device (12.00/24.00 GiB) on startup is less than desired GPU memory "
        "utilization (0.9, 21.60 GiB)"
    )


def test_v0_has_no_startup_check_but_cannot_allocate_the_pool() -> None:
    prof = _profile(_arch(), 24 * 1024, engine_version="0.7.3", max_model_len=4096)
    result = fit(prof, 24 * 1024, 0.9, gpu_free_mib=12 * 1024)
    assert result.reason == "OutOfMemory"


def test_before_0_6_4_other_processes_count_against_the_pool() -> None:
    prof = _profile(_arch(), 24 * 1024, engine_version="0.6.3", max_model_len=4096)
    alone = fit(prof, 24 * 1024, 0.9)
    shared = fit(prof, 24 * 1024, 0.9, gpu_free_mib=22 * 1024)
    assert alone.kv_cache_mib - shared.kv_cache_mib == pytest.approx(2 * 1024)


def test_no_cache_blocks_when_weights_fill_the_budget() -> None:
    result = fit(_profile(_arch()), 24 * 1024, 0.6)
    assert result.reason == "NoCacheBlocks" and result.kv_cache_tokens == 0
    assert "No available memory for the cache blocks" in result.message


def test_max_model_len_too_large_suggests_what_fits() -> None:
    prof = _profile(_arch(), RTX_A5500_MIB, max_model_len=131072)
    result = fit(prof, RTX_A5500_MIB, 0.9)
    assert result.reason == "MaxModelLenTooLarge"
    assert result.max_fitting_model_len is not None and 0 < result.max_fitting_model_len < 131072
    assert f"estimated maximum model length is {result.max_fitting_model_len}" in result.message
    shorter = replace(prof, max_model_len=result.max_fitting_model_len)
    assert fit(shorter, RTX_A5500_MIB, 0.9).fits


def test_concurrency_is_pool_over_one_request() -> None:
    result = fit(_profile(_arch(), max_model_len=16384), H100_MIB, 0.95)
    assert result.max_concurrency == pytest.approx(result.num_blocks / (16384 // 16))


def test_contract_keys() -> None:
    keys = set(fit(_profile(_arch()), H100_MIB, 0.9).to_contract())
    assert keys == {
        "weightsMiB", "activationMiB", "nonTorchMiB", "cudaGraphMiB", "kvCacheMiB", "kvCacheTokens",
        "kvBytesPerToken", "maxConcurrency", "minUtilization", "recommendedUtilization", "fits", "reason",
        "source",
    }  # fmt: skip


def test_bad_fit_inputs_name_the_field() -> None:
    prof = _profile(_arch())
    for args, field in (((0, 0.9), "gpuMemoryMiB"), ((H100_MIB, 1.5), "gpuMemoryUtilization")):
        with pytest.raises(SizingError) as caught:
            fit(prof, *args)
        assert caught.value.field == field
    with pytest.raises(SizingError) as caught:
        fit(prof, H100_MIB, 0.9, gpu_free_mib=H100_MIB + 1)
    assert caught.value.field == "gpuFreeMiB"


def test_recommended_respects_free_memory_and_minimum() -> None:
    prof = _profile(_arch())
    assert recommended_utilization(prof, H100_MIB) == 0.9
    # Half the GPU free: 0.19 captures its CUDA graphs beyond its share, 51 capture sizes x (5.9 MiB +
    # 0.34 MiB x 33 pieces) = 873 MiB (1.1% of the H100), so its share is 0.48, not 0.50; from 0.21 the
    # graphs are inside it.
    assert prof.graphs_outside_mib == pytest.approx(51 * (5.9 + 0.34 * 33))
    assert recommended_utilization(prof, H100_MIB, gpu_free_mib=H100_MIB / 2) == 0.48
    inside = _profile(_arch(), engine_version="0.21.0")
    assert inside.graphs_outside_mib == 0
    assert recommended_utilization(inside, H100_MIB, gpu_free_mib=H100_MIB / 2) == 0.5
    assert recommended_utilization(prof, H100_MIB, gpu_free_mib=1024) == min_utilization(prof, H100_MIB)


# --- invariants ------------------------------------------------------------------------------

_UTIL = st.floats(min_value=0.05, max_value=0.99)
_ARCHES = st.sampled_from(
    [
        _arch(),
        _arch("codellama__CodeLlama-7b-hf"),
        _arch("Qwen__Qwen2.5-7B-Instruct"),
        _arch("google__gemma-3-27b-it"),
        _arch("ai21labs__Jamba-v0.1"),
    ]
)
_GPU = st.sampled_from([24 * 1024, 48 * 1024, H100_MIB, 141 * 1024])


@given(_ARCHES, _GPU, _UTIL, _UTIL)
def test_kv_tokens_monotone_in_utilization(arch: ModelArchitecture, gpu: float, a: float, b: float) -> None:
    prof = _profile(arch, gpu, max_model_len=4096, tensor_parallel_size=2)
    low, high = sorted((a, b))
    assert fit(prof, gpu, low).kv_cache_tokens <= fit(prof, gpu, high).kv_cache_tokens


@given(_ARCHES, _GPU, st.integers(min_value=0, max_value=2_000_000))
def test_min_utilization_really_gives_the_tokens(arch: ModelArchitecture, gpu: float, tokens: int) -> None:
    prof = _profile(arch, gpu, max_model_len=4096, tensor_parallel_size=2)
    minimum = min_utilization(prof, gpu, tokens)
    if minimum > 1:
        # Too small at any utilization (the tokens, and before 0.21 the CUDA graphs beyond the share).
        for utilization in (0.99, 1.0):
            result = fit(prof, gpu, utilization)
            assert not (result.fits and result.kv_cache_tokens >= tokens)
        return
    result = fit(prof, gpu, minimum)
    assert result.fits and result.kv_cache_tokens >= tokens
    assert memory_for_tokens(prof, tokens) <= minimum * gpu
    if minimum > 0.01:
        below = fit(prof, gpu, round(minimum - 0.01, 2))
        assert not below.fits or below.kv_cache_tokens < tokens


@given(_ARCHES, st.sampled_from([1, 2]))
def test_more_tp_shrinks_weights_per_rank(arch: ModelArchitecture, tp: int) -> None:
    total = weights_bytes_for_architecture(arch, "bfloat16", None)
    assert weights_per_rank(total, arch, 2 * tp) < weights_per_rank(total, arch, tp) <= total
    assert weights_per_rank(total, arch, tp) >= total / tp


@given(st.integers(min_value=1, max_value=64), st.sampled_from(["auto", "fp8"]))
def test_memory_for_tokens_grows_by_kv_bytes_per_token(blocks: int, kv_dtype: str) -> None:
    prof = _profile(_arch(), kv_cache_dtype=kv_dtype)
    base = prof.max_model_len  # below one full request the floor is that request
    tokens = blocks * prof.block_size
    extra = memory_for_tokens(prof, base + tokens) - memory_for_tokens(prof, base)
    assert extra * MIB == pytest.approx(tokens * prof.kv_bytes_per_token)
    assert memory_for_tokens(prof, 0) == memory_for_tokens(prof, base)


# --- the model's context and the engine versions this model knows ------------------------


def test_max_model_len_beyond_the_context_is_a_spec_error_at_the_boundary() -> None:
    arch = _arch()  # max_position_embeddings 131072, rope_type llama3 (no extra length)
    assert arch.max_context == 131072
    assert _profile(arch, max_model_len=131072).max_model_len == 131072
    with pytest.raises(SizingError) as raised:
        _profile(arch, max_model_len=131073)
    assert raised.value.field == "maxModelLen"
    assert "maxModelLen 131073 exceeds the model's context (131072)" in str(raised.value)
    assert _profile(arch, max_model_len=262144, allow_long_max_model_len=True).max_model_len == 262144


@pytest.mark.parametrize(
    ("rope_scaling", "context"),
    [
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 131072),
        ({"type": "linear", "factor": 2.0}, 65536),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}, 32768),
        ({"rope_type": "longrope", "factor": 4.0}, 32768),
        (None, 32768),
    ],
)
def test_rope_scaling_lengthens_the_context_as_vllm_derives_it(rope_scaling: Any, context: int) -> None:
    arch = _arch("Qwen__Qwen2.5-7B-Instruct", rope_scaling=rope_scaling)
    assert arch.max_context == context
    _profile(arch, max_model_len=context)
    with pytest.raises(SizingError):
        _profile(arch, max_model_len=context + 1)


@pytest.mark.parametrize(
    ("version", "warns"),
    [("0.19.0", False), ("0.33.9", False), ("0.34.0", True), ("9.9.9", True), ("nightly", True), ("latest", True)],
)
def test_versions_newer_than_the_model_knows_say_which_behaviour_is_assumed(version: str, warns: bool) -> None:
    warnings = version_warnings(version)
    assert bool(warnings) is warns
    if warns:
        assert version in warnings[0] and "0.33 behaviour" in warnings[0]
    assert version_warnings(None) == ()


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.11.0+cu118", (0, 11, 0)), ("v0.12", (0, 12, 0)), ("v0.10.1.1", (0, 10, 1)), ("nightly", (0, 33, 0))],
)
def test_odd_version_strings_have_a_clear_meaning(text: str, parsed: tuple[int, int, int]) -> None:
    version = EngineVersion.parse(text)
    assert (version.major, version.minor, version.patch) == parsed


@pytest.mark.parametrize("text", ["stable-ish", "v", "", "x.y"])
def test_a_version_string_without_a_version_names_the_field(text: str) -> None:
    if text == "":
        assert EngineVersion.parse(text) == EngineVersion.parse(None)  # empty = the default
        return
    with pytest.raises(SizingError) as raised:
        EngineVersion.parse(text)
    assert raised.value.field == "engineVersion"
