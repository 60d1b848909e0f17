"""GGUF metadata: architecture fields, tensor bytes per layer, split files, bad files."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from weight_files import q8_0_bytes, write_gguf

from vram_operator.sizing.architecture import FULL_ATTENTION, MAMBA, NO_CACHE, SLIDING_ATTENTION
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.gguf_metadata import find_gguf, read_gguf_model
from vram_operator.sizing.llamacpp import LlamaCppModel, LlamaCppSettings, estimate_llamacpp

HIDDEN, FFN, VOCAB, KV_DIM = 64, 128, 256, 32


def _block_bytes() -> int:
    matrices = 2 * q8_0_bytes(HIDDEN, HIDDEN) + 2 * q8_0_bytes(KV_DIM, HIDDEN) + 3 * q8_0_bytes(FFN, HIDDEN)
    return matrices + HIDDEN * 4  # + the f32 attention norm


def test_reads_architecture_and_tensor_sizes(tmp_path: Path) -> None:
    path = tmp_path / "tiny-Q8_0.gguf"
    write_gguf(path, layers=3, context=8192)
    model = read_gguf_model(path)
    assert model.architecture == "llama"
    assert (model.file_type, model.quantization) == ("Q8_0", "gguf-Q8_0")
    assert model.block_bytes == (_block_bytes(),) * 3
    assert model.token_embd_bytes == VOCAB * HIDDEN * 4
    assert model.output_bytes == q8_0_bytes(VOCAB, HIDDEN)
    assert model.other_bytes == HIDDEN * 4  # output_norm
    assert model.tensor_bytes == 3 * _block_bytes() + VOCAB * HIDDEN * 4 + q8_0_bytes(VOCAB, HIDDEN) + HIDDEN * 4
    assert (model.head_count, model.head_count_kv, model.key_length) == (4, (2, 2, 2), 16)
    assert (model.context_length, model.vocab_size, model.feed_forward_length) == (8192, VOCAB, FFN)

    arch = model.to_architecture()
    assert (arch.num_layers, arch.num_kv_heads, arch.head_dim, arch.hidden_size) == (3, 2, 16, HIDDEN)
    assert arch.params_b == pytest.approx(model.params / 1e9)
    assert arch.quantization == "gguf-Q8_0"
    assert not arch.tie_word_embeddings


def test_tied_embedding_is_duplicated_as_output(tmp_path: Path) -> None:
    path = tmp_path / "tied.gguf"
    write_gguf(path, tied=True)
    model = read_gguf_model(path)
    assert model.output_tied
    assert model.output_bytes == model.token_embd_bytes
    assert model.to_architecture().tie_word_embeddings


def test_per_layer_kv_heads_mark_layers_without_cache(tmp_path: Path) -> None:
    path = tmp_path / "hybrid.gguf"
    write_gguf(path, layers=3, kv_heads=[2, 0, 2])
    model = read_gguf_model(path)
    assert model.head_count_kv == (2, 0, 2)
    assert model.to_architecture().layer_types == (FULL_ATTENTION, NO_CACHE, FULL_ATTENTION)
    # llama.cpp keeps no KV for the layer without KV heads.
    estimate = estimate_llamacpp(LlamaCppModel.from_gguf(model), LlamaCppSettings(n_ctx=1024))
    assert estimate.kv_bytes_per_token == 2 * (2 * 16 * 2 * 2)


def test_recurrent_layer_kind_comes_from_ssm_tensors(tmp_path: Path) -> None:
    path = tmp_path / "ssm.gguf"
    writer = gguf.GGUFWriter(path, "mamba2")
    for add, value in ((writer.add_block_count, 2), (writer.add_embedding_length, 32), (writer.add_head_count, 2)):
        add(value)
    writer.add_head_count_kv([0, 2])
    writer.add_tensor("blk.0.ssm_in.weight", np.zeros((32, 32), dtype=np.float32))
    writer.add_tensor("blk.1.attn_q.weight", np.zeros((32, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_gguf_model(path).to_architecture().layer_types == (MAMBA, FULL_ATTENTION)


def test_full_offload_puts_blocks_and_output_on_the_gpu(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, layers=4)
    model = read_gguf_model(path)
    llama = LlamaCppModel.from_gguf(model)
    full = estimate_llamacpp(llama, LlamaCppSettings(n_ctx=512))
    gpu_bytes = sum(model.block_bytes) + model.output_bytes + model.other_bytes
    assert full.n_gpu_layers == 5
    assert full.weights_mib * 2**20 == pytest.approx(gpu_bytes)
    # The token embedding stays on the host.
    assert full.host_weights_mib * 2**20 == pytest.approx(model.token_embd_bytes)
    half = estimate_llamacpp(llama, LlamaCppSettings(n_ctx=512, n_gpu_layers=2))
    assert half.weights_mib * 2**20 == pytest.approx(2 * _block_bytes())
    assert half.kv_cache_mib == pytest.approx(full.kv_cache_mib / 2)


def test_split_model_is_read_from_all_shards(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "split.gguf", "llama", split_max_tensors=10)
    for add, value in (
        (writer.add_block_count, 2),
        (writer.add_embedding_length, 64),
        (writer.add_head_count, 4),
        (writer.add_head_count_kv, 2),
    ):
        add(value)
    for i in range(2):
        for j in range(8):
            writer.add_tensor(f"blk.{i}.t{j}.weight", np.zeros((8, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shards = sorted(tmp_path.glob("*.gguf"))
    assert [shard.name for shard in shards] == ["split-00001-of-00002.gguf", "split-00002-of-00002.gguf"]
    assert find_gguf(tmp_path) == shards[0]
    model = read_gguf_model(shards[0])
    assert model.tensor_bytes == 16 * 8 * 64 * 4
    with pytest.raises(SizingError, match="give the first file"):
        read_gguf_model(shards[1])
    shards[1].unlink()
    with pytest.raises(SizingError, match="split shards missing"):
        read_gguf_model(shards[0])


def test_find_gguf(tmp_path: Path) -> None:
    assert find_gguf(tmp_path) is None
    write_gguf(tmp_path / "model.gguf")
    write_gguf(tmp_path / "mmproj-model-f16.gguf")
    assert find_gguf(tmp_path) == tmp_path / "model.gguf"  # the projector is not a model
    assert find_gguf(tmp_path / "model.gguf") == tmp_path / "model.gguf"
    write_gguf(tmp_path / "other.gguf")
    with pytest.raises(SizingError, match="several GGUF models"):
        find_gguf(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"GGU", b"not a gguf file at all, just text", b"GGUF\x03\x00\x00\x00\xff\xff"],
)
def test_not_a_gguf_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(SizingError, match=r"bad\.gguf") as error:
        read_gguf_model(path)
    assert error.value.field == "model.path"


def test_truncated_gguf_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path)
    data = path.read_bytes()
    for cut in (40, 300, len(data) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(SizingError, match=r"m\.gguf"):
            read_gguf_model(path)


def test_missing_metadata_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_embedding_length(64)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(SizingError, match=r"llama\.block_count is missing"):
        read_gguf_model(path)
    with pytest.raises(SizingError, match="no such GGUF file"):
        read_gguf_model(tmp_path / "absent.gguf")


def test_sliding_window_pattern(tmp_path: Path) -> None:
    path = tmp_path / "swa.gguf"
    write_gguf(path, layers=4, extra_kv={"llama.attention.sliding_window": 1024})
    unknown_pattern = read_gguf_model(path).to_architecture()
    # Without a per-layer pattern every layer is sized as full attention (never under).
    assert unknown_pattern.sliding_window == 1024
    assert unknown_pattern.layer_kinds() == (FULL_ATTENTION,) * 4

    writer_path = tmp_path / "swa-pattern.gguf"
    write_gguf(
        writer_path, layers=4, extra_kv={"llama.attention.sliding_window": 1024}, sliding_pattern=[True, False] * 2
    )
    model = read_gguf_model(writer_path)
    assert model.sliding_window_layers == (True, False, True, False)
    assert model.to_architecture().layer_kinds() == (SLIDING_ATTENTION, FULL_ATTENTION) * 2
    estimate = estimate_llamacpp(LlamaCppModel.from_gguf(model), LlamaCppSettings(n_ctx=8192))
    per_cell = 2 * 16 * 2 * 2
    assert estimate.kv_cache_mib * 2**20 == 2 * 8192 * per_cell + 2 * (1024 + 512) * per_cell
