"""Parameter counts and quantization hints read from model names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.sizing.model_name import FFN_SHARE, detect_name_quantization, parse_model_name


@pytest.mark.parametrize(
    ("name", "params_b"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1.1),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("HuggingFaceTB/SmolLM2-135M", 0.135),
        ("some-org/encoder-500m", 0.5),
        ("google/gemma-2-9b-it", 9.0),
        ("Llama-2-7b-chat.Q4_K_M.gguf", 7.0),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32.0),
        ("moonshot/Kimi-1T", 1000.0),
    ],
)
def test_dense_sizes(name: str, params_b: float) -> None:
    facts = parse_model_name(name)
    assert facts.params_b == pytest.approx(params_b)
    assert facts.active_params_b is None


def test_active_parameter_tokens_are_not_the_total() -> None:
    qwen = parse_model_name("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert (qwen.params_b, qwen.active_params_b) == (30.0, 3.0)
    nemotron = parse_model_name("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16")
    assert (nemotron.params_b, nemotron.active_params_b) == (30.0, 3.0)
    assert nemotron.quantization is None  # BF16 is a dtype, not a quantization


def test_experts_times_size_shares_attention_and_embeddings() -> None:
    mixtral = parse_model_name("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert mixtral.params_b == pytest.approx(7 * (1 + 7 * FFN_SHARE))
    # Published: 46.7B and 141B; the estimate stays within 4 %.
    assert mixtral.params_b == pytest.approx(46.7, rel=0.04)
    assert parse_model_name("Mixtral-8x22B").params_b == pytest.approx(141, rel=0.04)
    assert mixtral.derivation is not None and "8 experts" in mixtral.derivation


@pytest.mark.parametrize(
    "name",
    [
        "unsloth/llama-model-bnb-4bit",
        "org/model-int4",
        "org/model-8bit",
        "org/model-fp8",
        "org/model-AWQ",
        "org/model.Q4_K_M.gguf",
        "microsoft/Phi-3-mini-128k-instruct",
        "BAAI/bge-m3",
        "openai/whisper-large-v3",
        "ultralytics/yolov8n",
        "openai/clip-vit-base-patch32",
        "ViT-B/32",
        "Meta-Llama-3",
        "Llama-3.1",
    ],
)
def test_names_without_a_size_token_have_no_size(name: str) -> None:
    assert parse_model_name(name).params_b is None


@pytest.mark.parametrize(
    ("name", "label", "spec_name"),
    [
        ("unsloth/Llama-3.2-1B-Instruct-bnb-4bit", "4-bit", "bitsandbytes"),
        ("org/Model-7B-int4", "4-bit", "int4"),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", "4-bit", "awq"),
        ("Qwen/Qwen2.5-Coder-32B-Instruct-GPTQ-Int4", "4-bit", "gptq"),
        ("org/Model-GPTQ-8bit", "8-bit", "gptq-8bit"),
        ("org/Model-bnb-8bit", "8-bit", "bitsandbytes-8bit"),
        ("org/Model-8bit", "8-bit", "int8"),
        ("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8", "fp8", "fp8"),
        ("bartowski/Llama-3.2-3B-Instruct-Q4_K_M.gguf", "gguf-Q4_K_M", "gguf-Q4_K_M"),
        ("unsloth/model-UD-q5_k_xl.gguf", "gguf-Q5_K_XL", "gguf-Q5_K_XL"),
        ("org/model-IQ4_XS", "gguf-IQ4_XS", "gguf-IQ4_XS"),
        ("org/model-Q8_0", "gguf-Q8_0", "gguf-Q8_0"),
        ("org/model-mxfp4", "mxfp4", "mxfp4"),
    ],
)
def test_quantization_hints(name: str, label: str, spec_name: str) -> None:
    hint = detect_name_quantization(name)
    assert hint is not None
    assert (hint.label, hint.spec_name) == (label, spec_name)


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-8B-Instruct", "org/Q4-report", "org/awqward", "org/Qwen3-4B"])
def test_no_quantization_hint(name: str) -> None:
    assert detect_name_quantization(name) is None


_WORDS = st.sampled_from(
    ["llama", "Qwen", "instruct", "chat", "v2", "v0.1", "4bit", "8bit", "int4", "fp8", "awq", "gptq", "Q4_K_M",
     "IQ2_XXS", "hf", "128k", "e5", "m3", "base", "large", "3.1", "bnb", "GGUF", "BF16", "A3B", "mini", "x"]
)  # fmt: skip
_SEPARATORS = st.sampled_from(["-", "_", ".", "/"])


@st.composite
def _sizeless_names(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORDS, min_size=1, max_size=6))
    separators = draw(st.lists(_SEPARATORS, min_size=len(words), max_size=len(words)))
    return "".join(word + separator for word, separator in zip(words, separators, strict=True)).strip("-_./")


@given(_sizeless_names())
def test_property_no_size_token_never_yields_a_size(name: str) -> None:
    assert parse_model_name(name).params_b is None


@given(
    _sizeless_names(),
    st.integers(min_value=1, max_value=999),
    st.sampled_from([("B", 1.0), ("b", 1.0), ("M", 1e-3), ("m", 1e-3)]),
)
def test_property_one_size_token_is_read_exactly(prefix: str, number: int, unit: tuple[str, float]) -> None:
    suffix, scale = unit
    facts = parse_model_name(f"{prefix}-{number}{suffix}-instruct")
    assert facts.params_b == pytest.approx(number * scale)
