"""The streaming GGUF header reader, checked against the gguf library's own reader."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from weight_files import write_gguf

from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.gguf_header import MAX_KEPT_ARRAY, GgufArray, read_gguf_header


def _library_value(field: gguf.ReaderField) -> object:
    value = field.contents()
    return tuple(value) if isinstance(value, list) else value


def test_agrees_with_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, layers=3, kv_heads=[2, 0, 2], extra_kv={"llama.expert_count": 8})
    mine = read_gguf_header(path)
    library = gguf.GGUFReader(path)
    assert mine.data_offset == library.data_offset
    for key, field in library.fields.items():
        if key.startswith("GGUF."):
            continue
        value = mine.fields[key]
        expected = _library_value(field)
        if isinstance(value, GgufArray):
            assert value.values == expected, key
        elif isinstance(value, float):
            assert value == pytest.approx(expected), key
        else:
            assert value == expected, key
    assert [(t.name, t.ggml_type, t.n_elements, t.n_bytes, t.offset) for t in mine.tensors] == [
        (t.name, t.tensor_type, t.n_elements, t.n_bytes, t.data_offset - library.data_offset) for t in library.tensors
    ]


def test_long_arrays_keep_only_their_length(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_token_list([f"token{i}" for i in range(MAX_KEPT_ARRAY + 1)])
    writer.add_token_types([1] * (MAX_KEPT_ARRAY + 1))
    writer.add_array("short.list", [1, 2, 3])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    fields = read_gguf_header(path).fields
    assert fields["tokenizer.ggml.tokens"] == GgufArray(MAX_KEPT_ARRAY + 1, None)
    assert fields["tokenizer.ggml.token_type"] == GgufArray(MAX_KEPT_ARRAY + 1, None)
    assert fields["short.list"] == GgufArray(3, (1, 2, 3))


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_block_count(7)
    writer.add_tensor("t.weight", np.zeros((4, 8), dtype=np.float32), tensor_endianess=gguf.GGUFEndian.LITTLE)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf_header(path)
    assert header.fields["llama.block_count"] == 7
    assert header.tensors[0].n_bytes == 4 * 8 * 4


def _raw_header(
    version: int = 3, kv: bytes = b"", kv_count: int = 0, tensors: bytes = b"", tensor_count: int = 0
) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count) + kv + tensors


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"GGUF", "not a GGUF file"),
        (b"GGML" + bytes(40), "bad magic"),
        (_raw_header(version=1), "version 1"),
        (_raw_header(kv_count=1), "truncated header"),
        (_raw_header(kv=_string("k") + struct.pack("<I", 99), kv_count=1), "unknown value type 99"),
        (_raw_header(kv=struct.pack("<Q", 1 << 40), kv_count=1), "truncated string"),
        (_raw_header(kv_count=1 << 40), "keys"),
        (_raw_header(tensors=_string("t") + struct.pack("<I", 9), tensor_count=1), "9 dimensions"),
        (
            _raw_header(tensors=_string("t") + struct.pack("<IQIQ", 1, 4, 250, 0), tensor_count=1),
            "unknown GGML type 250",
        ),
        (
            _raw_header(tensors=_string("t") + struct.pack("<IQIQ", 1, 1 << 20, 0, 0), tensor_count=1),
            "past the file end",
        ),
    ],
)
def test_corrupt_headers_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content.ljust(24, b"\0") if content.startswith(b"GGUF") and len(content) > 4 else content)
    with pytest.raises(SizingError, match=message) as error:
        read_gguf_header(path)
    assert error.value.field == "model.path"
    assert "bad.gguf" in str(error.value)
