"""What an engine does with the budget it got on one GPU: vLLM's utilization and KV cache,
llama.cpp's layers and context, a generic server's whole-process budget."""

from __future__ import annotations

from dataclasses import dataclass

from vram_operator.api.inference_server import EstimateStatus, InferenceServerSpec
from vram_operator.sizing import vllm
from vram_operator.sizing.llamacpp import fit_llamacpp
from vram_operator.sizing.server import ServerSizing, vllm_profile_on_gpu


@dataclass(frozen=True)
class GpuFit:
    """What the engine does with the budget it got on one GPU."""

    budget_mib: float
    utilization: float | None
    estimate: EstimateStatus
    fits: bool
    reason: str
    message: str
    engine_args: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # llama.cpp: what fitting chose (layers on the GPU, total context, slots).
    n_gpu_layers: int | None = None
    context_length: int | None = None
    parallel: int | None = None


def fit_on_gpu(
    sizing: ServerSizing,
    spec: InferenceServerSpec,
    budget_mib: float,
    gpu_total_mib: float,
    *,
    gpu_free_mib: float | None = None,
    gpu_name: str = "",
    utilization: float | None = None,
) -> GpuFit:
    """What the engine does with `budget_mib` on a GPU of `gpu_total_mib` (free at start: `gpu_free_mib`).

    vLLM runs at `utilization` when given, else at its manual value, else at the largest share of the
    GPU (in hundredths) that the budget holds with the CUDA graphs vLLM captures beyond it before 0.21
    (vLLM must never take more than the budget the ledger holds for it).
    When that is no utilization at all (under 0.01 of the GPU, or the model needs more than the whole
    GPU), vLLM cannot start there: InsufficientMemory with the numbers, `utilization` None.
    """
    profile = vllm_profile_on_gpu(sizing, spec, gpu_total_mib, gpu_name)
    if profile is not None:
        if utilization is None:
            utilization = sizing.fixed_utilization or vllm.utilization_within(profile, gpu_total_mib, budget_mib)
        if not 0 < utilization <= 1:
            return _vllm_without_room(sizing, profile, budget_mib, gpu_total_mib, gpu_name)
        return _fit_vllm(sizing, profile, budget_mib, gpu_total_mib, utilization=utilization, gpu_free_mib=gpu_free_mib)
    if sizing.engine == "llamacpp" and sizing.llamacpp_model is not None:
        fit = fit_llamacpp(sizing.llamacpp_model, budget_mib, sizing.llamacpp_settings)
        est = fit.estimate
        estimate = EstimateStatus(
            weights_mib=round(est.weights_mib, 1),
            activation_mib=round(est.compute_mib, 1),
            overhead_mib=round(est.overhead_mib, 1),
            kv_cache_mib=round(est.kv_cache_mib, 1),
            total_mib=round(est.total_mib, 1),
            kv_bytes_per_token=est.kv_bytes_per_token,
            kv_cache_tokens=est.kv_cells,
            max_concurrency=float(sizing.llamacpp_settings.parallel if sizing.llamacpp_settings else 1),
            source=sizing.source,
        )
        return GpuFit(
            budget_mib=budget_mib,
            utilization=None,
            estimate=estimate,
            fits=fit.fits,
            reason="Fits" if fit.fits else "InsufficientMemory",
            message=fit.reason,
            engine_args=fit.args,
            warnings=fit.warnings,
            n_gpu_layers=est.n_gpu_layers,
            context_length=est.n_ctx,
            parallel=sizing.llamacpp_settings.parallel if sizing.llamacpp_settings else None,
        )
    weights_mib = sizing.weights.total_mib if sizing.weights else 0.0
    estimate = EstimateStatus(weights_mib=round(weights_mib, 1), total_mib=round(budget_mib, 1), source=sizing.source)
    fits = budget_mib >= sizing.min_mib
    return GpuFit(
        budget_mib=budget_mib,
        utilization=None,
        estimate=estimate,
        fits=fits,
        reason="Fits" if fits else "InsufficientMemory",
        message=f"whole-process budget {budget_mib:.0f} MiB",
    )


def _vllm_without_room(
    sizing: ServerSizing, profile: vllm.VllmProfile, budget_mib: float, gpu_total_mib: float, gpu_name: str
) -> GpuFit:
    """vLLM on a GPU where no utilization lets it start: what it needs per GPU against what it may take."""
    need = vllm.reservation_for_tokens(profile, 0)
    kv = vllm.memory_for_tokens(profile, 0) - profile.non_kv_mib
    room = min(budget_mib, gpu_total_mib)
    gpu = f"{gpu_name + ' ' if gpu_name else ''}{gpu_total_mib:.0f}MiB GPU"
    message = (
        f"vLLM needs {need:.0f} MiB per GPU (weights {profile.weights_mib:.0f} + activation "
        f"{profile.activation_mib:.0f} + non-torch {profile.non_torch_mib:.0f} MiB{vllm.graphs_term(profile)} + KV "
        f"{kv:.0f} MiB for one {profile.max_model_len}-token request); it may take {max(room, 0.0):.0f} MiB of the "
        f"{gpu}"
    )
    overhead = profile.non_torch_mib + profile.cuda_graph_mib
    estimate = EstimateStatus(
        weights_mib=round(profile.weights_mib, 1),
        activation_mib=round(profile.activation_mib, 1),
        overhead_mib=round(overhead, 1),
        kv_cache_mib=0.0,
        total_mib=round(need, 1),
        kv_bytes_per_token=profile.kv_bytes_per_token,
        kv_cache_tokens=0,
        max_concurrency=0.0,
        min_utilization=vllm.min_utilization(profile, gpu_total_mib),
        source=sizing.source,
    )
    return GpuFit(
        budget_mib=budget_mib,
        utilization=None,
        estimate=estimate,
        fits=False,
        reason="InsufficientMemory",
        message=message,
    )


def _fit_vllm(
    sizing: ServerSizing,
    profile: vllm.VllmProfile,
    budget_mib: float,
    gpu_total_mib: float,
    *,
    utilization: float,
    gpu_free_mib: float | None,
) -> GpuFit:
    fit = vllm.fit(profile, gpu_total_mib, utilization, gpu_free_mib)
    # Overhead: non-torch and the CUDA graphs, within the utilization share or beyond it; the total is
    # what vLLM holds on the GPU (the parts add up to it).
    estimate = EstimateStatus(
        weights_mib=round(fit.weights_mib, 1),
        activation_mib=round(fit.activation_mib, 1),
        overhead_mib=round(fit.non_torch_mib + fit.cuda_graph_mib, 1),
        kv_cache_mib=round(max(fit.kv_cache_mib, 0.0), 1),
        total_mib=round(vllm.footprint_mib(profile, gpu_total_mib, utilization), 1),
        kv_bytes_per_token=fit.kv_bytes_per_token,
        kv_cache_tokens=fit.kv_cache_tokens,
        max_concurrency=round(max(fit.max_concurrency, 0.0), 2),
        min_utilization=fit.min_utilization,
        source=sizing.source,
    )
    return GpuFit(
        budget_mib=budget_mib,
        utilization=utilization,
        estimate=estimate,
        fits=fit.fits,
        reason=fit.reason,
        message=fit.message,
        engine_args=("--gpu-memory-utilization", f"{utilization:.2f}"),
    )
