"""Pipeline parallel: vLLM's layer split, what each stage holds, and the stage that binds every GPU."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.pipeline import (
    binding_stage_profile,
    layer_partition,
    stage_architectures,
    stage_weights_bytes,
)
from vram_operator.sizing.server import size_server, vllm_profile_on_gpu
from vram_operator.sizing.vllm import VllmSettings, memory_for_tokens, weights_per_rank

CONFIGS = Path(__file__).parents[2] / "fixtures" / "model-configs"
H200_MIB = 143_771.0


def _arch(name: str) -> ModelArchitecture:
    config: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return from_config(config)


@pytest.mark.parametrize(
    ("layers", "stages", "split"),
    [
        (32, 2, (16, 16)),
        (61, 2, (31, 30)),  # DeepSeek-V3: the extra layer goes before the last stage
        (61, 4, (15, 15, 16, 15)),
        (62, 4, (15, 16, 16, 15)),
        (63, 4, (16, 16, 16, 15)),
        (5, 5, (1, 1, 1, 1, 1)),
    ],
)
def test_layer_partition_is_vllms(layers: int, stages: int, split: tuple[int, ...]) -> None:
    assert layer_partition(layers, stages) == split


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=64))
def test_stages_cover_every_layer_exactly_once(layers: int, stages: int) -> None:
    if stages > layers:
        with pytest.raises(SizingError):
            layer_partition(layers, stages)
        return
    split = layer_partition(layers, stages)
    assert len(split) == stages and sum(split) == layers
    assert max(split) - min(split) <= 1
    assert split[-1] == layers // stages  # the last stage (LM head, sampler) never gets an extra layer


@given(
    st.sampled_from(["deepseek-ai__DeepSeek-V3", "openai__gpt-oss-20b", "google__gemma-3-27b-it"]), st.integers(1, 8)
)
def test_stage_layer_kinds_concatenate_to_the_whole_model(name: str, stages: int) -> None:
    arch = _arch(name)
    parts = stage_architectures(arch, stages)
    assert sum((stage.layer_kinds() for stage in parts), ()) == arch.layer_kinds()
    assert sum(stage.first_k_dense_layers for stage in parts) == arch.first_k_dense_layers
    assert [stage.holds_embedding for stage in parts] == [True] + [False] * (stages - 1)
    assert [stage.holds_lm_head for stage in parts] == [False] * (stages - 1) + [True]


def test_stage_weights_add_up_to_the_model_untied() -> None:
    arch = _arch("meta-llama__Llama-3.1-8B-Instruct")
    total = weights_bytes_for_architecture(arch, "auto", None)
    shares = [stage_weights_bytes(total, arch, stage, "auto", None) for stage in stage_architectures(arch, 4)]
    assert sum(shares) == pytest.approx(total, rel=1e-5)  # each stage counts one final norm (4096 values)
    embedding = 128256 * 4096 * 2
    # The first stage carries the embedding, the last the LM head; the middle ones only layers.
    assert shares[0] - shares[1] == pytest.approx(embedding, rel=1e-6)
    assert shares[3] - shares[1] == pytest.approx(embedding, rel=1e-6)


def test_a_tied_lm_head_is_a_second_copy_on_the_last_stage() -> None:
    arch = replace(_arch("meta-llama__Llama-3.1-8B-Instruct"), tie_word_embeddings=True, params_b=None)
    total = weights_bytes_for_architecture(arch, "auto", None)
    shares = [stage_weights_bytes(total, arch, stage, "auto", None) for stage in stage_architectures(arch, 2)]
    assert sum(shares) - total == pytest.approx(128256 * 4096 * 2, rel=1e-3)


@given(
    st.sampled_from(
        [
            "meta-llama__Llama-3.1-8B-Instruct",
            "Qwen__Qwen2.5-7B-Instruct",
            "deepseek-ai__DeepSeek-V3",
            "openai__gpt-oss-20b",
        ]
    ),
    st.sampled_from([1, 2, 4]),
    st.sampled_from([2, 3, 4, 8]),
)
def test_per_gpu_figure_never_below_the_tp_only_per_stage_share(name: str, tp: int, pp: int) -> None:
    arch = _arch(name)
    settings = VllmSettings(max_model_len=4096, tensor_parallel_size=tp)
    total = weights_bytes_for_architecture(arch, "auto", None)
    tp_only = weights_per_rank(total, arch, tp)
    binding = binding_stage_profile(arch, total, settings, H200_MIB, stages=pp)
    assert binding.weights_mib * 1024 * 1024 * pp >= tp_only * (1 - 1e-9)
    assert binding.weights_mib * 1024 * 1024 < tp_only  # and a stage holds less than the whole model
    # The whole per-GPU budget too: never below the TP-only server's figure shared out over the stages.
    whole = binding_stage_profile(arch, total, settings, H200_MIB)
    assert memory_for_tokens(binding, 4096) * pp >= memory_for_tokens(whole, 4096) * (1 - 1e-9)


def test_the_binding_stage_sizes_the_kv_cache_for_its_own_layers() -> None:
    arch = _arch("deepseek-ai__DeepSeek-V3")
    settings = VllmSettings(max_model_len=8192, tensor_parallel_size=4)
    whole = binding_stage_profile(arch, weights_bytes_for_architecture(arch, "auto", "fp8"), settings, H200_MIB)
    staged = binding_stage_profile(
        arch, weights_bytes_for_architecture(arch, "auto", "fp8"), settings, H200_MIB, stages=2
    )
    # MLA: one latent per token per layer, the same on every rank. The last stage (30 of 61 layers, the
    # LM head and the sampler pass) needs more than the first (31 layers and the embedding): it binds.
    assert staged.kv_bytes_per_token * 61 == whole.kv_bytes_per_token * 30
    assert staged.weights_mib < whole.weights_mib * 0.55


def _spec(**fields: Any) -> InferenceServerSpec:
    return InferenceServerSpec.model_validate(
        {"engine": "vllm", "image": "vllm/vllm-openai:v0.19.0", "model": {"name": "m"}, "maxModelLen": 8192} | fields
    )


def test_pp2_tp2_needs_about_what_tp4_needs_per_gpu() -> None:
    config = json.loads((CONFIGS / "meta-llama__Llama-3.3-70B-Instruct.json").read_text())
    tp2 = size_server(_spec(tensorParallelSize=2), config, gpu_total_mib=H200_MIB)
    tp4_spec = _spec(tensorParallelSize=4)
    tp4 = size_server(tp4_spec, config, gpu_total_mib=H200_MIB)
    pp2_spec = _spec(tensorParallelSize=2, pipelineParallelSize=2)
    pp2 = size_server(pp2_spec, config, gpu_total_mib=H200_MIB)
    pp2_profile = vllm_profile_on_gpu(pp2, pp2_spec, H200_MIB)
    tp4_profile = vllm_profile_on_gpu(tp4, tp4_spec, H200_MIB)
    assert pp2_profile is not None and tp4_profile is not None
    # The last stage holds half the layers and the LM head on 2 GPUs: as much per GPU as a quarter
    # of everything (the embedding's quarter and the LM head's quarter) on 4, within vLLM's
    # utilization share. Beyond it (0.19 captures its CUDA graphs after the KV cache), a stage
    # captures graphs for its own 40 layers, TP 4 for all 80.
    pp2_share = pp2.preferred_mib - pp2_profile.graphs_outside_mib
    tp4_share = tp4.preferred_mib - tp4_profile.graphs_outside_mib
    assert pp2_share == pytest.approx(tp4_share, rel=0.005)
    assert 0 < pp2_profile.graphs_outside_mib < tp4_profile.graphs_outside_mib
    assert pp2.preferred_mib < 0.6 * tp2.preferred_mib
    assert any("2 stages of 40+40 layers" in reason for reason in pp2.reasons)


def test_pipeline_parallel_size_is_validated() -> None:
    assert _spec().pipeline_parallel_size == 1 and _spec().gpus_per_replica == 1
    assert _spec(tensorParallelSize=2, pipelineParallelSize=4).gpus_per_replica == 8
    for bad, message in (
        ({"pipelineParallelSize": 0}, "pipelineParallelSize"),
        ({"tensorParallelSize": 8, "pipelineParallelSize": 9}, "at most 64 GPUs (one node)"),
        (
            {"pipelineParallelSize": 2, "placement": {"node": "n", "gpus": [0]}},
            "tensorParallelSize x pipelineParallelSize",
        ),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            _spec(**bad)
    with pytest.raises(ValueError, match="pipelineParallelSize is for vllm only"):
        InferenceServerSpec.model_validate(
            {"engine": "llamacpp", "image": "i", "model": {"name": "m"}, "pipelineParallelSize": 2}
        )


def test_more_stages_than_layers_is_a_spec_error() -> None:
    config = json.loads((CONFIGS / "Qwen__Qwen2.5-0.5B-Instruct.json").read_text())
    with pytest.raises(SizingError, match="more than the model's 24 layers") as error:
        size_server(_spec(pipelineParallelSize=32), config)
    assert error.value.field == "pipelineParallelSize"
