"""vLLM --gpu-memory-utilization on one GPU: chosen automatically, or a manual value checked.

vLLM takes `utilization x total` of the GPU and gives the KV cache what weights, activations and
non-torch memory leave of it; it refuses to start when the GPU's free memory is below that share
(the start-up check) or when the KV cache cannot hold one request of max_model_len (the KV floor).
Before 0.21 it then captures its CUDA graphs beyond that share: what is free must hold them too.
The numbers come from sizing/vllm.py's profile; this module decides and explains, line by line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from vram_operator.fit.errors import FitError
from vram_operator.sizing import vllm
from vram_operator.sizing.vllm import VllmProfile

Tier = Literal["conservative", "standard", "aggressive"]
# Extra head-room the conservative tier leaves, as a share of the GPU, on top of the margin.
CONSERVATIVE_HEADROOM = 0.05
# Auto never asks for more than this: vLLM itself warns above it, and the driver needs some room.
AUTO_MAX = 0.95
USUAL_RANGE = (0.5, 0.95)
MANUAL_RANGE = (0.05, 0.99)
MIB_PER_GIB = 1024.0


@dataclass(frozen=True)
class GpuRoom:
    """One GPU as the utilization choice sees it (MiB)."""

    label: str
    total_mib: float
    foreign_mib: float
    reserved_by_others_mib: float
    margin_mib: float
    foreign_detail: tuple[str, ...] = ()

    @property
    def free_at_start_mib(self) -> float:
        """Free memory when vLLM starts, if the others use all they reserved (the start-up check's input)."""
        return max(0.0, self.total_mib - self.foreign_mib - self.reserved_by_others_mib)

    @property
    def free_mib(self) -> float:
        """What this server may take: free at start less the safety margin."""
        return max(0.0, self.free_at_start_mib - self.margin_mib)

    def describe(self) -> str:
        foreign = f"foreign {self.foreign_mib:.0f}MiB"
        if self.foreign_detail:
            foreign += f" ({', '.join(self.foreign_detail)})"
        return (
            f"{self.label}: {foreign}, reserved by others {self.reserved_by_others_mib:.0f}MiB, margin "
            f"{self.margin_mib:.0f}MiB -> free {self.free_mib:.0f}MiB"
        )


@dataclass(frozen=True)
class UtilizationChoice:
    """The utilization for one server on one GPU, and why."""

    utilization: float
    mode: Literal["auto", "manual"]
    tier: Tier | None
    kv_tokens: int
    fits: bool
    reason: str
    explanation: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    min_utilization: float = 0.0


def _hundredths_down(value: float) -> float:
    return math.floor(value * 100 + 1e-9) / 100


def _model_line(profile: VllmProfile) -> str:
    gib = MIB_PER_GIB
    parts = (
        f"model needs weights {profile.weights_mib / gib:.1f}GiB + activation {profile.activation_mib / gib:.1f}"
        f" + non-torch {profile.non_torch_mib / gib:.1f}"
    )
    if profile.cuda_graph_subtracted:
        parts += f" + CUDA graphs {profile.cuda_graph_mib / MIB_PER_GIB:.1f}"
    parts += f" = {profile.non_kv_mib / MIB_PER_GIB:.1f}GiB before the KV cache"
    if profile.graphs_outside_mib:
        parts += f", + CUDA graphs {profile.graphs_outside_mib / gib:.1f}GiB beyond utilization x total"
    return parts


def _floor_line(profile: VllmProfile, room: GpuRoom, floor: float) -> str:
    request = vllm.request_kv_bytes(profile, profile.max_model_len) / vllm.GIB
    return (
        f"KV floor for one {profile.max_model_len}-token request {request:.2f}GiB -> min utilization {floor:.2f}"
        f" ({floor * room.total_mib:.0f}MiB)"
    )


def auto_utilization(
    profile: VllmProfile, room: GpuRoom, *, tier: Tier = "standard", target_kv_tokens: int | None = None
) -> UtilizationChoice:
    """The utilization that gives the server its KV target, within what the GPU really has free.

    The target defaults to max_num_seqs full-length requests (more KV than that is never used); it is
    cut to what is free. Tiers set the head-room left: conservative keeps 5% of the GPU beyond the
    margin, standard keeps the margin, aggressive may use the margin too. Refuses (fits=False) when
    even the KV floor (one max_model_len request) does not fit.
    """
    if target_kv_tokens is not None and target_kv_tokens < 0:
        raise FitError("target KV tokens must not be negative", field="targetKVTokens")
    total = room.total_mib
    target = target_kv_tokens if target_kv_tokens is not None else profile.max_num_seqs * profile.max_model_len
    floor = vllm.min_utilization(profile, total)
    wanted = vllm.min_utilization(profile, total, target)
    # What is free must hold the share and, before vLLM 0.21, the CUDA graphs captured beyond it.
    beyond = profile.graphs_outside_mib
    caps = {
        "conservative": (room.free_mib - beyond) / total - CONSERVATIVE_HEADROOM,
        "standard": (room.free_mib - beyond) / total,
        "aggressive": (room.free_at_start_mib - beyond) / total,
    }
    ceiling = min(AUTO_MAX, _hundredths_down(caps[tier]))
    hard_ceiling = min(AUTO_MAX, _hundredths_down(caps["aggressive"]))
    lines = [room.describe(), _model_line(profile), _floor_line(profile, room, floor)]
    lines.append(
        f"KV target {target} tokens ({target / profile.max_model_len:.1f} x {profile.max_model_len}) -> "
        f"utilization {wanted:.2f}; {tier} ceiling {ceiling:.2f}"
    )
    if floor > hard_ceiling:
        graphs = f" + CUDA graphs {beyond:.0f}MiB" if beyond else ""
        lines.append(
            f"refused: the KV floor needs {floor:.2f} x {total:.0f}MiB = {floor * total:.0f}MiB{graphs}, only "
            f"{room.free_at_start_mib:.0f}MiB is free"
        )
        return UtilizationChoice(floor, "auto", tier, 0, False, "KVFloorExceedsFree", tuple(lines), (), floor)
    chosen = min(wanted, max(ceiling, floor))
    warnings = []
    if chosen > ceiling:
        warnings.append(f"utilization {chosen:.2f} exceeds the {tier} ceiling {ceiling:.2f} to reach the KV floor")
    result = vllm.fit(profile, total, chosen, room.free_at_start_mib)
    met = "meets the target" if chosen >= wanted else "capped by free memory"
    lines.append(
        f"chosen {chosen:.2f} ({tier}, {met}): {result.kv_cache_tokens} KV tokens, "
        f"{result.max_concurrency:.1f}x concurrency at {profile.max_model_len} tokens"
    )
    return UtilizationChoice(
        chosen, "auto", tier, result.kv_cache_tokens, result.fits, result.reason, tuple(lines), tuple(warnings), floor
    )


def usual_range_warnings(utilization: float) -> tuple[str, ...]:
    """The warning a hand-set utilization outside the usual range gets, placed or not."""
    if USUAL_RANGE[0] <= utilization <= USUAL_RANGE[1]:
        return ()
    return (f"gpuMemoryUtilization {utilization} is outside the usual {USUAL_RANGE[0]}-{USUAL_RANGE[1]}",)


def manual_utilization(profile: VllmProfile, room: GpuRoom, utilization: float) -> UtilizationChoice:
    """Check a utilization set by hand: what vLLM will do with it on this GPU, and what to warn about."""
    low, high = MANUAL_RANGE
    if not low <= utilization <= high:
        raise FitError(f"gpuMemoryUtilization {utilization} must be within {low}-{high}", field="gpuMemoryUtilization")
    total = room.total_mib
    floor = vllm.min_utilization(profile, total)
    lines = [room.describe(), _model_line(profile), _floor_line(profile, room, floor)]
    warnings = list(usual_range_warnings(utilization))
    result = vllm.fit(profile, total, utilization, room.free_at_start_mib)
    requested = utilization * total
    holds = vllm.footprint_mib(profile, total, utilization)
    used_by_others = room.foreign_mib + room.reserved_by_others_mib
    setting = (
        f"vLLM at {utilization:.2f} on a {total / MIB_PER_GIB:.0f}GB GPU with "
        f"{used_by_others / MIB_PER_GIB:.1f}GB used by other services"
    )
    if result.fits:
        lines.append(f"{setting}: {result.kv_cache_tokens} KV tokens, {result.max_concurrency:.1f}x concurrency")
        if holds > room.free_mib:
            graphs = f" + CUDA graphs {holds - requested:.0f}MiB" if holds > requested else ""
            warnings.append(
                f"{utilization:.2f} x {total:.0f}MiB = {requested:.0f}MiB{graphs} leaves less than the "
                f"{room.margin_mib:.0f}MiB margin of the {room.free_at_start_mib:.0f}MiB free"
            )
    elif result.reason == "CudaGraphsOutOfMemory":
        lines.append(
            f"{setting}: asks for {requested:.0f}MiB and captures {holds - requested:.0f}MiB of CUDA graphs beyond "
            f"it, {holds:.0f}MiB in all, but only {room.free_at_start_mib:.0f}MiB is free at start-up: it passes "
            "vLLM's start-up check, then runs out of memory capturing the graphs"
        )
    elif result.reason == "StartupFreeMemory":
        lines.append(
            f"{setting}: asks for {requested:.0f}MiB but only {room.free_at_start_mib:.0f}MiB is free at start-up, "
            "so vLLM's start-up check fails"
        )
    else:
        lines.append(
            f"{setting}: {requested:.0f}MiB minus {profile.non_kv_mib:.0f}MiB for the model leaves "
            f"{max(0.0, requested - profile.non_kv_mib):.0f}MiB, which cannot fit its KV cache "
            f"(needs utilization >= {floor:.2f}) [{result.reason}]"
        )
    return UtilizationChoice(
        utilization,
        "manual",
        None,
        result.kv_cache_tokens if result.fits else 0,
        result.fits,
        result.reason,
        tuple(lines),
        tuple(warnings),
        floor,
    )
