"""The GGUF key names and block sizes sizing takes from the gguf library are the format's numbers.

Sizing no longer restates them; these tests pin what it relied on, so a gguf release that renames a
key or changes a block layout fails here instead of silently mis-sizing a model.
"""

from __future__ import annotations

import gguf
import pytest

from vram_operator.sizing.gguf_metadata import _key

# (block elements, bytes per block) of the llama.cpp quantization formats, from ggml's type traits.
BLOCKS = {
    gguf.GGMLQuantizationType.F32: (1, 4),
    gguf.GGMLQuantizationType.F16: (1, 2),
    gguf.GGMLQuantizationType.BF16: (1, 2),
    gguf.GGMLQuantizationType.Q4_0: (32, 18),
    gguf.GGMLQuantizationType.Q4_1: (32, 20),
    gguf.GGMLQuantizationType.Q5_0: (32, 22),
    gguf.GGMLQuantizationType.Q8_0: (32, 34),
    gguf.GGMLQuantizationType.Q2_K: (256, 84),
    gguf.GGMLQuantizationType.Q3_K: (256, 110),
    gguf.GGMLQuantizationType.Q4_K: (256, 144),
    gguf.GGMLQuantizationType.Q5_K: (256, 176),
    gguf.GGMLQuantizationType.Q6_K: (256, 210),
    gguf.GGMLQuantizationType.IQ4_XS: (256, 136),
}


@pytest.mark.parametrize(("ggml_type", "block"), BLOCKS.items(), ids=lambda v: getattr(v, "name", str(v)))
def test_quant_block_sizes_are_the_formats(ggml_type: gguf.GGMLQuantizationType, block: tuple[int, int]) -> None:
    assert gguf.GGML_QUANT_SIZES[ggml_type] == block


def test_q4_k_m_bits_per_weight() -> None:
    elements, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    assert size * 8 / elements == 4.5


@pytest.mark.parametrize(
    ("template", "key"),
    [
        (gguf.Keys.General.ARCHITECTURE, "general.architecture"),
        (gguf.Keys.General.ALIGNMENT, "general.alignment"),
        (gguf.Keys.General.FILE_TYPE, "general.file_type"),
        (gguf.Keys.Split.LLM_KV_SPLIT_COUNT, "split.count"),
        (gguf.Keys.Tokenizer.LIST, "tokenizer.ggml.tokens"),
        (gguf.Keys.LLM.BLOCK_COUNT, "llama.block_count"),
        (gguf.Keys.LLM.EMBEDDING_LENGTH, "llama.embedding_length"),
        (gguf.Keys.LLM.CONTEXT_LENGTH, "llama.context_length"),
        (gguf.Keys.LLM.FEED_FORWARD_LENGTH, "llama.feed_forward_length"),
        (gguf.Keys.LLM.VOCAB_SIZE, "llama.vocab_size"),
        (gguf.Keys.LLM.EXPERT_COUNT, "llama.expert_count"),
        (gguf.Keys.LLM.EXPERT_USED_COUNT, "llama.expert_used_count"),
        (gguf.Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, "llama.expert_feed_forward_length"),
        (gguf.Keys.LLM.EXPERT_SHARED_COUNT, "llama.expert_shared_count"),
        (gguf.Keys.LLM.LEADING_DENSE_BLOCK_COUNT, "llama.leading_dense_block_count"),
        (gguf.Keys.Attention.HEAD_COUNT, "llama.attention.head_count"),
        (gguf.Keys.Attention.HEAD_COUNT_KV, "llama.attention.head_count_kv"),
        (gguf.Keys.Attention.KEY_LENGTH, "llama.attention.key_length"),
        (gguf.Keys.Attention.VALUE_LENGTH, "llama.attention.value_length"),
        (gguf.Keys.Attention.KV_LORA_RANK, "llama.attention.kv_lora_rank"),
        (gguf.Keys.Attention.SLIDING_WINDOW, "llama.attention.sliding_window"),
        (gguf.Keys.Attention.SLIDING_WINDOW_PATTERN, "llama.attention.sliding_window_pattern"),
        (gguf.Keys.Rope.DIMENSION_COUNT, "llama.rope.dimension_count"),
    ],
)
def test_metadata_keys_are_the_formats(template: str, key: str) -> None:
    assert _key(template, "llama") == key
