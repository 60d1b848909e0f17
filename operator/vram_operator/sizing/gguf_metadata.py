"""Architecture and tensor sizes from a GGUF file's metadata.

Only the header is parsed (``gguf_header``); tensor data is never touched: sizes come from
shapes and GGML block sizes. A model split with ``gguf-split``
(``name-00001-of-00003.gguf``) is read shard by shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from vram_operator.sizing.architecture import (
    FULL_ATTENTION,
    MAMBA,
    NO_CACHE,
    SLIDING_ATTENTION,
    ModelArchitecture,
)
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.gguf_header import GgufArray, GgufHeader, read_gguf_header

FIELD = "model.path"
_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")
_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GgufModel:
    """What llama.cpp needs to know about a GGUF model before loading it."""

    path: str
    architecture: str
    # llama.cpp file type name ("Q4_K_M", "F16") or None when the file does not say.
    file_type: str | None
    tensor_bytes: int
    params: int
    # Bytes of each repeating block (blk.N.*), in layer order.
    block_bytes: tuple[int, ...]
    token_embd_bytes: int
    # output.weight, or the token embedding llama.cpp duplicates as output when tied.
    output_bytes: int
    output_tied: bool
    # Other non-block tensors (norms, rope factors) that go with the output layer.
    other_bytes: int
    block_count: int
    context_length: int | None
    embedding_length: int
    head_count: int
    # Per layer; 0 marks a layer without a KV cache (recurrent/SSM layers of hybrids).
    head_count_kv: tuple[int, ...]
    key_length: int
    value_length: int
    feed_forward_length: int
    vocab_size: int
    expert_count: int
    expert_used_count: int
    expert_feed_forward_length: int
    expert_shared_count: int
    leading_dense_block_count: int
    kv_lora_rank: int
    rope_dimension_count: int
    sliding_window: int | None
    # Per layer True where the layer uses the sliding window (from sliding_window_pattern).
    sliding_window_layers: tuple[bool, ...]
    # Per layer True where the layer has state-space (ssm_*) tensors: recurrent, no KV.
    recurrent_layers: tuple[bool, ...]

    @property
    def quantization(self) -> str | None:
        """The spec's quantization name (``gguf-Q4_K_M``)."""
        return None if self.file_type is None else f"gguf-{self.file_type}"

    def to_architecture(self) -> ModelArchitecture:
        """The GGUF facts as the engine-independent architecture record."""
        layer_types: tuple[str, ...] = ()
        # Explicit kinds when layers differ, or when a window is declared without a per-layer
        # pattern (llama.cpp hard-codes some patterns): every layer then counts as full
        # attention, an over- rather than under-estimate.
        if (
            any(count == 0 for count in self.head_count_kv)
            or any(self.sliding_window_layers)
            or self.sliding_window is not None
        ):
            sliding = self.sliding_window_layers or (False,) * self.block_count
            layer_types = tuple(
                (MAMBA if recurrent else NO_CACHE) if kv == 0 else (SLIDING_ATTENTION if swa else FULL_ATTENTION)
                for kv, swa, recurrent in zip(self.head_count_kv, sliding, self.recurrent_layers, strict=True)
            )
        return ModelArchitecture(
            model_type=self.architecture,
            num_layers=self.block_count,
            hidden_size=self.embedding_length,
            num_attention_heads=self.head_count,
            num_kv_heads=max(self.head_count_kv, default=0),
            head_dim=self.key_length,
            intermediate_size=self.feed_forward_length,
            vocab_size=self.vocab_size,
            params_b=self.params / 1e9,
            tie_word_embeddings=self.output_tied,
            max_position_embeddings=self.context_length,
            num_experts=self.expert_count,
            num_experts_per_tok=self.expert_used_count,
            moe_intermediate_size=self.expert_feed_forward_length,
            num_shared_experts=self.expert_shared_count,
            first_k_dense_layers=self.leading_dense_block_count,
            kv_lora_rank=self.kv_lora_rank,
            qk_rope_head_dim=self.rope_dimension_count if self.kv_lora_rank else 0,
            sliding_window=self.sliding_window,
            layer_types=layer_types,
            quantization=self.quantization,
        )


def read_gguf_model(path: Path) -> GgufModel:
    """Read a GGUF file's metadata and tensor table (all shards of a split model)."""
    reader = _open(path)
    shard_paths = _split_shards(path, reader)
    readers = [reader] + [_open(shard) for shard in shard_paths[1:]]
    arch = _string(reader, gguf.Keys.General.ARCHITECTURE, path)
    tensors = [tensor for shard_reader in readers for tensor in shard_reader.tensors]
    block_count = _int(reader, _key(gguf.Keys.LLM.BLOCK_COUNT, arch), path)
    if block_count <= 0:
        raise SizingError(f"{path}: {_key(gguf.Keys.LLM.BLOCK_COUNT, arch)} must be positive", field=FIELD)

    block_bytes = [0] * block_count
    recurrent = [False] * block_count
    token_embd = output = other = 0
    has_output = False
    for tensor in tensors:
        size = tensor.n_bytes
        block = _BLOCK_TENSOR.match(tensor.name)
        if block is not None and int(block[1]) < block_count:
            block_bytes[int(block[1])] += size
            recurrent[int(block[1])] |= ".ssm_" in tensor.name
        elif tensor.name == "token_embd.weight":
            token_embd = size
        elif tensor.name == "output.weight":
            output, has_output = size, True
        else:
            other += size

    embedding = _int(reader, _key(gguf.Keys.LLM.EMBEDDING_LENGTH, arch), path)
    head_count = max(_int_list(reader, _key(gguf.Keys.Attention.HEAD_COUNT, arch), path, block_count))
    kv_heads = _int_list(reader, _key(gguf.Keys.Attention.HEAD_COUNT_KV, arch), path, block_count, head_count)
    head_dim = embedding // head_count if head_count else 0
    key_length = _optional_int(reader, _key(gguf.Keys.Attention.KEY_LENGTH, arch)) or head_dim
    return GgufModel(
        path=str(path),
        architecture=arch,
        file_type=_file_type(reader),
        tensor_bytes=sum(tensor.n_bytes for tensor in tensors),
        params=sum(tensor.n_elements for tensor in tensors),
        block_bytes=tuple(block_bytes),
        token_embd_bytes=token_embd,
        output_bytes=output if has_output else token_embd,
        output_tied=not has_output,
        other_bytes=other,
        block_count=block_count,
        context_length=_optional_int(reader, _key(gguf.Keys.LLM.CONTEXT_LENGTH, arch)),
        embedding_length=embedding,
        head_count=head_count,
        head_count_kv=tuple(kv_heads),
        key_length=key_length,
        value_length=_optional_int(reader, _key(gguf.Keys.Attention.VALUE_LENGTH, arch)) or key_length,
        feed_forward_length=max(
            _int_list(reader, _key(gguf.Keys.LLM.FEED_FORWARD_LENGTH, arch), path, block_count, 0), default=0
        ),
        vocab_size=_vocab_size(reader, arch),
        expert_count=_optional_int(reader, _key(gguf.Keys.LLM.EXPERT_COUNT, arch)) or 0,
        expert_used_count=_optional_int(reader, _key(gguf.Keys.LLM.EXPERT_USED_COUNT, arch)) or 0,
        expert_feed_forward_length=_optional_int(reader, _key(gguf.Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, arch)) or 0,
        expert_shared_count=_optional_int(reader, _key(gguf.Keys.LLM.EXPERT_SHARED_COUNT, arch)) or 0,
        leading_dense_block_count=_optional_int(reader, _key(gguf.Keys.LLM.LEADING_DENSE_BLOCK_COUNT, arch)) or 0,
        kv_lora_rank=_optional_int(reader, _key(gguf.Keys.Attention.KV_LORA_RANK, arch)) or 0,
        rope_dimension_count=_optional_int(reader, _key(gguf.Keys.Rope.DIMENSION_COUNT, arch)) or 0,
        sliding_window=_optional_int(reader, _key(gguf.Keys.Attention.SLIDING_WINDOW, arch)),
        sliding_window_layers=_sliding_window_layers(reader, arch, block_count),
        recurrent_layers=tuple(recurrent),
    )


def _open(path: Path) -> GgufHeader:
    if not path.is_file():
        raise SizingError(f"{path}: no such GGUF file", field=FIELD)
    return read_gguf_header(path)


def _split_shards(path: Path, reader: GgufHeader) -> list[Path]:
    count = _optional_int(reader, gguf.Keys.Split.LLM_KV_SPLIT_COUNT) or 1
    if count <= 1:
        return [path]
    named = _SPLIT_NAME.match(path.name)
    if named is None or int(named["index"]) != 1:
        raise SizingError(
            f"{path}: part of a {count}-file split model; give the first file (…-00001-of-…)", field=FIELD
        )
    shards = [path.with_name(f"{named['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise SizingError(f"{path}: split shards missing: {', '.join(missing[:3])}", field=FIELD)
    return shards


def _value(reader: GgufHeader, key: str) -> Any:
    """A metadata value; arrays as lists (None when too long to have been kept)."""
    found = reader.fields.get(key)
    if isinstance(found, GgufArray):
        return None if found.values is None else list(found.values)
    return found


def _string(reader: GgufHeader, key: str, path: Path) -> str:
    value = _value(reader, key)
    if not isinstance(value, str) or not value:
        raise SizingError(f"{path}: GGUF metadata {key} is missing", field=FIELD)
    return value


def _optional_int(reader: GgufHeader, key: str) -> int | None:
    value = _value(reader, key)
    if isinstance(value, list):
        value = max(value, default=None)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(reader: GgufHeader, key: str, path: Path) -> int:
    value = _optional_int(reader, key)
    if value is None:
        raise SizingError(f"{path}: GGUF metadata {key} is missing", field=FIELD)
    return value


def _int_list(reader: GgufHeader, key: str, path: Path, layers: int, default: int | None = None) -> list[int]:
    """A per-layer value that GGUF stores either as one number or as one per layer."""
    value = _value(reader, key)
    if value is None:
        if default is None:
            raise SizingError(f"{path}: GGUF metadata {key} is missing", field=FIELD)
        return [default] * layers
    if isinstance(value, list):
        if len(value) != layers:
            raise SizingError(f"{path}: {key} has {len(value)} entries for {layers} layers", field=FIELD)
        return [int(item) for item in value]
    return [int(value)] * layers


def _key(template: str, arch: str) -> str:
    """A per-architecture metadata key, from gguf's own table (``{arch}.block_count``)."""
    return template.format(arch=arch)


def _vocab_size(reader: GgufHeader, arch: str) -> int:
    declared = _optional_int(reader, _key(gguf.Keys.LLM.VOCAB_SIZE, arch))
    if declared is not None:
        return declared
    tokens = reader.fields.get(gguf.Keys.Tokenizer.LIST)
    return tokens.count if isinstance(tokens, GgufArray) else 0


def _sliding_window_layers(reader: GgufHeader, arch: str, layers: int) -> tuple[bool, ...]:
    pattern = _value(reader, _key(gguf.Keys.Attention.SLIDING_WINDOW_PATTERN, arch))
    if isinstance(pattern, list) and len(pattern) == layers:
        return tuple(bool(item) for item in pattern)
    return ()


def _file_type(reader: GgufHeader) -> str | None:
    value = _optional_int(reader, gguf.Keys.General.FILE_TYPE)
    if value is None:
        return None
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def find_gguf(path: Path) -> Path | None:
    """The GGUF model file ``path`` names or a directory holds, or None.

    Multimodal projectors (``mmproj*.gguf``) are not models; of a split model the first
    shard stands for all. Several models in one directory are ambiguous: an error.
    """
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    if not path.is_dir():
        return None
    found = []
    for candidate in sorted(path.glob("*.gguf")):
        split = _SPLIT_NAME.match(candidate.name)
        if candidate.name.startswith("mmproj") or (split is not None and int(split["index"]) != 1):
            continue
        found.append(candidate)
    if len(found) > 1:
        names = ", ".join(candidate.name for candidate in found[:3])
        raise SizingError(f"{path}: several GGUF models ({names}); point model.path at one", field=FIELD)
    return found[0] if found else None
