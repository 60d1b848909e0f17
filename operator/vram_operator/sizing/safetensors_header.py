"""Weight bytes from safetensors headers, without reading any tensor data.

A safetensors file starts with an 8-byte little-endian header length N, then N bytes of
JSON mapping tensor names to ``{"dtype", "shape", "data_offsets": [start, end]}``; tensor
bytes follow. Only the header is read. ``model.safetensors.index.json`` (sharded
checkpoints) lists the shards and a ``metadata.total_size`` in bytes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_operator.sizing.errors import SizingError

FIELD = "model.path"
INDEX_SUFFIX = ".safetensors.index.json"
# The safetensors library refuses headers above 100 MB; a real header is a few MB at most.
MAX_HEADER_BYTES = 100_000_000

# Bits per stored element.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

# Parameters held by one stored element of a weight tensor. Quantized checkpoints pack
# 4-bit values: GPTQ/AWQ/compressed-tensors ``qweight``/``weight_packed`` hold eight per
# int32, bitsandbytes NF4, MXFP4 ``*_blocks`` and NVFP4 hold two per uint8. Integer dtypes
# not listed (I64 position ids, BOOL masks) are buffers, not parameters.
_PARAMS_PER_ELEMENT: dict[str, int] = {
    "I32": 8,
    "U32": 8,
    "U8": 2,
    "I8": 1,
    "F4": 1,
    "F6_E2M3": 1,
    "F6_E3M2": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F16": 1,
    "BF16": 1,
    "F32": 1,
    "F64": 1,
}
_PACKED_DTYPES = frozenset({"I32", "U32", "U8"})

# Quantization side tensors (scales, zero points, group indices): bytes, not parameters.
_AUXILIARY_NAME = re.compile(r"(scale|zero|g_idx|absmax|quant_map|quant_state|weight_shape|_amax)", re.IGNORECASE)


@dataclass(frozen=True)
class SafetensorsWeights:
    """Tensor bytes of one checkpoint (all shards), read from headers or an index."""

    total_bytes: int
    bytes_by_dtype: dict[str, int]
    # Parameter count; None when only an index total was available.
    params: int | None
    # False when packed 4-bit tensors were counted (their bit width is assumed).
    params_exact: bool
    files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def has_safetensors(path: Path) -> bool:
    """Whether ``path`` is, or is a directory holding, safetensors weights or an index."""
    if path.is_file():
        return path.name.endswith((".safetensors", INDEX_SUFFIX))
    if path.is_dir():
        return any(path.glob("*.safetensors")) or any(path.glob(f"*{INDEX_SUFFIX}"))
    return False


def read_safetensors_weights(path: Path) -> SafetensorsWeights:
    """Sum tensor bytes of a ``.safetensors`` file, an index json, or a model directory."""
    if path.is_file() and path.name.endswith(INDEX_SUFFIX):
        return _read_index(path)
    if path.is_file():
        return _summarise([path], [])
    if not path.is_dir():
        raise SizingError(f"{path}: no such file or directory", field=FIELD)
    indexes = sorted(path.glob(f"*{INDEX_SUFFIX}"))
    if indexes:
        return _read_index(indexes[0])
    shards = sorted(path.glob("*.safetensors"))
    # Mistral repos ship the same weights twice (consolidated.safetensors + model-*).
    split = [shard for shard in shards if not shard.name.startswith("consolidated")]
    if split and len(split) < len(shards):
        shards = split
    if not shards:
        raise SizingError(f"{path}: no *.safetensors file or index", field=FIELD)
    return _summarise(shards, [])


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of one safetensors file; checks it against the file's size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise SizingError(f"{path}: truncated safetensors file ({size} bytes)", field=FIELD)
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length > size - 8:
                raise SizingError(
                    f"{path}: safetensors header length {length} exceeds the file ({size} bytes) "
                    f"or the {MAX_HEADER_BYTES}-byte limit",
                    field=FIELD,
                )
            raw = handle.read(length)
    except OSError as error:
        raise SizingError(f"{path}: cannot read: {error.strerror}", field=FIELD) from error
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SizingError(f"{path}: safetensors header is not valid JSON", field=FIELD) from error
    if not isinstance(header, dict):
        raise SizingError(f"{path}: safetensors header is not a JSON object", field=FIELD)
    _check_extent(path, header, data_bytes=size - 8 - length)
    return header


def _check_extent(path: Path, header: Mapping[str, Any], data_bytes: int) -> None:
    for name, entry in _tensor_entries(path, header):
        end = entry["data_offsets"][1]
        if end > data_bytes:
            raise SizingError(
                f"{path}: tensor {name!r} ends at byte {end} past the data ({data_bytes} bytes): truncated file",
                field=FIELD,
            )


def _tensor_entries(path: Path, header: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not _valid_entry(entry):
            raise SizingError(f"{path}: tensor {name!r} has a malformed header entry", field=FIELD)
        yield name, entry


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    return (
        isinstance(dtype, str)
        and isinstance(shape, list)
        and all(isinstance(dim, int) and dim >= 0 for dim in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(offset, int) for offset in offsets)
        and 0 <= offsets[0] <= offsets[1]
    )


def _summarise(shards: list[Path], warnings: list[str]) -> SafetensorsWeights:
    bytes_by_dtype: dict[str, int] = {}
    params = 0
    packed = False
    for shard in shards:
        header = read_header(shard)
        for name, entry in _tensor_entries(shard, header):
            dtype: str = entry["dtype"]
            start, end = entry["data_offsets"]
            stored = end - start
            elements = math.prod(entry["shape"])
            bits = DTYPE_BITS.get(dtype)
            if bits is None:
                warnings.append(f"{shard.name}: unknown dtype {dtype} of {name!r}; counted its bytes")
            elif elements * bits != stored * 8:
                raise SizingError(
                    f"{shard}: tensor {name!r} ({dtype}, shape {entry['shape']}) should hold "
                    f"{elements * bits // 8} bytes but its offsets span {stored}",
                    field=FIELD,
                )
            bytes_by_dtype[dtype] = bytes_by_dtype.get(dtype, 0) + stored
            if _AUXILIARY_NAME.search(name.rsplit(".", 1)[-1]) or ".quant_state." in name:
                continue
            per_element = _PARAMS_PER_ELEMENT.get(dtype, 0)
            params += elements * per_element
            packed = packed or (dtype in _PACKED_DTYPES)
    return SafetensorsWeights(
        total_bytes=sum(bytes_by_dtype.values()),
        bytes_by_dtype=bytes_by_dtype,
        params=params,
        params_exact=not packed,
        files=tuple(str(shard) for shard in shards),
        warnings=tuple(warnings),
    )


def _read_index(index: Path) -> SafetensorsWeights:
    try:
        document = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SizingError(f"{index}: not a readable safetensors index JSON", field=FIELD) from error
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SizingError(f"{index}: index has no weight_map of tensor -> shard file", field=FIELD)
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if not missing:
        return _summarise(shards, [])
    metadata = document.get("metadata")
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        raise SizingError(
            f"{index}: shards {', '.join(missing[:3])} are absent and the index has no positive metadata.total_size",
            field=FIELD,
        )
    return SafetensorsWeights(
        total_bytes=total,
        bytes_by_dtype={},
        params=None,
        params_exact=False,
        files=(str(index),),
        warnings=(f"{index.name}: shards not present; used the index's total_size",),
    )
