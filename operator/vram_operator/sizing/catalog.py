"""The built-in catalog of common models (catalog.yaml, shipped as package data).

Lookup is case-insensitive by Hugging Face id or any listed short name. A name that
matches neither is retried without its organisation prefix and without trailing variant
tags (``-Instruct``, ``-it``, ``-AWQ``, ``-GGUF``, ``.Q4_K_M``...), which do not change the
parameter count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.errors import SizingError

KINDS = frozenset({"llm", "vision", "audio", "embedding"})

# Trailing tags that name a variant of the same weights (chat tuning, packaging, quantization).
_VARIANT_TAG = re.compile(
    r"[-_.](instruct|it|chat|hf|base|pt|gguf|awq|gptq|int4|int8|fp8|bnb|4bit|8bit|mlx|"
    r"q[1-8]_k(_[sml]|_xl)?|q[1-8]_[01]|iq[1-4]_(xxs|xs|s|m|nl)|v\d+(\.\d+)?|\d{4})$"
)


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogued model."""

    id: str
    names: tuple[str, ...]
    kind: str
    params_b: float
    active_params_b: float | None
    architecture: ModelArchitecture | None
    # Quantization the published checkpoint ships in (gpt-oss: mxfp4), None when unquantized.
    quantization: str | None
    # Whole-process footprint of a generic server at batch 1 (MiB); None for LLMs.
    typical_vram_mib: int | None
    approximate: bool
    source: str
    note: str | None


@dataclass(frozen=True)
class CatalogMatch:
    entry: CatalogEntry
    # "id", "name" or "variant" (matched after dropping the prefix or variant tags).
    matched_by: str


class Catalog:
    """Entries indexed by their lower-cased ids and names."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self.entries = tuple(entries)
        self._by_key: dict[str, CatalogEntry] = {}
        for entry in entries:
            for key in (entry.id, *entry.names):
                lowered = key.lower()
                other = self._by_key.get(lowered)
                if other is not None and other is not entry:
                    raise SizingError(f"catalog: {key!r} names both {other.id} and {entry.id}", field="catalog")
                self._by_key[lowered] = entry

    def lookup(self, name: str) -> CatalogMatch | None:
        """The entry a model name refers to, or None."""
        key = name.strip().lower()
        exact = self._by_key.get(key)
        if exact is not None:
            return CatalogMatch(exact, "id" if exact.id.lower() == key else "name")
        short = _drop_extension(key.rsplit("/", 1)[-1])
        while True:
            found = self._by_key.get(short)
            if found is not None:
                return CatalogMatch(found, "variant")
            stripped = _VARIANT_TAG.sub("", short)
            if stripped == short or not stripped:
                return None
            short = stripped


@cache
def load_catalog() -> Catalog:
    """The built-in catalog (parsed once)."""
    text = resources.files("vram_operator.sizing").joinpath("catalog.yaml").read_text(encoding="utf-8")
    return parse_catalog(yaml.safe_load(text))


def parse_catalog(document: Any) -> Catalog:
    """Build a catalog from the parsed YAML document; SizingError on a malformed entry."""
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise SizingError("catalog: expected a top-level 'models' list", field="catalog")
    return Catalog([_entry(raw) for raw in models])


def _entry(raw: Any) -> CatalogEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise SizingError(f"catalog: entry without an id: {raw!r}", field="catalog")
    model_id: str = raw["id"]
    params = raw.get("params_b")
    if not isinstance(params, int | float) or isinstance(params, bool) or params <= 0:
        raise SizingError(f"catalog: {model_id}: params_b must be a positive number", field="catalog")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise SizingError(f"catalog: {model_id}: kind must be one of {sorted(KINDS)}", field="catalog")
    active = raw.get("active_params_b")
    footprint = raw.get("typical_vram_mib")
    config = raw.get("config")
    architecture = None
    if config is not None:
        architecture = replace(from_config(config), params_b=float(params))
    return CatalogEntry(
        id=model_id,
        names=tuple(str(name) for name in raw.get("names", [])),
        kind=kind,
        params_b=float(params),
        active_params_b=float(active) if isinstance(active, int | float) else None,
        architecture=architecture,
        quantization=raw.get("quantization"),
        typical_vram_mib=int(footprint) if isinstance(footprint, int | float) else None,
        approximate=bool(raw.get("approximate", False)),
        source=str(raw.get("source", "")),
        note=raw.get("note"),
    )


def _drop_extension(name: str) -> str:
    for extension in (".gguf", ".pt", ".onnx", ".safetensors"):
        if name.endswith(extension):
            return name[: -len(extension)]
    return name
