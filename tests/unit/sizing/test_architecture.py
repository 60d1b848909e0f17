"""config.json -> ModelArchitecture: dense, GQA, MoE, MLA, sliding, hybrid, multimodal, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vram_operator.sizing.architecture import (
    FULL_ATTENTION,
    LINEAR_ATTENTION,
    MAMBA,
    NO_CACHE,
    SLIDING_ATTENTION,
    from_config,
)
from vram_operator.sizing.errors import SizingError

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return loaded


MIXTRAL = _load("mistralai__Mixtral-8x7B-v0.1")
QWEN3_MOE = _load("Qwen__Qwen3-30B-A3B")
DEEPSEEK_V3 = _load("deepseek-ai__DeepSeek-V3")
GPT_OSS_20B = _load("openai__gpt-oss-20b")
GEMMA3_27B = _load("google__gemma-3-27b-it")
QWEN3_NEXT = _load("Qwen__Qwen3-Next-80B-A3B-Instruct")
JAMBA = _load("ai21labs__Jamba-v0.1")


def test_dense_gqa_llama_defaults_head_dim_and_counts_params() -> None:
    arch = from_config(_load("meta-llama__Llama-3.1-8B-Instruct"))
    assert (arch.num_layers, arch.num_kv_heads, arch.head_dim) == (32, 8, 4096 // 32)
    assert arch.layer_kinds() == (FULL_ATTENTION,) * 32
    assert arch.params_b == pytest.approx(8.03, abs=0.01)  # the published 8.03B


def test_missing_kv_heads_means_multi_head_attention() -> None:
    config = _load("codellama__CodeLlama-7b-hf")
    del config["num_key_value_heads"]
    arch = from_config(config)
    assert arch.num_kv_heads == arch.num_attention_heads == 32
    assert arch.params_b == pytest.approx(6.74, abs=0.01)


def test_qwen2_window_is_off_unless_use_sliding_window() -> None:
    config = _load("Qwen__Qwen2.5-7B-Instruct")
    assert from_config(config).sliding_window is None
    config["use_sliding_window"] = True
    assert from_config(config).layer_kinds() == (SLIDING_ATTENTION,) * 28


def test_tied_embeddings_drop_the_lm_head() -> None:
    config = _load("meta-llama__Llama-3.1-8B-Instruct")
    untied = from_config(config)
    tied = from_config({**config, "tie_word_embeddings": True})
    assert untied.total_params() - tied.total_params() == 128256 * 4096


@pytest.mark.parametrize(
    ("config", "published_b"),
    [(MIXTRAL, 46.7), (QWEN3_MOE, 30.5), (DEEPSEEK_V3, 671.0), (GPT_OSS_20B, 20.9)],
)
def test_moe_parameter_counts_match_published_totals(config: dict[str, Any], published_b: float) -> None:
    assert from_config(config).params_b == pytest.approx(published_b, rel=0.01)


def test_mixtral_experts_share_attention() -> None:
    arch = from_config(MIXTRAL)
    parts = arch.param_breakdown()
    assert (arch.num_experts, arch.num_experts_per_tok, arch.expert_intermediate_size) == (8, 2, 14336)
    assert parts.experts == 32 * (8 * 3 * 4096 * 14336 + 4096 * 8)
    assert parts.dense_mlp == 0


def test_deepseek_dense_layers_shared_experts_and_mla() -> None:
    arch = from_config(DEEPSEEK_V3)
    assert arch.is_mla and (arch.kv_lora_rank, arch.qk_rope_head_dim) == (512, 64)
    assert arch.first_k_dense_layers == 3 and arch.num_moe_layers == 58
    assert arch.shared_expert_intermediate_size == 2048
    assert arch.param_breakdown().dense_mlp == 3 * 3 * 7168 * 18432


def test_gpt_oss_alternates_sliding_and_full_layers() -> None:
    arch = from_config(GPT_OSS_20B)
    assert arch.sliding_window == 128
    assert arch.layer_kinds()[:2] == (SLIDING_ATTENTION, FULL_ATTENTION)
    assert arch.quantization == "mxfp4"


def test_gemma3_text_config_pattern_and_vision_tower() -> None:
    arch = from_config(GEMMA3_27B)
    kinds = arch.layer_kinds()
    assert kinds.count(FULL_ATTENTION) == 10 and kinds.count(SLIDING_ATTENTION) == 52
    assert kinds[5] == FULL_ATTENTION and kinds[0] == SLIDING_ATTENTION
    assert arch.torch_dtype == "bfloat16" and arch.extra_params > 0
    assert arch.params_b == pytest.approx(27.4, rel=0.03)


def test_gemma2_alternates_starting_with_sliding() -> None:
    config = {**_load("meta-llama__Llama-3.1-8B-Instruct"), "model_type": "gemma2", "sliding_window": 4096}
    assert from_config(config).layer_kinds()[:3] == (SLIDING_ATTENTION, FULL_ATTENTION, SLIDING_ATTENTION)


def test_llm_config_is_used_for_internvl_style_models() -> None:
    inner = _load("Qwen__Qwen2.5-7B-Instruct")
    assert from_config({"model_type": "internvl_chat", "llm_config": inner}).hidden_size == 3584


def test_qwen3_next_hybrid_has_three_linear_layers_per_full_one() -> None:
    arch = from_config(QWEN3_NEXT)
    kinds = arch.layer_kinds()
    assert kinds.count(FULL_ATTENTION) == 12 and kinds.count(LINEAR_ATTENTION) == 36
    assert kinds[3] == FULL_ATTENTION
    assert arch.state_ssm_elements == 32 * 128 * 128
    assert arch.params_b == pytest.approx(80, rel=0.03)


def test_jamba_attention_period_and_expert_period() -> None:
    arch = from_config(JAMBA)
    kinds = arch.layer_kinds()
    assert [i for i, kind in enumerate(kinds) if kind == FULL_ATTENTION] == [4, 12, 20, 28]
    assert kinds.count(MAMBA) == 28
    assert arch.num_moe_layers == 16
    assert arch.params_b == pytest.approx(51.6, rel=0.03)


def test_nemotron_h_pattern_layers_without_cache() -> None:
    config = {**_load("meta-llama__Llama-3.1-8B-Instruct"), "num_hidden_layers": 4}
    config |= {"hybrid_override_pattern": "M-*-", "mamba_num_heads": 64, "mamba_head_dim": 64, "ssm_state_size": 128}
    assert from_config(config).layer_kinds() == (MAMBA, NO_CACHE, FULL_ATTENTION, NO_CACHE)


@pytest.mark.parametrize("missing", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"])
def test_missing_required_field_is_named(missing: str) -> None:
    config = _load("meta-llama__Llama-3.1-8B-Instruct")
    del config[missing]
    with pytest.raises(SizingError, match=f"config.json: missing field '{missing}'") as caught:
        from_config(config)
    assert caught.value.field == missing


@pytest.mark.parametrize("bad", [-1, "32", 3.5e-1 - 1, True])
def test_malformed_field_is_named(bad: object) -> None:
    config = {**_load("meta-llama__Llama-3.1-8B-Instruct"), "num_hidden_layers": bad}
    with pytest.raises(SizingError) as caught:
        from_config(config)
    assert caught.value.field == "num_hidden_layers"


def test_unknown_layer_type_and_wrong_length_are_rejected() -> None:
    config = _load("meta-llama__Llama-3.1-8B-Instruct")
    with pytest.raises(SizingError, match="unknown layer type"):
        from_config({**config, "layer_types": ["cross_attention"] * 32})
    with pytest.raises(SizingError, match="has 2 entries for 32 layers"):
        from_config({**config, "layer_types": ["full_attention"] * 2})
