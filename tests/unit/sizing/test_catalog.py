"""The built-in catalog: coverage, consistency of its numbers, lookup rules, bad entries."""

from __future__ import annotations

import pytest

from vram_operator.sizing.catalog import load_catalog, parse_catalog
from vram_operator.sizing.errors import SizingError

CATALOG = load_catalog()


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-3B",
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.1-70B",
        *(f"Qwen/Qwen2.5-{size}" for size in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")),
        "Qwen/Qwen3-8B",
        "Qwen/Qwen3-30B-A3B",
        "mistralai/Mistral-7B-v0.1",
        "mistralai/Mixtral-8x7B-v0.1",
        "google/gemma-2-9b",
        "google/gemma-3-27b-pt",
        "microsoft/Phi-3-mini-4k-instruct",
        "microsoft/phi-4",
        "deepseek-ai/DeepSeek-R1",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "openai/gpt-oss-20b",
        "openai/gpt-oss-120b",
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
        *(f"yolo{v}{s}" for v in ("v8", "11", "26") for s in "nsmlx"),
        "openai/clip-vit-base-patch32",
        "openai/clip-vit-large-patch14",
        "microsoft/Florence-2-base",
        "microsoft/Florence-2-large",
        *(f"openai/whisper-{size}" for size in ("tiny", "base", "small", "medium", "large-v2", "large-v3")),
        "BAAI/bge-m3",
        "intfloat/e5-large-v2",
    ],
)
def test_required_models_are_catalogued(name: str) -> None:
    assert CATALOG.lookup(name) is not None


def test_published_params_agree_with_the_shapes() -> None:
    # A wrong layer count, width or vocabulary would move the computed count far off.
    for entry in CATALOG.entries:
        if entry.architecture is None:
            continue
        computed = entry.architecture.param_breakdown().total / 1e9
        tolerance = 0.12 if entry.note and "vision" in entry.note else 0.03
        assert computed == pytest.approx(entry.params_b, rel=tolerance), entry.id


def test_moe_entries_know_their_active_parameters() -> None:
    for entry in CATALOG.entries:
        if entry.architecture is not None and entry.architecture.is_moe:
            assert entry.active_params_b is not None and entry.active_params_b < entry.params_b, entry.id


def test_generic_services_have_a_footprint_above_their_fp32_weights() -> None:
    for entry in CATALOG.entries:
        if entry.kind == "llm":
            assert entry.typical_vram_mib is None, entry.id
            continue
        assert entry.typical_vram_mib is not None, entry.id
        assert entry.typical_vram_mib * 2**20 > entry.params_b * 1e9 * 4 * 0.8, entry.id


def test_every_entry_cites_a_source() -> None:
    assert all(entry.source.startswith("https://") for entry in CATALOG.entries)


def test_lookup_is_case_insensitive_and_ignores_variant_tags() -> None:
    exact = CATALOG.lookup("QWEN/qwen2.5-7b")
    assert exact is not None and (exact.entry.id, exact.matched_by) == ("Qwen/Qwen2.5-7B", "id")
    short = CATALOG.lookup("YOLOv8n")
    assert short is not None and (short.entry.id, short.matched_by) == ("ultralytics/yolov8n", "name")
    for variant in (
        "meta-llama/Llama-3.1-8B-Instruct",
        "bartowski/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
    ):
        found = CATALOG.lookup(variant)
        assert found is not None and found.entry.id == "meta-llama/Llama-3.1-8B", variant
        assert found.matched_by == "variant"
    instruct = CATALOG.lookup("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert instruct is not None and instruct.entry.active_params_b == 3.3


@pytest.mark.parametrize("name", ["unknown/model", "Llama-3.1", "gpt-oss", "", "instruct"])
def test_unknown_names_are_not_guessed(name: str) -> None:
    assert CATALOG.lookup(name) is None


def test_native_quantization_is_recorded() -> None:
    gpt_oss = CATALOG.lookup("gpt-oss-20b")
    assert gpt_oss is not None and gpt_oss.entry.quantization == "mxfp4"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "models"),
        ({"models": [{"names": ["x"]}]}, "without an id"),
        ({"models": [{"id": "a/b", "kind": "llm", "params_b": -1}]}, "params_b"),
        ({"models": [{"id": "a/b", "kind": "robot", "params_b": 1}]}, "kind"),
        (
            {"models": [{"id": "a/b", "kind": "llm", "params_b": 1}, {"id": "A/B", "kind": "llm", "params_b": 2}]},
            "names both",
        ),
    ],
)
def test_malformed_catalog_is_rejected(document: object, message: str) -> None:
    with pytest.raises(SizingError, match=message):
        parse_catalog(document)
