"""Weights of model families vLLM loads differently from a plain decoder.

Vision-language models load their vision tower and projector; pooling (embedding) models load
no LM head and run no sampler; MXFP4 MoE checkpoints (gpt-oss) load padded packed experts with
bf16 biases next to bf16 attention, embeddings, router and LM head. Parameter totals are the
published ones (Hugging Face model pages); the MXFP4 layout is vLLM's Mxfp4MoEMethod.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.sizing.architecture import from_config, is_pooling_architecture
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
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
        ("mistralai__Mistral-Small-3.1-24B-Instruct-2503", 24.011),
        ("Qwen__Qwen2.5-VL-7B-Instruct", 8.29),
        ("Qwen__Qwen2-VL-2B-Instruct", 2.21),
        ("google__gemma-3-27b-it", 27.4),
    ],
)
def test_vision_language_totals_match_published_counts(name: str, published_b: float) -> None:
    assert from_config(_config(name)).params_b == pytest.approx(published_b, rel=0.003)


def test_mistral3_vision_tower_and_projector_match_the_checkpoint() -> None:
    arch = from_config(_config("mistralai__Mistral-Small-3.1-24B-Instruct-2503"))
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


def _mxfp4_layout_bytes(layers: int, experts: int, hidden: int, inner: int) -> int:
    """vLLM's MXFP4 expert tensors: padded, packed e2m1 pairs + e8m0 scale per 32, bf16 biases."""
    inner_pad = -(-inner // 128) * 128
    hidden_pad = -(-hidden // 256) * 256
    w13 = 2 * inner_pad * hidden_pad // 2 + 2 * inner_pad * hidden_pad // 32 + 2 * inner_pad * 2
    w2 = hidden_pad * inner_pad // 2 + hidden_pad * inner_pad // 32 + hidden_pad * 2
    router = (hidden + 1) * experts * 2
    return layers * (experts * (w13 + w2) + router)


def test_gpt_oss_experts_load_padded_with_scales_and_biases() -> None:
    arch = from_config(_config("openai__gpt-oss-20b"))
    parts = arch.param_breakdown()
    bf16_rest = (parts.total - parts.experts) * 2
    expected = _mxfp4_layout_bytes(24, 32, 2880, 2880) + bf16_rest
    assert weights_bytes_for_architecture(arch, "auto", None) == expected
    # 4.25 bits per expert weight unpadded (the checkpoint's own size) is 6-7% under this.
    unpadded = parts.experts * 4.25 / 8 + bf16_rest
    assert 1.05 < expected / unpadded < 1.08


def test_gpt_oss_20b_loads_about_13_7_gib() -> None:
    arch = from_config(_config("openai__gpt-oss-20b"))
    assert weights_bytes_for_architecture(arch, "auto", None) / GIB == pytest.approx(13.67, abs=0.02)


def test_a_catalogued_model_served_for_embeddings_loses_its_lm_head() -> None:
    def spec(args: list[str]) -> InferenceServerSpec:
        return InferenceServerSpec.model_validate(
            {
                "engine": "vllm",
                "image": "vllm/vllm-openai:v0.19.0",
                "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                "maxModelLen": 8192,
                "args": args,
            }
        )

    chat, embed = size_server(spec([])), size_server(spec(["--runner=pooling"]))
    assert chat.weights is not None and embed.weights is not None
    assert (chat.weights.source, embed.weights.source) == ("catalog", "catalog")
    assert chat.weights.total_bytes - embed.weights.total_bytes == 128256 * 4096 * 2


# --- against weights vLLM logged ("Model loading took N GiB") -------------------------------------

LOGGED = Path(__file__).parents[2] / "fixtures" / "vllm-weights-logged.csv"
# The tolerance the notes claim for weights from config.json shapes (rounding of the logged GiB,
# buffers the shapes leave out).
WEIGHTS_TOLERANCE = 0.01


def _logged_rows() -> list[dict[str, str]]:
    with LOGGED.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("row", _logged_rows(), ids=lambda row: f"{row['model']}@{row['vllm_version']}")
def test_weights_match_what_vllm_logged(row: dict[str, str]) -> None:
    config = _config(row["config_fixture"])
    if row["runner"] == "pooling":
        config = {**config, "architectures": ["Model"]}
    arch = from_config(config)
    predicted = weights_per_rank(weights_bytes_for_architecture(arch, "auto", None), arch, int(row["tp"])) / GIB
    assert predicted == pytest.approx(float(row["logged_weights_gib"]), rel=WEIGHTS_TOLERANCE)
