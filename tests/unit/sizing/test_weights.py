"""The weights resolver: source priority, reasons, dtype and quantization handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from weight_files import llama_like_tensors, write_gguf, write_safetensors

from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture, weights_bytes_from_params
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.weights import MIB, resolve_weights

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
LLAMA_8B = from_config(json.loads((CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json").read_text()))


def _llama_checkpoint(directory: Path, dtype: str = "BF16") -> int:
    # Two of Llama-3.1-8B's 32 layers, real widths: enough to check exact byte sums.
    tensors = llama_like_tensors(layers=2, hidden=4096, ffn=14336, vocab=128256, kv_dim=1024, dtype=dtype)
    return write_safetensors(directory / "model.safetensors", tensors)


def test_explicit_override_wins(tmp_path: Path) -> None:
    _llama_checkpoint(tmp_path)
    estimate = resolve_weights(weights_mib=5000, path=tmp_path, architecture=LLAMA_8B, model_name="x-70B")
    assert (estimate.total_bytes, estimate.source) == (5000 * MIB, "config")
    assert estimate.reasons == ("used: explicit weightsMiB 5000",)


def test_an_override_of_a_catalogued_model_keeps_the_catalogs_architecture() -> None:
    # Before: weightsMiB dropped the catalog's architecture, so vLLM sizing failed "the KV cache depends
    # on the architecture ... or a model name the catalog knows" for a model the catalog knows.
    # Found by the randomized driver (tests/model_based, seed 206).
    estimate = resolve_weights(weights_mib=1800, model_name="Qwen/Qwen2.5-0.5B-Instruct")
    assert (estimate.total_bytes, estimate.source) == (1800 * MIB, "config")
    assert estimate.architecture is not None and estimate.architecture.num_layers == 24
    assert resolve_weights(weights_mib=1800, model_name="my-org/unknown-model").architecture is None


@pytest.mark.parametrize("weights_mib", [0, -1, 1e12, float("nan")])
def test_bad_override_is_refused(weights_mib: float) -> None:
    with pytest.raises(SizingError) as error:
        resolve_weights(weights_mib=weights_mib)
    assert error.value.field == "weightsMiB"


def test_safetensors_headers_beat_the_config(tmp_path: Path) -> None:
    data_bytes = _llama_checkpoint(tmp_path)
    estimate = resolve_weights(path=tmp_path, architecture=LLAMA_8B, model_name="meta-llama/Llama-3.1-8B")
    assert (estimate.total_bytes, estimate.source) == (data_bytes, "safetensors")
    assert estimate.params_b == pytest.approx(data_bytes / 2 / 1e9)
    assert estimate.architecture is LLAMA_8B
    assert estimate.reasons[0] == "skipped: weightsMiB not set"
    assert estimate.reasons[-1].startswith("used: safetensors headers of 1 file(s)")


def test_float32_checkpoint_is_counted_at_the_engine_dtype(tmp_path: Path) -> None:
    data_bytes = _llama_checkpoint(tmp_path, dtype="F32")
    # vLLM --dtype auto runs a float32 checkpoint in bfloat16; float16 is two bytes too.
    assert resolve_weights(path=tmp_path, dtype="auto").total_bytes == data_bytes // 2
    assert resolve_weights(path=tmp_path, dtype="float32").total_bytes == data_bytes
    # Engines that load tensors as stored pass no dtype.
    assert resolve_weights(path=tmp_path).total_bytes == data_bytes


def test_quantization_at_load_applies_to_an_unquantized_checkpoint(tmp_path: Path) -> None:
    data_bytes = _llama_checkpoint(tmp_path)
    estimate = resolve_weights(path=tmp_path, quantization="fp8")
    assert estimate.source == "safetensors"
    assert estimate.quantization == "fp8"
    assert estimate.total_bytes == weights_bytes_from_params(data_bytes / 2 / 1e9, None, "fp8")


def test_gguf_file_is_read_when_there_are_no_safetensors(tmp_path: Path) -> None:
    write_gguf(tmp_path / "model-Q8_0.gguf")
    estimate = resolve_weights(path=tmp_path, quantization="awq")
    assert estimate.source == "gguf"
    assert estimate.gguf is not None and estimate.total_bytes == estimate.gguf.tensor_bytes
    assert estimate.quantization == "gguf-Q8_0"
    assert estimate.architecture is not None and estimate.architecture.num_layers == 2
    assert "quantization awq ignored" in estimate.warnings[0]
    assert "skipped: no safetensors at" in estimate.reasons[1]


def test_config_architecture_when_no_weight_files(tmp_path: Path) -> None:
    estimate = resolve_weights(path=tmp_path, architecture=LLAMA_8B, dtype="bfloat16")
    assert estimate.source == "config"
    assert estimate.total_bytes == weights_bytes_for_architecture(LLAMA_8B, "bfloat16", None)
    assert estimate.total_bytes == pytest.approx(8.03e9 * 2, rel=0.01)
    assert "skipped: no GGUF file at" in estimate.reasons[2]
    awq = resolve_weights(architecture=LLAMA_8B, quantization="awq")
    assert awq.quantization == "awq" and awq.total_bytes < estimate.total_bytes / 2.5


def test_catalog_before_name_and_native_quantization() -> None:
    gpt_oss = resolve_weights(model_name="openai/gpt-oss-20b")
    assert gpt_oss.source == "catalog"
    assert gpt_oss.quantization == "mxfp4"
    # MXFP4 experts + bf16 rest: about 13 GiB, not the 39 GiB of 20.9B x bf16.
    assert 12 * 2**30 < gpt_oss.total_bytes < 14 * 2**30
    assert gpt_oss.catalog_entry is not None and gpt_oss.catalog_entry.id == "openai/gpt-oss-20b"


def test_catalog_variant_takes_the_quantization_from_the_name() -> None:
    awq = resolve_weights(model_name="Qwen/Qwen2.5-7B-Instruct-AWQ")
    plain = resolve_weights(model_name="Qwen/Qwen2.5-7B-Instruct")
    assert (awq.source, awq.quantization, plain.quantization) == ("catalog", "awq", None)
    assert awq.params_b == plain.params_b == 7.61
    assert awq.total_bytes < plain.total_bytes / 2.5
    assert "matched by variant" in awq.reasons[-1]


def test_vision_tower_outside_the_shapes_is_counted() -> None:
    gemma = resolve_weights(model_name="google/gemma-3-4b-it", dtype="bfloat16")
    assert gemma.total_bytes == pytest.approx(4.3e9 * 2, rel=0.001)


def test_name_when_not_catalogued() -> None:
    estimate = resolve_weights(model_name="my-org/custom-13B-fp8")
    assert (estimate.source, estimate.params_b, estimate.quantization) == ("name", 13.0, "fp8")
    assert estimate.total_bytes == weights_bytes_from_params(13.0, None, "fp8")
    assert "from the model name" in estimate.warnings[0]
    assert "skipped: 'my-org/custom-13B-fp8' is not in the catalog" in estimate.reasons


def test_unknown_gguf_type_in_a_name_is_a_warning_not_an_error() -> None:
    estimate = resolve_weights(model_name="my-org/custom-13B-Q4_K_XL.gguf")
    assert estimate.source == "name" and estimate.quantization is None
    assert any("gguf-Q4_K_XL" in warning for warning in estimate.warnings)


@pytest.mark.parametrize("name", [None, "my-org/detector", "my-org/finetune-Q4_K_M.gguf"])
def test_nothing_telling_the_size_is_an_error_naming_weights_mib(name: str | None) -> None:
    # Before: a silent 7B guess. A name with a size, the catalog or a config.json still size it.
    with pytest.raises(SizingError) as raised:
        resolve_weights(model_name=name, dtype="float16")
    assert raised.value.field == "model.weightsMiB"
    assert "nothing tells the size" in str(raised.value)
    assert resolve_weights(model_name="my-org/finetune-7B-Q4_K_M.gguf").source == "name"


@pytest.mark.parametrize(("quantization", "dtype", "field"), [("int3", None, "quantization"), (None, "fp4", "dtype")])
def test_unknown_quantization_or_dtype_is_an_error(quantization: str | None, dtype: str | None, field: str) -> None:
    with pytest.raises(SizingError) as error:
        resolve_weights(architecture=LLAMA_8B, quantization=quantization, dtype=dtype)
    assert error.value.field == field


def test_broken_weight_files_are_errors_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(SizingError, match="truncated"):
        resolve_weights(path=tmp_path, architecture=LLAMA_8B)
