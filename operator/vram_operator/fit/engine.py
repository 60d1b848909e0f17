"""The one engine-fit check, for the planner and the decision: a measured run where one vouches for
this GPU, else the model (vLLM's utilization chosen or checked, then the engine's fit)."""

from __future__ import annotations

import dataclasses

from vram_operator.api import InferenceServer
from vram_operator.fit.gpu_fit import GpuFit, fit_on_gpu
from vram_operator.fit.offer import GpuOffer
from vram_operator.fit.utilization import GpuRoom, UtilizationChoice, auto_utilization, manual_utilization
from vram_operator.sizing import vllm
from vram_operator.sizing.measured import MeasuredRun, measured_estimate, run_on
from vram_operator.sizing.server import ServerSizing, vllm_profile_on_gpu

# Budgets are written with one decimal: a budget this close to a run's is that run's.
MIB_ROUNDING = 0.1
# vLLM's start-up check of free memory, and the room for the CUDA graphs it captures beyond its share
# (before 0.21): a measured run cannot vouch for what is free on a GPU now.
FREE_MEMORY_REASONS = frozenset({"StartupFreeMemory", "CudaGraphsOutOfMemory"})


def engine_fit(
    server: InferenceServer, sizing: ServerSizing, budget_mib: float, gpu: GpuOffer, margin_mib: float
) -> tuple[GpuFit, UtilizationChoice | None]:
    """What the engine does with `budget_mib` on `gpu`: the one fit check, for the planner and the decision."""
    run = run_on(sizing.measured, gpu.name, gpu.total_mib)
    if run is not None and budget_mib >= run.budget_mib - MIB_ROUNDING:  # shrunk below it: the model decides
        return _measured_fit(server, sizing, run, budget_mib, gpu)
    choice = _utilization_choice(server, sizing, budget_mib, gpu, margin_mib)
    return _fit_at(server, sizing, budget_mib, gpu, choice.utilization if choice else None), choice


def _fit_at(
    server: InferenceServer, sizing: ServerSizing, budget_mib: float, gpu: GpuOffer, utilization: float | None
) -> GpuFit:
    """The engine's fit on `gpu` at `utilization`, with the free memory its start-up check will see."""
    return fit_on_gpu(
        sizing,
        server.spec,
        budget_mib,
        gpu.total_mib,
        gpu_free_mib=min(max(gpu.free_at_start_mib, 0.0), gpu.total_mib),
        gpu_name=gpu.name,
        utilization=utilization,
    )


def _measured_fit(
    server: InferenceServer, sizing: ServerSizing, run: MeasuredRun, budget_mib: float, gpu: GpuOffer
) -> tuple[GpuFit, UtilizationChoice | None]:
    """The engine on a GPU of the product it was measured on: what it used there, at the utilization it
    ran at. Only vLLM's checks of free memory still apply (they depend on this GPU now)."""
    fit = _fit_at(server, sizing, budget_mib, gpu, run.utilization)
    told = f"sized from {run.describe()}"
    if fit.reason not in FREE_MEMORY_REASONS:
        fit = dataclasses.replace(fit, fits=True, reason="Fits", message=told)
    fit = dataclasses.replace(fit, estimate=measured_estimate(run, fit.estimate))
    if run.utilization is None:
        return fit, None
    choice = UtilizationChoice(
        utilization=run.utilization,
        mode="auto" if sizing.fixed_utilization is None else "manual",
        tier=None,
        kv_tokens=run.kv_cache_tokens,
        fits=fit.fits,
        reason=fit.reason,
        explanation=(f"{run.utilization:.2f}: {told}, {run.kv_cache_tokens} KV tokens",),
    )
    return fit, choice


def _utilization_choice(
    server: InferenceServer, sizing: ServerSizing, budget_mib: float, gpu: GpuOffer, margin_mib: float
) -> UtilizationChoice | None:
    """vLLM's utilization on its (smallest) GPU, explained: auto within the budget, or the manual value checked."""
    profile = vllm_profile_on_gpu(sizing, server.spec, gpu.total_mib, gpu.name)
    if profile is None:
        return None
    room = GpuRoom(
        label=gpu.label,
        total_mib=gpu.total_mib,
        foreign_mib=gpu.foreign_mib,
        reserved_by_others_mib=gpu.reserved_by_others_mib,
        margin_mib=margin_mib,
    )
    if sizing.fixed_utilization is not None:
        return manual_utilization(profile, room, sizing.fixed_utilization)
    choice = auto_utilization(profile, room, target_kv_tokens=sizing.target_kv_tokens)
    # The ledger holds the planner's budget: never let vLLM take more than that (its graphs included).
    within_budget = vllm.utilization_within(profile, gpu.total_mib, budget_mib)
    if choice.utilization > within_budget >= choice.min_utilization:
        note = f"capped at {within_budget:.2f} by the {budget_mib:.0f}MiB budget reserved for it"
        return dataclasses.replace(choice, utilization=within_budget, explanation=(*choice.explanation, note))
    return choice
