"""Weights of model families vLLM loads differently from a plain decoder.

Vision-language models load their vision tower and projector; pooling (embedding) models load
no LM head and run no sampler; MXFP4 MoE checkpoints (gpt-oss) load padded packed experts with
bf16 biases next to bf16 attention, embeddings, router and LM head. Parameter totals are the
published ones (Hugging Face model pages); the MXFP4 layout is vLLM's Mxfp4MoEMethod.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.sizing.architecture import from_config, is_pooling_architecture
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.loaded import loaded_bytes_per_rank
from vram_operator.sizing.runner import pooling_requested
from vram_operator.sizing.server import size_server
from vram_operator.sizing.vllm import VllmSettings, profile, weights_per_rank

CONFIGS = Path(__file__).parents[2] / "fixtures" / "model-configs"
GIB = 1024**3
H100_MIB = 81_559.0


def _config(name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return config


# --- vision towers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "published_b"),
    [
        # Text 23,572,403,200 + vision and projector 438,958,080 parameters.
        ("mistralai__Mistral-Small-3.1-24B-Instruct-2503.hf", 24.011),  # Hugging Face config.json
        ("mistralai__Mistral-Small-3.1-24B-Instruct-2503", 24.011),  # as vLLM builds it from params.json
        ("Qwen__Qwen2.5-VL-7B-Instruct", 8.29),
        ("Qwen__Qwen2-VL-2B-Instruct", 2.21),
        ("google__gemma-3-27b-it", 27.4),
    ],
)
def test_vision_language_totals_match_published_counts(name: str, published_b: float) -> None:
    assert from_config(_config(name)).params_b == pytest.approx(published_b, rel=0.003)


def test_mistral3_vision_tower_and_projector_match_the_checkpoint() -> None:
    arch = from_config(_config("mistralai__Mistral-Small-3.1-24B-Instruct-2503.hf"))
    assert arch.extra_params == pytest.approx(438_958_080, rel=0.002)


def test_qwen2_vl_tower_width_is_embed_dim_not_the_language_models_hidden_size() -> None:
    config = _config("Qwen__Qwen2-VL-2B-Instruct")
    wider = {**config, "vision_config": {**config["vision_config"], "hidden_size": 8192}}
    # vision_config.hidden_size is where the merger projects to, not the tower's width.
    assert from_config(wider).extra_params - from_config(config).extra_params == pytest.approx(
        4 * 1280 * (8192 - 1536), rel=1e-9
    )


def test_vision_tower_weights_are_loaded_in_the_model_dtype() -> None:
    arch = from_config(_config("Qwen__Qwen2.5-VL-7B-Instruct"))
    text_only = from_config({k: v for k, v in _config("Qwen__Qwen2.5-VL-7B-Instruct").items() if k != "vision_config"})
    difference = weights_bytes_for_architecture(arch, "auto", None) - weights_bytes_for_architecture(
        text_only, "auto", None
    )
    assert difference == 2 * arch.extra_params
    assert 0.6e9 < arch.extra_params < 0.7e9


# --- pooling models --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "pooling"),
    [
        ("Qwen3ForCausalLM", False),
        ("Qwen2VLForConditionalGeneration", False),
        ("GPT2LMHeadModel", False),
        ("Qwen2Model", True),
        ("BertModel", True),
        ("Qwen2ForRewardModel", True),
        ("LlamaForSequenceClassification", True),
        ("Gemma3TextEmbeddingModel", True),
    ],
)
def test_runner_follows_the_architecture_suffix(architecture: str, pooling: bool) -> None:
    assert is_pooling_architecture({"architectures": [architecture]}) is pooling


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], None),
        (["--task", "embed"], True),
        (["--task=embedding"], True),
        (["--runner", "pooling"], True),
        (["--convert", "classify"], True),
        (["--runner", "pooling", "--runner", "generate"], False),
        (["--task"], None),
        (["--trust-remote-code"], None),
    ],
)
def test_pooling_requested_by_args(args: list[str], expected: bool | None) -> None:
    assert pooling_requested(args) is expected


@given(st.lists(st.sampled_from(["--seed", "1", "--enforce-eager", "--trust-remote-code", "x"]), max_size=8))
def test_args_without_a_runner_flag_never_decide(args: list[str]) -> None:
    assert pooling_requested(args) is None


def test_embedding_model_has_no_lm_head() -> None:
    config = _config("Qwen__Qwen3-Embedding-8B")
    generating = from_config(config)
    pooling = from_config({**config, "architectures": ["Qwen3Model"]})
    assert generating.holds_lm_head and not pooling.holds_lm_head
    assert generating.total_params() - pooling.total_params() == 151665 * 4096
    assert pooling.params_b == pytest.approx(7.57, rel=0.003)  # published Qwen3-Embedding-8B


def _vllm_spec(config: str, args: list[str]) -> InferenceServerSpec:
    return InferenceServerSpec.model_validate(
        {
            "engine": "vllm",
            "image": "vllm/vllm-openai:v0.19.0",
            "model": {"name": config, "configMapRef": {"name": "cfg"}},
            "maxModelLen": 8192,
            "args": args,
        }
    )


def test_task_embed_drops_the_lm_head_and_the_sampler_from_the_budget() -> None:
    config = _config("Qwen__Qwen3-Embedding-8B")
    generating = size_server(_vllm_spec("Qwen/Qwen3-Embedding-8B", []), config)
    pooling = size_server(_vllm_spec("Qwen/Qwen3-Embedding-8B", ["--task", "embed"]), config)
    assert generating.weights is not None and pooling.weights is not None
    assert generating.weights.total_bytes - pooling.weights.total_bytes == 151665 * 4096 * 2
    assert pooling.preferred_mib < generating.preferred_mib


def test_pooling_profile_runs_no_sampler() -> None:
    config = _config("Qwen__Qwen3-Embedding-8B")
    settings = VllmSettings(max_model_len=8192, max_num_batched_tokens=16, max_num_seqs=1024)
    generating = from_config(config)
    pooling = from_config({**config, "architectures": ["Qwen3Model"]})
    # With a 16-token batch the sampler pass (16 rows of 151,665 logits) is the larger peak.
    gen = profile(generating, 0, settings, H100_MIB)
    pool = profile(pooling, 0, settings, H100_MIB)
    assert pool.activation_mib < gen.activation_mib


# --- MXFP4 MoE ----------------------------------------------------------------------------------


def _mxfp4_layout_bytes(layers: int, experts: int, hidden: int, inner: int, *, tp: int = 1, pad: bool = True) -> int:
    """One rank's MXFP4 expert tensors: packed e2m1 pairs + an e8m0 scale per 32, bf16 biases and router."""
    inner = -(-inner // tp)
    if pad:
        inner, hidden_pad = -(-inner // 128) * 128, -(-hidden // 256) * 256
    else:
        hidden_pad = hidden
    w13 = 2 * inner * hidden_pad // 2 + 2 * inner * hidden_pad // 32 + 2 * inner * 2
    w2 = hidden_pad * inner // 2 + hidden_pad * inner // 32 + hidden_pad * 2
    router = (hidden + 1) * experts * 2
    return layers * (experts * (w13 + w2) + router)


def test_gpt_oss_checkpoint_is_packed_experts_and_bf16_rest() -> None:
    arch = from_config(_config("openai__gpt-oss-20b"))
    parts = arch.param_breakdown()
    bf16_rest = (parts.total - parts.experts) * 2
    checkpoint = weights_bytes_for_architecture(arch, "auto", None)
    assert checkpoint == _mxfp4_layout_bytes(24, 32, 2880, 2880, pad=False) + bf16_rest
    assert checkpoint / GIB == pytest.approx(12.82, abs=0.01)  # the published checkpoint: 13.8 GB


@pytest.mark.parametrize(("tp", "inner_per_rank"), [(1, 2944), (2, 1536), (4, 768)])
def test_gpt_oss_experts_load_padded_per_rank(tp: int, inner_per_rank: int) -> None:
    arch = from_config(_config("openai__gpt-oss-20b"))
    checkpoint = weights_bytes_for_architecture(arch, "auto", None)
    loaded = loaded_bytes_per_rank(checkpoint, arch, tp, dtype="auto", quantization=None)
    padding = _mxfp4_layout_bytes(24, 32, 2880, 2880, tp=tp) - _mxfp4_layout_bytes(24, 32, 2880, 2880, pad=False) // tp
    rope = arch.rope_cache_elements * 2
    assert loaded == weights_per_rank(checkpoint, arch, tp) + padding + rope
    assert -(-(2880 // tp) // 128) * 128 == inner_per_rank
    # The checkpoint's own share is 6% (one GPU) to 10% (four) under what is loaded.
    assert 1.05 < loaded / (weights_per_rank(checkpoint, arch, tp) + rope) < 1.12


def test_llama4_rotary_tables_for_ten_million_positions_are_gibibytes() -> None:
    arch = from_config(
        {
            "model_type": "llama4",
            "text_config": {
                "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
                "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
                "num_key_value_heads": 8, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
                "vocab_size": 202048, "max_position_embeddings": 10485760,
            },
        }
    )  # fmt: skip
    assert arch.rope_cache_elements * 2 / GIB == pytest.approx(2.5)
    # One shared expert of the experts' size in every MoE layer: Scout's 108B text parameters.
    assert arch.shared_expert_intermediate_size == 8192
    assert arch.params_b == pytest.approx(107.8, rel=0.01)


def test_gemma3_keeps_a_scaled_global_and_an_unscaled_local_rotary_table() -> None:
    config = _config("google__gemma-3-27b-it")
    text = config["text_config"]
    assert text["rope_scaling"] == {"factor": 8.0, "rope_type": "linear"}
    arch = from_config(config)
    assert arch.rope_cache_elements == (131072 * 8 + 131072) * 128


def test_ungated_mlp_families_have_two_matrices() -> None:
    config = {
        "model_type": "phi", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
        "num_attention_heads": 32, "vocab_size": 51200, "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.4, "tie_word_embeddings": False,
    }  # fmt: skip
    arch = from_config(config)
    assert arch.param_breakdown().dense_mlp == 32 * 2 * 2560 * 10240
    assert arch.params_b == pytest.approx(2.78, rel=0.01)  # published Phi-2
    assert arch.rope_cache_elements == 2048 * 32  # 40% of the 80-wide heads rotate


def test_pixtral_config_vllm_builds_from_params_json_counts_the_same_tower() -> None:
    # vLLM reads Mistral checkpoints' params.json into a config with no model_type in vision_config
    # and no projector_hidden_act: the architecture name says it is Pixtral's gated encoder.
    hf = _config("mistralai__Mistral-Small-3.1-24B-Instruct-2503.hf")
    assert (
        from_config(_config("mistralai__Mistral-Small-3.1-24B-Instruct-2503")).extra_params
        == from_config(hf).extra_params
    )
    from_params_json = {
        "architectures": ["PixtralForConditionalGeneration"],
        "model_type": "",
        "text_config": hf["text_config"],
        "vision_config": {k: v for k, v in hf["vision_config"].items() if k not in ("model_type", "hidden_act")},
        "spatial_merge_size": 2,
    }
    assert from_config(from_params_json).extra_params == from_config(hf).extra_params


def test_an_explicit_weights_mib_is_what_one_gpu_loads_nothing_added() -> None:
    config = _config("openai__gpt-oss-20b")

    def spec(**model: Any) -> InferenceServerSpec:
        return InferenceServerSpec.model_validate(
            {
                "engine": "vllm",
                "image": "vllm/vllm-openai:v0.19.0",
                "model": {"name": "openai/gpt-oss-20b", "configMapRef": {"name": "c"}, **model},
                "maxModelLen": 8192,
            }
        )

    given, derived = size_server(spec(weightsMiB=10000), config), size_server(spec(), config)
    assert any("weights 10000 MiB" in reason for reason in given.reasons), given.reasons
    # From config.json: the checkpoint (12.82 GiB) plus MXFP4 padding and rotary tables (13.69 GiB).
    assert any("weights 14015 MiB" in reason for reason in derived.reasons), derived.reasons


def test_families_without_rotary_embeddings_keep_no_tables() -> None:
    jamba = from_config(_config("ai21labs__Jamba-v0.1"))
    llama = from_config(_config("meta-llama__Llama-3.1-8B-Instruct"))
    assert jamba.rope_cache_elements == 0
    assert llama.rope_cache_elements == 131072 * 128  # llama3 scaling keeps the table at the trained length
