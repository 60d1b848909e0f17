"""Auto and manual vLLM utilization on one GPU, on the sizing package's memory model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.fit.errors import FitError
from vram_operator.fit.utilization import GpuRoom, auto_utilization, manual_utilization
from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import from_config
from vram_operator.sizing.dtypes import weights_bytes_for_architecture

CONFIGS = Path(__file__).resolve().parents[2] / "fixtures" / "model-configs"
A5500_MIB = 24564.0


def _profile(max_model_len: int = 8192, gpu_mib: float = A5500_MIB) -> vllm.VllmProfile:
    arch = from_config(json.loads((CONFIGS / "meta-llama__Llama-3.1-8B-Instruct.json").read_text()))
    settings_ = vllm.VllmSettings(max_model_len=max_model_len)
    weights = weights_bytes_for_architecture(arch, settings_.dtype, None)
    return vllm.profile(arch, vllm.weights_per_rank(weights, arch, 1), settings_, gpu_mib)


def _room(foreign: float = 0, others: float = 0, total: float = A5500_MIB, margin: float = 256) -> GpuRoom:
    return GpuRoom(
        label=f"GPU 0 NVIDIA RTX A5500 {total:.0f}MiB",
        total_mib=total,
        foreign_mib=foreign,
        reserved_by_others_mib=others,
        margin_mib=margin,
    )


def test_auto_stays_within_free_memory_and_above_the_kv_floor() -> None:
    profile = _profile()
    room = _room(foreign=1200, others=1850)
    choice = auto_utilization(profile, room)
    assert choice.fits and choice.mode == "auto" and choice.tier == "standard"
    # vLLM 0.19 captures its CUDA graphs beyond utilization x total: the free memory holds both.
    assert profile.graphs_outside_mib > 0
    assert choice.utilization * A5500_MIB + profile.graphs_outside_mib <= room.free_mib
    assert choice.utilization >= vllm.min_utilization(profile, A5500_MIB)
    assert choice.kv_tokens == vllm.fit(profile, A5500_MIB, choice.utilization, room.free_at_start_mib).kv_cache_tokens
    text = "\n".join(choice.explanation)
    for part in ("foreign 1200MiB", "reserved by others 1850MiB", "margin 256MiB", "weights", "KV floor", "chosen"):
        assert part in text


@pytest.mark.parametrize("extra", [0.0, -1.0])
def test_auto_leaves_the_graphs_their_room_at_the_boundary(extra: float) -> None:
    # Free memory for exactly 0.80 of the GPU and the graphs: 0.80; a MiB less: 0.79.
    profile = _profile()
    room = _room(foreign=A5500_MIB - 256 - (0.80 * A5500_MIB + profile.graphs_outside_mib) - extra)
    assert auto_utilization(profile, room).utilization == (0.80 if extra == 0 else 0.79)


def test_auto_meets_a_small_target_without_taking_everything() -> None:
    profile = _profile()
    one_request = auto_utilization(profile, _room(), target_kv_tokens=8192)
    assert one_request.utilization == vllm.min_utilization(profile, A5500_MIB, 8192)
    assert one_request.utilization < auto_utilization(profile, _room()).utilization
    assert "meets the target" in one_request.explanation[-1]


def test_tiers_leave_more_or_less_headroom() -> None:
    profile = _profile()
    values = [
        auto_utilization(profile, _room(foreign=2000), tier=t).utilization
        for t in ("conservative", "standard", "aggressive")
    ]
    assert values == sorted(values) and values[0] < values[2]


def test_auto_refuses_when_the_kv_floor_does_not_fit() -> None:
    choice = auto_utilization(_profile(), _room(foreign=7800, others=4000, total=12288))
    assert not choice.fits and choice.reason == "KVFloorExceedsFree"
    assert "refused" in choice.explanation[-1]


def test_manual_below_the_kv_floor_predicts_the_failure() -> None:
    choice = manual_utilization(_profile(), _room(total=12288, foreign=6000), 0.40)
    assert not choice.fits and choice.mode == "manual"
    assert "cannot fit its KV cache" in choice.explanation[-1]
    assert "0.40 on a 12GB GPU with 5.9GB used by other services" in choice.explanation[-1]
    assert any("outside the usual" in w for w in choice.warnings)


def test_manual_above_free_memory_fails_the_startup_check() -> None:
    choice = manual_utilization(_profile(), _room(foreign=6000), 0.9)
    assert not choice.fits and choice.reason == "StartupFreeMemory"
    assert "start-up check" in choice.explanation[-1]


def test_manual_that_fits_reports_tokens_and_margin_warning() -> None:
    profile = _profile()
    ok = manual_utilization(profile, _room(), 0.8)
    assert ok.fits and ok.kv_tokens > 8192 and not ok.warnings
    # 0.96 x 24564 = 23581 MiB + 873 MiB of CUDA graphs = 24454 MiB: within the GPU, not its margin.
    tight = manual_utilization(profile, _room(), 0.96)
    assert tight.fits and any("margin" in w and "CUDA graphs 873MiB" in w for w in tight.warnings)


def test_manual_whose_graphs_do_not_fit_beyond_its_share_is_refused() -> None:
    # 0.99 x 24564 = 24318 MiB passes vLLM's start-up check on an empty GPU; the 873 MiB of CUDA graphs
    # vLLM 0.19 captures after it do not fit. Before, the check stopped at the share: 0.99 "fitted".
    choice = manual_utilization(_profile(), _room(), 0.99)
    assert (choice.fits, choice.reason, choice.kv_tokens) == (False, "CudaGraphsOutOfMemory", 0)
    assert "25191MiB in all, but only 24564MiB is free" in choice.explanation[-1]
    assert "out of memory capturing the graphs" in choice.explanation[-1]


def test_manual_out_of_range_is_a_field_error() -> None:
    with pytest.raises(FitError) as error:
        manual_utilization(_profile(), _room(), 1.2)
    assert error.value.field == "gpuMemoryUtilization"


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 12000), st.floats(0, 8000), st.sampled_from(("conservative", "standard", "aggressive")))
def test_auto_never_asks_for_more_than_is_free_when_it_fits(foreign: float, others: float, tier: str) -> None:
    room = _room(foreign=foreign, others=others)
    choice = auto_utilization(_profile(), room, tier=tier)  # type: ignore[arg-type]
    if choice.fits:
        graphs = _profile().graphs_outside_mib
        assert choice.utilization * A5500_MIB + graphs <= room.free_at_start_mib + 1e-6
        assert choice.utilization >= choice.min_utilization
    else:
        assert choice.reason != "Fits"
