"""Sizing one InferenceServer: its spec in, what it needs per GPU out (pure).

This is where the engine models meet the API: weights are resolved (override, config.json,
catalog, name, default), the engine model turns them into a per-GPU budget the planner can
place (`preferred_mib`, and the `min_mib` floor it may shrink to). What the engine then does with
the budget it was given on a real GPU is fit/'s (`fit_on_gpu`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vram_operator.api.inference_server import EstimateSource, InferenceServerSpec
from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import ModelArchitecture, from_config
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.generic import estimate_generic, parse_quantity_mib
from vram_operator.sizing.llamacpp import (
    DEFAULT_MIN_CTX,
    DEFAULT_OVERHEAD_MIB,
    LlamaCppModel,
    LlamaCppSettings,
    estimate_llamacpp,
)
from vram_operator.sizing.pipeline import binding_stage_profile, layer_partition
from vram_operator.sizing.runner import pooling_requested
from vram_operator.sizing.weights import WeightsEstimate, resolve_weights

if TYPE_CHECKING:
    from vram_operator.sizing.measured import MeasuredRun

# Without an explicit maxNumSeqs, auto mode budgets KV for this many full-length requests at
# once: enough for a handful of concurrent users without claiming the whole GPU (vLLM's own
# default of 0.9 does that, and is what breaks co-tenancy).
DEFAULT_TARGET_CONCURRENCY = 4
# GPU size a budget is computed for before a GPU is chosen (an H100 80GB as the driver
# reports it); batch defaults of vLLM depend on it, and larger GPUs give the larger (safe) figure.
REFERENCE_GPU_MIB = 81_089.0
# llama.cpp without a layer shape: KV cache + compute buffer allowed as this share of the
# weights (a 4k-8k context of a GQA model is a few percent), and at least this much.
UNKNOWN_SHAPE_SHARE = 0.05
UNKNOWN_SHAPE_MIN_MIB = 512.0


@dataclass(frozen=True)
class ServerSizing:
    """What one server needs per GPU (per tensor-parallel rank), before a GPU is chosen."""

    engine: str
    preferred_mib: float
    min_mib: float
    source: EstimateSource
    weights: WeightsEstimate | None
    llamacpp_model: LlamaCppModel | None = None
    llamacpp_settings: LlamaCppSettings | None = None
    fixed_utilization: float | None = None
    # vLLM before 0.21: the CUDA graphs it captures beyond utilization x total (MiB per GPU), reserved too.
    beyond_share_mib: float = 0.0
    target_kv_tokens: int = 0
    is_llm: bool = False
    warnings: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    # Runs of the same model and settings the engine reported (sizing.measured), one per GPU product.
    measured: tuple[MeasuredRun, ...] = ()


def _override(arch: ModelArchitecture | None, spec: InferenceServerSpec) -> ModelArchitecture | None:
    given = spec.model.architecture if spec.model else None
    if given is None:
        return arch
    values: dict[str, Any] = {
        "num_layers": given.num_layers,
        "num_kv_heads": given.num_kv_heads,
        "head_dim": given.head_dim,
        "hidden_size": given.hidden_size,
        "intermediate_size": given.intermediate_size,
        "vocab_size": given.vocab_size,
        "params_b": given.params_b,
    }
    changes: dict[str, Any] = {key: value for key, value in values.items() if value is not None}
    if arch is not None:
        return dataclasses.replace(arch, **changes)
    required = ("num_layers", "num_kv_heads", "head_dim", "hidden_size", "vocab_size")
    missing = [key for key in required if values[key] is None]
    if missing:
        names = {"num_layers": "numLayers", "num_kv_heads": "numKVHeads", "head_dim": "headDim",
                 "hidden_size": "hiddenSize", "vocab_size": "vocabSize"}  # fmt: skip
        field = names[missing[0]]
        raise SizingError(
            f"architecture.{field} is required without a config.json", field=f"model.architecture.{field}"
        )
    hidden = int(changes["hidden_size"])
    head_dim = int(changes["head_dim"])
    return ModelArchitecture(
        model_type="override",
        num_layers=int(changes["num_layers"]),
        hidden_size=hidden,
        num_attention_heads=max(1, hidden // head_dim),
        num_kv_heads=int(changes["num_kv_heads"]),
        head_dim=head_dim,
        intermediate_size=int(changes.get("intermediate_size", 4 * hidden)),
        vocab_size=int(changes["vocab_size"]),
        params_b=given.params_b,
    )


def _weights(spec: InferenceServerSpec, config: Mapping[str, Any] | None, *, engine_dtype: bool) -> WeightsEstimate:
    model = spec.model
    arch = from_config(config) if config is not None else None
    arch = _override(arch, spec)
    return resolve_weights(
        weights_mib=model.weights_mib if model else None,
        architecture=arch,
        model_name=model.name if model else None,
        dtype=(model.dtype if model else "auto") if engine_dtype else None,
        quantization=model.quantization if model else None,
        pooling=pooling_requested(spec.args) if spec.engine == "vllm" else None,
    )


def size_server(
    spec: InferenceServerSpec, config: Mapping[str, Any] | None = None, *, gpu_total_mib: float = REFERENCE_GPU_MIB
) -> ServerSizing:
    """Size a server; `config` is its config.json (from the ConfigMap it names), if any."""
    if spec.engine == "generic":
        generic = estimate_generic(spec.vram_budget, spec.model.name if spec.model else None)
        floor = generic.total_mib
        if spec.vram_budget_min is not None:
            floor = parse_quantity_mib(spec.vram_budget_min, "vramBudgetMin")
            if floor > generic.total_mib:
                raise SizingError(
                    f"vramBudgetMin {spec.vram_budget_min} is larger than vramBudget {spec.vram_budget}",
                    field="vramBudgetMin",
                )
        return ServerSizing(
            engine="generic",
            preferred_mib=generic.total_mib,
            min_mib=floor,
            source=generic.source,
            weights=None,
            warnings=generic.warnings,
            reasons=(generic.reason,),
        )
    if spec.engine == "vllm":
        return _size_vllm(spec, config, gpu_total_mib)
    return _size_llamacpp(spec, config)


# vLLM's escape hatch for a max_model_len beyond the model's context.
ALLOW_LONG_MAX_MODEL_LEN = "VLLM_ALLOW_LONG_MAX_MODEL_LEN"


def _allows_long_max_model_len(spec: InferenceServerSpec) -> bool:
    return any(
        var.get("name") == ALLOW_LONG_MAX_MODEL_LEN and str(var.get("value", "")).strip().lower() in ("1", "true")
        for var in spec.env
    )


def _enforces_eager(args: Sequence[str]) -> bool:
    """`--enforce-eager` (or `--enforce_eager`) in the args: vLLM captures no CUDA graphs."""
    return any(arg.partition("=")[0].replace("_", "-") == "--enforce-eager" for arg in args)


def vllm_settings(spec: InferenceServerSpec) -> vllm.VllmSettings:
    return vllm.VllmSettings(
        engine_version=spec.engine_version or vllm.DEFAULT_ENGINE_VERSION,
        max_model_len=spec.max_model_len,
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        tensor_parallel_size=spec.tensor_parallel_size,
        kv_cache_dtype=spec.kv_cache_dtype,
        dtype=spec.model.dtype if spec.model else "auto",
        allow_long_max_model_len=_allows_long_max_model_len(spec),
        enforce_eager=_enforces_eager(spec.args),
    )


def _size_vllm(spec: InferenceServerSpec, config: Mapping[str, Any] | None, gpu_total_mib: float) -> ServerSizing:
    weights = _weights(spec, config, engine_dtype=True)
    arch = weights.architecture
    if arch is None:
        raise SizingError(
            "the KV cache depends on the architecture: give model.configMapRef (config.json), "
            "model.architecture, or a model name the catalog knows",
            field="model",
        )
    profile = _vllm_profile(spec, arch, weights, gpu_total_mib)
    one_request = profile.max_model_len
    concurrency = spec.max_num_seqs or DEFAULT_TARGET_CONCURRENCY
    target = one_request * min(concurrency, profile.max_num_seqs)
    floor = vllm.reservation_for_tokens(profile, one_request)
    preferred = max(floor, vllm.reservation_for_tokens(profile, target))
    manual = spec.gpu_memory_utilization or None
    reasons = (
        *weights.reasons,
        *_pipeline_reasons(spec, arch),
        f"vLLM {profile.engine_version}: weights {profile.weights_mib:.0f} MiB + activation "
        f"{profile.activation_mib:.0f} MiB + non-torch {profile.non_torch_mib:.0f} MiB{vllm.graphs_term(profile)} per "
        f"GPU; KV {profile.kv_bytes_per_token} B/token; one {one_request}-token request needs {floor:.0f} MiB, "
        f"{min(concurrency, profile.max_num_seqs)} concurrent need {preferred:.0f} MiB",
    )
    return ServerSizing(
        engine="vllm",
        preferred_mib=preferred,
        min_mib=floor,
        source=weights.source,
        weights=weights,
        fixed_utilization=manual,
        beyond_share_mib=profile.graphs_outside_mib,
        target_kv_tokens=target,
        is_llm=True,
        warnings=(*weights.warnings, *vllm.version_warnings(spec.engine_version)),
        reasons=reasons,
    )


def _pipeline_reasons(spec: InferenceServerSpec, arch: ModelArchitecture) -> tuple[str, ...]:
    stages = spec.pipeline_parallel_size
    if stages == 1:
        return ()
    split = "+".join(str(count) for count in layer_partition(arch.num_layers, stages))
    return (
        f"pipeline parallel: {stages} stages of {split} layers, each on {spec.tensor_parallel_size} GPU(s) "
        f"({spec.gpus_per_replica} GPUs on one node); the figures below are the binding stage's, every GPU "
        "of the server gets the same budget",
    )


def vllm_profile_on_gpu(
    sizing: ServerSizing, spec: InferenceServerSpec, gpu_total_mib: float, gpu_name: str = ""
) -> vllm.VllmProfile | None:
    """vLLM's start-up profile of a sized server on a given GPU (its batch defaults depend on the GPU)."""
    if sizing.engine != "vllm" or sizing.weights is None or sizing.weights.architecture is None:
        return None
    return _vllm_profile(spec, sizing.weights.architecture, sizing.weights, gpu_total_mib, gpu_name)


def _vllm_profile(
    spec: InferenceServerSpec,
    arch: ModelArchitecture,
    weights: WeightsEstimate,
    gpu_total_mib: float,
    gpu_name: str = "",
) -> vllm.VllmProfile:
    """vLLM's profile of the GPU that binds (with pipeline stages, the stage needing the most memory)."""
    return binding_stage_profile(
        arch,
        weights.total_bytes,
        vllm_settings(spec),
        gpu_total_mib,
        stages=spec.pipeline_parallel_size,
        sequences=spec.max_num_seqs or DEFAULT_TARGET_CONCURRENCY,
        gpu_name=gpu_name,
        source=weights.source,
        quantization=weights.quantization,
        exact_weights=bool(spec.model and spec.model.weights_mib is not None),
    )


def llamacpp_settings(spec: InferenceServerSpec) -> LlamaCppSettings:
    parallel = spec.max_num_seqs or 1
    cache = spec.kv_cache_dtype if spec.kv_cache_dtype in ("q8_0", "q4_0") else "f16"
    return LlamaCppSettings(
        n_ctx=spec.max_model_len * parallel if spec.max_model_len else None,
        parallel=parallel,
        cache_type_k=cache,
        cache_type_v=cache,
    )


def _size_llamacpp(spec: InferenceServerSpec, config: Mapping[str, Any] | None) -> ServerSizing:
    weights = _weights(spec, config, engine_dtype=False)
    if weights.gguf is not None:
        model = LlamaCppModel.from_gguf(weights.gguf)
    elif weights.architecture is not None:
        model = LlamaCppModel.from_architecture(weights.architecture, weights.total_bytes)
    else:
        return _size_llamacpp_by_weights(weights)
    settings = llamacpp_settings(spec)
    full = estimate_llamacpp(model, settings)
    # The floor keeps every layer on the GPU (moving layers to the CPU is a choice for the user,
    # not the planner) but may shrink the context when the user did not fix it.
    floor = full
    if settings.n_ctx is None:
        floor = estimate_llamacpp(model, dataclasses.replace(settings, n_ctx=min(full.n_ctx, DEFAULT_MIN_CTX)))
    return ServerSizing(
        engine="llamacpp",
        preferred_mib=full.total_mib,
        min_mib=min(full.total_mib, floor.total_mib),
        source=weights.source,
        weights=weights,
        llamacpp_model=model,
        llamacpp_settings=settings,
        is_llm=True,
        warnings=weights.warnings,
        reasons=(
            *weights.reasons,
            f"llama.cpp: weights {full.weights_mib:.0f} MiB + KV {full.kv_cache_mib:.0f} MiB "
            f"(-c {full.n_ctx}) + compute {full.compute_mib:.0f} MiB + overhead {full.overhead_mib:.0f} MiB",
        ),
    )


def _size_llamacpp_by_weights(weights: WeightsEstimate) -> ServerSizing:
    """Without the layer shape the KV cache and compute buffer cannot be computed: allow a share."""
    allowance = max(UNKNOWN_SHAPE_MIN_MIB, weights.total_mib * UNKNOWN_SHAPE_SHARE)
    total = weights.total_mib + DEFAULT_OVERHEAD_MIB + allowance
    warning = (
        f"llama.cpp KV cache and compute buffer not computed (layer shape unknown): allowed {allowance:.0f} MiB; "
        "give model.architecture or model.configMapRef for an exact figure"
    )
    return ServerSizing(
        engine="llamacpp",
        preferred_mib=total,
        min_mib=total,
        source=weights.source,
        weights=weights,
        is_llm=True,
        warnings=(*weights.warnings, warning),
        reasons=(
            *weights.reasons,
            f"llama.cpp: weights {weights.total_mib:.0f} MiB + overhead {DEFAULT_OVERHEAD_MIB:.0f} MiB "
            f"+ KV/compute allowance {allowance:.0f} MiB",
        ),
    )
