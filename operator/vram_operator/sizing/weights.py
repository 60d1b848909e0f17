"""How many bytes of weights a model puts on the GPU, from the best source available.

Sources, most trusted first: an explicit ``weightsMiB``; the checkpoint's own safetensors
headers; a GGUF file; the config.json architecture (parameters x dtype/quantization); the
built-in catalog; the model's name. When none of them tells the size, that is an error naming the
field to set (a guessed size would be a silent wrong budget). The catalog is tried before the name
because a catalogued model's parameter count and native quantization (gpt-oss ships MXFP4)
are facts, while a name only rounds the count ("gpt-oss-20b" is 20.9B).

Every step that is skipped or taken leaves a line in ``reasons`` saying why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vram_operator.sizing.architecture import ModelArchitecture
from vram_operator.sizing.catalog import Catalog, CatalogEntry, load_catalog
from vram_operator.sizing.dtypes import (
    DTYPE_BYTES,
    normalize_quantization,
    resolve_dtype,
    weights_bytes_for_architecture,
    weights_bytes_from_params,
)
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.model_name import parse_model_name
from vram_operator.sizing.safetensors_header import (
    SafetensorsWeights,
    has_safetensors,
    read_safetensors_weights,
)

if TYPE_CHECKING:
    from vram_operator.sizing.gguf_metadata import GgufModel

WeightsSource = Literal["config", "safetensors", "gguf", "name", "catalog", "default"]

MIB = 1024 * 1024
# Largest override we accept: 16 TiB of weights is beyond any server.
MAX_WEIGHTS_MIB = 16 * 1024 * 1024

# Stored bytes per element of the float dtypes an engine casts to its --dtype at load.
_FLOAT_BYTES: Mapping[str, int] = {"F32": 4, "F16": 2, "BF16": 2}
_TORCH_DTYPE_OF = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# Buffers (position ids, masks) that sit next to the weights of an unquantized checkpoint.
_BUFFER_DTYPES = frozenset({"I64", "BOOL"})


@dataclass(frozen=True)
class WeightsEstimate:
    """Weight bytes of the whole model (all tensor-parallel ranks together)."""

    total_bytes: int
    source: WeightsSource
    params_b: float | None
    warnings: tuple[str, ...]
    # Why this source was used and why the ones above it were not.
    reasons: tuple[str, ...] = ()
    # Quantization in effect (spec vocabulary), None when unquantized.
    quantization: str | None = None
    # The richest architecture found on the way (config, GGUF or catalog), for the engines.
    architecture: ModelArchitecture | None = None
    # The GGUF model when the weights came from one (llama.cpp needs its per-layer sizes).
    gguf: GgufModel | None = None
    # Matching catalog entry, when there is one (generic engines use its footprint).
    catalog_entry: CatalogEntry | None = None

    @property
    def total_mib(self) -> float:
        return self.total_bytes / MIB


def resolve_weights(
    *,
    weights_mib: float | None = None,
    path: Path | None = None,
    architecture: ModelArchitecture | None = None,
    model_name: str | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
    catalog: Catalog | None = None,
    pooling: bool | None = None,
) -> WeightsEstimate:
    """Weights of a model from the most trusted source given.

    ``dtype`` is the engine's ``--dtype``: float tensors of a checkpoint are counted at that
    size (vLLM casts them at load; ``auto`` keeps 16-bit and runs float32 in bfloat16). Leave
    it None for engines that load tensors as stored (llama.cpp). ``quantization`` is the
    spec's value; unknown names raise SizingError. ``pooling`` (from the engine's arguments)
    overrides whether the model is served as a pooling model, which loads no LM head.
    """
    architecture = _served(architecture, pooling)
    requested_quant = normalize_quantization(quantization)
    catalog = catalog if catalog is not None else load_catalog()
    match = catalog.lookup(model_name) if model_name else None
    entry = match.entry if match is not None else None
    steps = _Steps()

    if weights_mib is not None:
        return _from_override(weights_mib, architecture=architecture, quant=requested_quant, entry=entry, steps=steps)
    steps.skip("weightsMiB not set")

    if path is not None:
        found = _from_files(
            path, architecture=architecture, dtype=dtype, requested_quant=requested_quant, entry=entry, steps=steps
        )
        if found is not None:
            return found
    else:
        steps.skip("no model path to read safetensors or GGUF headers from")

    if architecture is not None:
        quant = requested_quant or _known_quantization(architecture.quantization, steps)
        total = weights_bytes_for_architecture(architecture, dtype, quant)
        params_b = architecture.total_params() / 1e9
        steps.take(f"config.json architecture: {params_b:.2f}B parameters, {_precision(dtype, quant)}")
        return steps.result(
            total=total, source="config", params_b=params_b, quant=quant, architecture=architecture, entry=entry
        )
    steps.skip("no config.json architecture")

    if entry is not None and match is not None:
        name_quant = _name_quantization(model_name, steps)
        quant = requested_quant or name_quant or entry.quantization
        total = _catalog_bytes(entry, dtype, quant, pooling)
        steps.take(
            f"catalog entry {entry.id} (matched by {match.matched_by}): {entry.params_b:g}B parameters"
            f"{' (approximate)' if entry.approximate else ''}, {_precision(dtype, quant)}"
        )
        return steps.result(
            total=total,
            source="catalog",
            params_b=entry.params_b,
            quant=quant,
            architecture=_served(entry.architecture, pooling),
            entry=entry,
        )
    steps.skip(f"{model_name!r} is not in the catalog" if model_name else "no model name")

    if model_name:
        facts = parse_model_name(model_name)
        if facts.params_b is not None:
            quant = requested_quant or _name_quantization(model_name, steps)
            total = weights_bytes_from_params(facts.params_b, dtype, quant)
            steps.warn(f"weights estimated from the model name ({facts.derivation}); give a config.json")
            steps.take(f"model name {model_name!r}: {facts.params_b:g}B parameters, {_precision(dtype, quant)}")
            return steps.result(total=total, source="name", params_b=facts.params_b, quant=quant, architecture=None)
        steps.skip(f"no parameter count in the name {model_name!r}")

    named = f"the model {model_name!r}" if model_name else "a model without a name"
    raise SizingError(
        f"nothing tells the size of {named}: no config.json, not in the catalog, no parameter count in the name "
        "(like -7B); set model.weightsMiB, or give model.configMapRef (config.json)",
        field="model.weightsMiB",
    )


class _Steps:
    """Collects the reasoning and warnings of one resolution."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.warnings: list[str] = []

    def skip(self, why: str) -> None:
        self.reasons.append(f"skipped: {why}")

    def take(self, why: str) -> None:
        self.reasons.append(f"used: {why}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def result(
        self,
        *,
        total: int,
        source: WeightsSource,
        params_b: float | None,
        quant: str | None,
        architecture: ModelArchitecture | None,
        gguf: GgufModel | None = None,
        entry: CatalogEntry | None = None,
    ) -> WeightsEstimate:
        return WeightsEstimate(
            total_bytes=total,
            source=source,
            params_b=params_b,
            warnings=tuple(self.warnings),
            reasons=tuple(self.reasons),
            quantization=quant,
            architecture=architecture,
            gguf=gguf,
            catalog_entry=entry,
        )


def _from_override(
    weights_mib: float,
    *,
    architecture: ModelArchitecture | None,
    quant: str | None,
    entry: CatalogEntry | None,
    steps: _Steps,
) -> WeightsEstimate:
    if isinstance(weights_mib, bool) or not (0 < weights_mib <= MAX_WEIGHTS_MIB):
        raise SizingError(
            f"weightsMiB must be a positive number of MiB up to {MAX_WEIGHTS_MIB}, got {weights_mib!r}",
            field="weightsMiB",
        )
    steps.take(f"explicit weightsMiB {weights_mib:g}")
    if architecture is None and entry is not None:
        architecture = entry.architecture  # the size is overridden, the shape (KV cache) still comes from the catalog
    params_b = architecture.total_params() / 1e9 if architecture is not None else None
    # The override is user-given configuration, reported under the contract's "config".
    return steps.result(
        total=round(weights_mib * MIB),
        source="config",
        params_b=params_b,
        quant=quant,
        architecture=architecture,
        entry=entry,
    )


def _from_files(
    path: Path,
    *,
    architecture: ModelArchitecture | None,
    dtype: str | None,
    requested_quant: str | None,
    entry: CatalogEntry | None,
    steps: _Steps,
) -> WeightsEstimate | None:
    if has_safetensors(path):
        weights = read_safetensors_weights(path)
        steps.warnings.extend(weights.warnings)
        return _from_safetensors(
            weights,
            architecture=architecture,
            dtype=dtype,
            requested_quant=requested_quant,
            entry=entry,
            steps=steps,
        )
    steps.skip(f"no safetensors at {path}")
    # The gguf library (and numpy under it) is about 25 MiB of memory: imported for a GGUF file only.
    from vram_operator.sizing.gguf_metadata import find_gguf, read_gguf_model

    gguf_path = find_gguf(path)
    if gguf_path is None:
        steps.skip(f"no GGUF file at {path}")
        return None
    model = read_gguf_model(gguf_path)
    if requested_quant is not None and requested_quant != model.quantization:
        steps.warn(f"quantization {requested_quant} ignored: the GGUF file is {model.quantization or 'unlabelled'}")
    steps.take(
        f"GGUF {gguf_path.name}: {model.tensor_bytes} tensor bytes, {model.params / 1e9:.2f}B parameters"
        f"{', ' + model.file_type if model.file_type else ''}"
    )
    return steps.result(
        total=model.tensor_bytes,
        source="gguf",
        params_b=model.params / 1e9,
        quant=model.quantization,
        architecture=architecture or model.to_architecture(),
        gguf=model,
        entry=entry,
    )


def _from_safetensors(
    weights: SafetensorsWeights,
    *,
    architecture: ModelArchitecture | None,
    dtype: str | None,
    requested_quant: str | None,
    entry: CatalogEntry | None,
    steps: _Steps,
) -> WeightsEstimate:
    params_b = weights.params / 1e9 if weights.params is not None else None
    stored = set(weights.bytes_by_dtype)
    only_floats = bool(stored & set(_FLOAT_BYTES)) and stored <= set(_FLOAT_BYTES) | _BUFFER_DTYPES
    described = f"safetensors headers of {len(weights.files)} file(s): {weights.total_bytes} bytes"
    if requested_quant is not None and only_floats and params_b is not None:
        # An unquantized checkpoint quantized at load (e.g. vLLM --quantization fp8).
        total = (
            weights_bytes_for_architecture(architecture, dtype, requested_quant)
            if architecture is not None
            else weights_bytes_from_params(params_b, dtype, requested_quant)
        )
        steps.take(f"{described}; unquantized, {requested_quant} applied at load")
        return steps.result(
            total=total,
            source="safetensors",
            params_b=params_b,
            quant=requested_quant,
            architecture=architecture,
            entry=entry,
        )
    total = weights.total_bytes
    if dtype is not None and only_floats:
        total = _cast_floats(weights.bytes_by_dtype, dtype, architecture)
        target = _target_dtype(weights.bytes_by_dtype, dtype, architecture)
        steps.take(f"{described}; float tensors counted as {target}")
    else:
        steps.take(described)
    declared = requested_quant or (architecture.quantization if architecture is not None else None)
    return steps.result(
        total=total,
        source="safetensors",
        params_b=params_b,
        quant=_known_quantization(declared, steps),
        architecture=architecture,
        entry=entry,
    )


def _target_dtype(bytes_by_dtype: Mapping[str, int], dtype: str, architecture: ModelArchitecture | None) -> str:
    floats = [name for name in bytes_by_dtype if name in _FLOAT_BYTES]
    stored = max(floats, key=lambda name: bytes_by_dtype[name])
    checkpoint = architecture.torch_dtype if architecture and architecture.torch_dtype else _TORCH_DTYPE_OF[stored]
    return resolve_dtype(dtype, checkpoint)


def _cast_floats(bytes_by_dtype: Mapping[str, int], dtype: str, architecture: ModelArchitecture | None) -> int:
    target = DTYPE_BYTES[_target_dtype(bytes_by_dtype, dtype, architecture)]
    return sum(
        stored // _FLOAT_BYTES[name] * target if name in _FLOAT_BYTES else stored
        for name, stored in bytes_by_dtype.items()
    )


def _served(arch: ModelArchitecture | None, pooling: bool | None) -> ModelArchitecture | None:
    """The architecture as the engine loads it: without the LM head when served as a pooling model."""
    if arch is None or pooling is None:
        return arch
    return dataclasses.replace(arch, holds_lm_head=not pooling)


def _catalog_bytes(entry: CatalogEntry, dtype: str | None, quant: str | None, pooling: bool | None = None) -> int:
    arch = entry.architecture
    if arch is None:
        return weights_bytes_from_params(entry.params_b, dtype, quant)
    counted = arch.param_breakdown().total
    # Parameters the shapes do not describe (a vision tower) stay in the model dtype.
    outside = max(0.0, entry.params_b - counted / 1e9)
    served = _served(arch, pooling) or arch
    return weights_bytes_for_architecture(served, dtype, quant) + weights_bytes_from_params(
        outside, resolve_dtype(dtype, arch.torch_dtype), None
    )


def _name_quantization(model_name: str | None, steps: _Steps) -> str | None:
    hint = parse_model_name(model_name).quantization if model_name else None
    if hint is None:
        return None
    return _known_quantization(hint.spec_name, steps, f"the name says {hint.label}")


def _known_quantization(name: str | None, steps: _Steps, origin: str = "the checkpoint declares") -> str | None:
    """A quantization read from a name or config; unknown ones are reported, not fatal."""
    try:
        return normalize_quantization(name)
    except SizingError:
        steps.warn(f"{origin} {name!r}, which sizing does not know; counted as unquantized")
        return None


def _precision(dtype: str | None, quant: str | None) -> str:
    return quant if quant is not None else resolve_dtype(dtype, None)
