"""Safetensors headers: byte and parameter counts without reading tensor data; bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from weight_files import llama_like_tensors, write_safetensors

from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.safetensors_header import has_safetensors, read_header, read_safetensors_weights


def test_header_of_a_file_written_by_the_safetensors_library(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(
        {"a": np.zeros((3, 5), dtype=np.float16), "b": np.zeros(7, dtype=np.float32), "c": np.zeros(4, dtype=np.int64)},
        str(path),
    )
    weights = read_safetensors_weights(path)
    assert weights.bytes_by_dtype == {"F16": 30, "F32": 28, "I64": 32}
    assert weights.total_bytes == 90
    assert weights.params == 22  # the int64 buffer is not a parameter
    assert weights.params_exact


def test_sharded_checkpoint_sums_all_shards_named_by_the_index(tmp_path: Path) -> None:
    tensors = llama_like_tensors(layers=4, hidden=4096, ffn=14336, vocab=128256, kv_dim=1024)
    names = list(tensors)
    first = {name: tensors[name] for name in names[:20]}
    second = {name: tensors[name] for name in names[20:]}
    size_1 = write_safetensors(tmp_path / "model-00001-of-00002.safetensors", first)
    size_2 = write_safetensors(tmp_path / "model-00002-of-00002.safetensors", second)
    weight_map = {n: "model-00001-of-00002.safetensors" for n in first} | {
        n: "model-00002-of-00002.safetensors" for n in second
    }
    index = {"metadata": {"total_size": 1}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    weights = read_safetensors_weights(tmp_path)
    # Headers win over the index's total when the shards are present.
    assert weights.total_bytes == size_1 + size_2
    assert weights.params == (size_1 + size_2) // 2
    assert len(weights.files) == 2


def test_index_total_is_used_when_the_shards_are_absent(tmp_path: Path) -> None:
    index = {"metadata": {"total_size": 16060522496}, "weight_map": {"x": "model-00001-of-00004.safetensors"}}
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    weights = read_safetensors_weights(path)
    assert weights.total_bytes == 16060522496
    assert weights.params is None
    assert "total_size" in weights.warnings[0]


def test_index_without_shards_or_total_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps({"weight_map": {"x": "absent.safetensors"}}))
    with pytest.raises(SizingError, match=r"absent.safetensors.*total_size") as error:
        read_safetensors_weights(path)
    assert error.value.field == "model.path"


def test_gptq_packs_eight_4bit_weights_per_int32(tmp_path: Path) -> None:
    hidden, out = 4096, 4096
    write_safetensors(
        tmp_path / "model.safetensors",
        {
            "layer.qweight": ("I32", (hidden // 8, out)),
            "layer.qzeros": ("I32", (hidden // 128, out // 8)),
            "layer.scales": ("F16", (hidden // 128, out)),
            "layer.g_idx": ("I32", (hidden,)),
        },
    )
    weights = read_safetensors_weights(tmp_path)
    assert weights.params == hidden * out  # scales, zeros and g_idx are not parameters
    assert not weights.params_exact
    assert weights.bytes_by_dtype["I32"] == hidden * out // 2 + hidden // 128 * out // 8 * 4 + hidden * 4


def test_fp8_and_packed_uint8_checkpoints(tmp_path: Path) -> None:
    write_safetensors(
        tmp_path / "model.safetensors",
        {
            "fp8.weight": ("F8_E4M3", (256, 512)),
            "fp8.weight_scale_inv": ("F32", (2, 4)),
            "moe.gate_up_proj_blocks": ("U8", (8, 128, 16)),
            "moe.gate_up_proj_scales": ("U8", (8, 128)),
        },
    )
    weights = read_safetensors_weights(tmp_path)
    assert weights.bytes_by_dtype == {"F8_E4M3": 256 * 512, "F32": 32, "U8": 8 * 128 * 16 + 8 * 128}
    assert weights.params == 256 * 512 + 8 * 128 * 16 * 2


def test_mistral_consolidated_duplicate_is_not_counted_twice(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "consolidated.safetensors", {"w": ("BF16", (1024, 1024))})
    write_safetensors(tmp_path / "model-00001-of-00001.safetensors", {"w": ("BF16", (1024, 1024))})
    assert read_safetensors_weights(tmp_path).total_bytes == 2 * 1024 * 1024


def test_unknown_dtype_is_counted_with_a_warning(tmp_path: Path) -> None:
    header = {"t": {"dtype": "F3_NEW", "shape": [10], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    weights = read_safetensors_weights(path)
    assert weights.total_bytes == 4
    assert "F3_NEW" in weights.warnings[0]


def test_header_is_read_without_touching_tensor_data(tmp_path: Path) -> None:
    # 64 GiB of declared data in a sparse file: reading it would take minutes, the header is instant.
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"huge": ("BF16", (2**17, 2**18))})
    assert read_safetensors_weights(path).total_bytes == 2**36


def test_has_safetensors(tmp_path: Path) -> None:
    assert not has_safetensors(tmp_path)
    assert not has_safetensors(tmp_path / "missing")
    write_safetensors(tmp_path / "x.safetensors", {"w": ("F16", (2,))})
    assert has_safetensors(tmp_path)
    assert has_safetensors(tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated"),
        (b"\x05\x00\x00", "truncated"),
        (struct.pack("<Q", 1 << 40) + b"{}", "exceeds the file"),
        (struct.pack("<Q", 200_000_000) + b"{}", "exceeds the file"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 9) + b'{"t": 12}', "malformed"),
    ],
)
def test_broken_headers_are_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(SizingError, match=message) as error:
        read_safetensors_weights(path)
    assert error.value.field == "model.path"
    assert str(path) in str(error.value)


def test_absurd_header_length_is_refused_even_in_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", 150_000_000))
        handle.truncate(200_000_000)  # sparse: the header length fits the file but not the limit
    with pytest.raises(SizingError, match="100000000-byte limit"):
        read_header(path)


def test_truncated_data_region_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"w": ("F32", (1000,))})
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(SizingError, match="truncated file"):
        read_header(path)


def test_shape_that_disagrees_with_offsets_is_an_error(tmp_path: Path) -> None:
    header = {"t": {"dtype": "F32", "shape": [10], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(SizingError, match="should hold 40 bytes"):
        read_safetensors_weights(path)


def test_directory_without_weights_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SizingError, match=r"no \*\.safetensors"):
        read_safetensors_weights(tmp_path)
