"""Builders of small weight files for the sizing tests (written into tmp_path at run time).

Safetensors files get a real header; their data region is a sparse hole of the right size,
so a multi-gigabyte checkpoint costs nothing to create. GGUF files are written with the
gguf library's own writer.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np

ST_BITS = {"F32": 32, "F16": 16, "BF16": 16, "F8_E4M3": 8, "I8": 8, "U8": 8, "I32": 32, "I64": 64, "F4": 4}


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Write a safetensors file whose tensors have the given (dtype, shape); returns data bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * ST_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        handle.truncate(8 + len(raw) + offset)
    return offset


def llama_like_tensors(
    *, layers: int, hidden: int, ffn: int, vocab: int, kv_dim: int, dtype: str = "BF16"
) -> dict[str, tuple[str, Sequence[int]]]:
    """Tensor table of a Llama-shaped checkpoint."""
    tensors: dict[str, tuple[str, Sequence[int]]] = {"model.embed_tokens.weight": (dtype, (vocab, hidden))}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        tensors.update(
            {
                prefix + "self_attn.q_proj.weight": (dtype, (hidden, hidden)),
                prefix + "self_attn.k_proj.weight": (dtype, (kv_dim, hidden)),
                prefix + "self_attn.v_proj.weight": (dtype, (kv_dim, hidden)),
                prefix + "self_attn.o_proj.weight": (dtype, (hidden, hidden)),
                prefix + "mlp.gate_proj.weight": (dtype, (ffn, hidden)),
                prefix + "mlp.up_proj.weight": (dtype, (ffn, hidden)),
                prefix + "mlp.down_proj.weight": (dtype, (hidden, ffn)),
                prefix + "input_layernorm.weight": (dtype, (hidden,)),
                prefix + "post_attention_layernorm.weight": (dtype, (hidden,)),
            }
        )
    tensors["model.norm.weight"] = (dtype, (hidden,))
    tensors["lm_head.weight"] = (dtype, (vocab, hidden))
    return tensors


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int | Sequence[int] = 2,
    ffn: int = 128,
    vocab: int = 256,
    context: int = 2048,
    file_type: gguf.LlamaFileType | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    tied: bool = False,
    extra_kv: Mapping[str, int] | None = None,
    sliding_pattern: Sequence[bool] | None = None,
) -> None:
    """A tiny GGUF model: F32 token embedding and norms, Q8_0 matrices, optional output."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(layers)
    writer.add_embedding_length(hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_feed_forward_length(ffn)
    writer.add_context_length(context)
    writer.add_vocab_size(vocab)
    if file_type is not None:
        writer.add_file_type(file_type)
    for key, value in (extra_kv or {}).items():
        writer.add_uint32(key, value)
    if sliding_pattern is not None:
        writer.add_array(f"{arch}.attention.sliding_window_pattern", list(sliding_pattern))
    max_kv = max(kv_heads) if isinstance(kv_heads, Sequence) else kv_heads
    kv_dim = max_kv * hidden // heads
    writer.add_tensor("token_embd.weight", np.zeros((vocab, hidden), dtype=np.float32))
    for i in range(layers):
        for name, rows, cols in (
            ("attn_q", hidden, hidden),
            ("attn_k", kv_dim, hidden),
            ("attn_v", kv_dim, hidden),
            ("attn_output", hidden, hidden),
            ("ffn_gate", ffn, hidden),
            ("ffn_up", ffn, hidden),
            ("ffn_down", hidden, ffn),
        ):
            _add_q8_0(writer, f"blk.{i}.{name}.weight", rows, cols)
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    if not tied:
        _add_q8_0(writer, "output.weight", vocab, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def q8_0_bytes(rows: int, cols: int) -> int:
    """Bytes of a Q8_0 matrix: 34 bytes per block of 32 values."""
    return rows * cols // 32 * 34


def _add_q8_0(writer: gguf.GGUFWriter, name: str, rows: int, cols: int) -> None:
    packed = np.zeros((rows, cols // 32 * 34), dtype=np.uint8)
    writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
