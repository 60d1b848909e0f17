"""A streaming reader of a GGUF file's header: metadata key/values and the tensor table.

GGUF layout (little-endian unless the version reads byte-swapped): magic ``GGUF``,
version (u32), tensor count and key/value count (u64 each), the key/values (string key,
u32 value type, value), then per tensor its name, dimension count, dimensions, GGML type
and data offset; tensor data follows at the next alignment boundary.

``gguf.GGUFReader`` builds numpy views for every string of the tokenizer arrays, which
takes about 26 s for a Llama-3 vocabulary (128k tokens + 280k merges) on a small CPU; this
reader walks them in well under a second and keeps only the lengths of long arrays. Type
tables (value types, GGML block sizes) come from the gguf library. Tensor data is never read.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from vram_operator.sizing.errors import SizingError

FIELD = "model.path"
MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Arrays longer than this (tokenizer vocabularies, merges) keep only their length.
MAX_KEPT_ARRAY = 4096
# Sanity limits: beyond these the header is corrupt, not a model.
MAX_ENTRIES = 10_000_000
MAX_DIMS = 8

_SCALAR_FORMATS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True)
class GgufArray:
    """An array value: its length, and its items when short enough to keep."""

    count: int
    values: tuple[Any, ...] | None


@dataclass(frozen=True)
class GgufTensorInfo:
    name: str
    ggml_type: gguf.GGMLQuantizationType
    n_elements: int
    n_bytes: int
    # Offset of the tensor's data from the start of the data section.
    offset: int


@dataclass(frozen=True)
class GgufHeader:
    version: int
    fields: dict[str, Any]
    tensors: tuple[GgufTensorInfo, ...]
    data_offset: int


def read_gguf_header(path: Path) -> GgufHeader:
    """Parse the header of ``path``; SizingError (naming the file) when it is not valid GGUF."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size < 24:
                raise SizingError(f"{path}: not a GGUF file ({size} bytes)", field=FIELD)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _Parser(view, path).header()
    except OSError as error:
        raise SizingError(f"{path}: cannot read: {error.strerror or error}", field=FIELD) from error


class _Parser:
    def __init__(self, view: mmap.mmap, path: Path) -> None:
        self.view = view
        self.path = path
        self.pos = 0
        self.order = "<"

    def fail(self, what: str) -> SizingError:
        return SizingError(f"{self.path}: not a readable GGUF file ({what})", field=FIELD)

    def header(self) -> GgufHeader:
        if self.view[:4] != MAGIC:
            raise self.fail("bad magic")
        self.pos = 4
        (version,) = self.take("I")
        if version & 0xFFFF == 0:
            # Written on a machine of the other byte order.
            self.order = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in SUPPORTED_VERSIONS:
            raise self.fail(f"version {version}; supported: {SUPPORTED_VERSIONS}")
        tensor_count, kv_count = self.take("QQ")
        if tensor_count > MAX_ENTRIES or kv_count > MAX_ENTRIES:
            raise self.fail(f"{tensor_count} tensors and {kv_count} keys")
        fields: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self.string()
            (value_type,) = self.take("I")
            fields[key] = self.value(value_type)
        tensors = tuple(self.tensor_info() for _ in range(tensor_count))
        alignment = fields.get(gguf.Keys.General.ALIGNMENT, DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise self.fail(f"alignment {alignment!r}")
        data_offset = -(-self.pos // alignment) * alignment
        end = max((tensor.offset + tensor.n_bytes for tensor in tensors), default=0)
        if data_offset + end > len(self.view):
            raise self.fail(f"tensor data ends at byte {data_offset + end}, past the file end {len(self.view)}")
        return GgufHeader(version=version, fields=fields, tensors=tensors, data_offset=data_offset)

    def take(self, fmt: str) -> tuple[Any, ...]:
        layout = struct.Struct(self.order + fmt)
        if self.pos + layout.size > len(self.view):
            raise self.fail("truncated header")
        values = layout.unpack_from(self.view, self.pos)
        self.pos += layout.size
        return values

    def string(self) -> str:
        raw = self.skip_string()
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> bytes:
        (length,) = self.take("Q")
        if self.pos + length > len(self.view):
            raise self.fail("truncated string")
        raw = self.view[self.pos : self.pos + length]
        self.pos += length
        return raw

    def value(self, value_type: int) -> Any:
        scalar = _SCALAR_FORMATS.get(value_type)
        if scalar is not None:
            return self.take(scalar)[0]
        if value_type == gguf.GGUFValueType.STRING:
            return self.string()
        if value_type == gguf.GGUFValueType.ARRAY:
            return self.array()
        raise self.fail(f"unknown value type {value_type}")

    def array(self) -> GgufArray:
        item_type, count = self.take("IQ")
        if count > MAX_ENTRIES * 10:
            raise self.fail(f"array of {count} items")
        keep = count <= MAX_KEPT_ARRAY
        scalar = _SCALAR_FORMATS.get(item_type)
        if scalar is not None:
            layout = struct.Struct(f"{self.order}{count}{scalar}")
            if self.pos + layout.size > len(self.view):
                raise self.fail("truncated array")
            values = layout.unpack_from(self.view, self.pos) if keep else None
            self.pos += layout.size
            return GgufArray(count, values)
        if item_type == gguf.GGUFValueType.STRING:
            if keep:
                return GgufArray(count, tuple(self.string() for _ in range(count)))
            for _ in range(count):
                self.skip_string()
            return GgufArray(count, None)
        if item_type == gguf.GGUFValueType.ARRAY:
            return GgufArray(count, tuple(self.array() for _ in range(count)))
        raise self.fail(f"unknown array item type {item_type}")

    def tensor_info(self) -> GgufTensorInfo:
        name = self.string()
        (n_dims,) = self.take("I")
        if n_dims > MAX_DIMS:
            raise self.fail(f"tensor {name!r} has {n_dims} dimensions")
        dims = self.take(f"{n_dims}Q")
        raw_type, offset = self.take("IQ")
        try:
            ggml_type = gguf.GGMLQuantizationType(raw_type)
            block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError) as error:
            raise self.fail(f"tensor {name!r} has unknown GGML type {raw_type}") from error
        elements = 1
        for dim in dims:
            elements *= dim
        return GgufTensorInfo(name, ggml_type, elements, elements * type_size // block_size, offset)
