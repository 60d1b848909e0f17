from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.controller.failures import Failure, FailureKind, classify, correct

KV_LOG = (
    "INFO ... model weights took 14.99GiB\n"
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
    "when initializing the engine.\n"
)
STARTUP_LOG = (
    "ValueError: Free memory on device (19.5/23.99 GiB) on startup is less than desired GPU memory "
    "utilization (0.9, 21.59 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
)


def test_classifies_kv_cache_failure() -> None:
    failure = classify(KV_LOG)
    assert failure is not None
    assert failure.kind is FailureKind.KV_CACHE_NO_MEMORY
    assert failure.message.startswith("No available memory for the cache blocks")


def test_classifies_startup_failure_with_numbers() -> None:
    failure = classify(STARTUP_LOG)
    assert failure is not None
    assert failure.kind is FailureKind.STARTUP_FREE_MEMORY
    assert failure.free_mib == 19.5 * 1024
    assert failure.total_mib == 23.99 * 1024


def test_classifies_startup_failure_with_device_name() -> None:
    text = STARTUP_LOG.replace("device (", "device cuda:0 (")
    failure = classify(text)
    assert failure is not None and failure.free_mib == 19.5 * 1024


def test_other_crashes_are_not_memory_failures() -> None:
    assert classify("Traceback ... ImportError: no module named vllm") is None


def test_kv_failure_raises_utilization_within_headroom() -> None:
    failure = Failure(FailureKind.KV_CACHE_NO_MEMORY, "x")
    fix = correct(
        failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=24000, headroom_mib=24000, margin_mib=0
    )
    assert fix.action == "adjust" and fix.utilization == 0.55
    tight = correct(
        failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=24000, headroom_mib=12000, margin_mib=0
    )
    assert tight.action == "replace"


def test_startup_failure_lowers_utilization_to_free_memory() -> None:
    failure = classify(STARTUP_LOG)
    assert failure is not None
    fix = correct(
        failure, attempts=1, max_attempts=3, utilization=0.9, total_mib=24565, headroom_mib=24565, margin_mib=256
    )
    assert fix.action == "adjust"
    assert fix.utilization is not None
    assert fix.utilization * 23.99 * 1024 <= 19.5 * 1024 - 256


def test_gives_up_after_max_attempts() -> None:
    failure = Failure(FailureKind.KV_CACHE_NO_MEMORY, "x")
    fix = correct(failure, attempts=3, max_attempts=3, utilization=0.5, total_mib=1, headroom_mib=1, margin_mib=0)
    assert fix.action == "give_up"


@given(
    kind=st.sampled_from(list(FailureKind)),
    utilization=st.floats(min_value=0.05, max_value=0.99),
    headroom=st.floats(min_value=0, max_value=81559),
    attempts=st.integers(min_value=0, max_value=5),
)
def test_adjusted_utilization_always_fits_headroom(
    kind: FailureKind, utilization: float, headroom: float, attempts: int
) -> None:
    fix = correct(
        Failure(kind, "x"),
        attempts=attempts,
        max_attempts=3,
        utilization=utilization,
        total_mib=81559,
        headroom_mib=headroom,
        margin_mib=512,
    )
    if attempts >= 3:
        assert fix.action == "give_up"
    if fix.action == "adjust":
        assert fix.utilization is not None
        assert fix.utilization * 81559 <= headroom - 512 + 1e-6
        assert fix.utilization != utilization


MAX_MODEL_LEN_LOG = (
    "(EngineCore_DP0 pid=215) ValueError: To serve at least one request with the model's max seq len (4096), "
    "(0.58 GiB KV cache is needed, which is larger than the available KV cache memory (0.47 GiB). Based on the "
    "available memory, the estimated maximum model length is 3280. Try increasing `gpu_memory_utilization` or "
    "decreasing `max_model_len` when initializing the engine.\n"
)


def test_classifies_kv_cache_smaller_than_one_request() -> None:
    failure = classify(MAX_MODEL_LEN_LOG)
    assert failure is not None
    assert failure.kind is FailureKind.KV_CACHE_TOO_SMALL
    assert failure.kind.value == "MaxModelLenTooLarge"
    assert failure.message.startswith("To serve at least one request with the model's max seq len (4096)")
    assert failure.missing_mib == pytest.approx((0.58 - 0.47) * 1024)


def test_classifies_the_older_models_s_spelling() -> None:
    failure = classify(MAX_MODEL_LEN_LOG.replace("model's", "models's"))
    assert failure is not None and failure.kind is FailureKind.KV_CACHE_TOO_SMALL


def test_kv_cache_too_small_raises_utilization_by_what_it_lacks() -> None:
    failure = classify(MAX_MODEL_LEN_LOG)
    assert failure is not None
    # 0.11 GiB short on a 1 GiB GPU: 0.11 of it, more than the 0.05 step.
    fix = correct(failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=1024, headroom_mib=1024, margin_mib=0)
    assert fix.action == "adjust" and fix.utilization == 0.61
    # On a large GPU what it lacks is under the step: the step.
    fix = correct(
        failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=81920, headroom_mib=81920, margin_mib=0
    )
    assert fix.action == "adjust" and fix.utilization == 0.55
    # Less room than it lacks: as much as there is; no room above: re-place.
    fix = correct(failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=1024, headroom_mib=600, margin_mib=0)
    assert fix.action == "adjust" and fix.utilization == 0.58
    fix = correct(failure, attempts=0, max_attempts=3, utilization=0.5, total_mib=1024, headroom_mib=512, margin_mib=0)
    assert fix.action == "replace"


@given(
    kind=st.sampled_from(list(FailureKind)),
    utilization=st.floats(min_value=0.05, max_value=0.99),
    headroom=st.floats(min_value=0, max_value=24564),
    graphs=st.floats(min_value=0, max_value=2048),
)
def test_an_adjusted_utilization_leaves_room_for_the_cuda_graphs_beyond_it(
    kind: FailureKind, utilization: float, headroom: float, graphs: float
) -> None:
    # vLLM before 0.21 captures its CUDA graphs after utilization x total: the new value and the graphs
    # must both fit the headroom (and the free memory vLLM saw) less the margin.
    failure = Failure(kind, "x", free_mib=headroom, total_mib=24564)
    fix = correct(
        failure,
        attempts=0,
        max_attempts=3,
        utilization=utilization,
        total_mib=24564,
        headroom_mib=headroom,
        margin_mib=256,
        beyond_share_mib=graphs,
    )
    if fix.action == "adjust":
        assert fix.utilization is not None
        assert fix.utilization * 24564 + graphs <= headroom - 256 + 1e-6


def test_the_startup_correction_subtracts_the_graphs_from_the_free_memory() -> None:
    failure = classify(STARTUP_LOG)  # 19.5 GiB free of 23.99
    assert failure is not None
    common = {"attempts": 1, "max_attempts": 3, "utilization": 0.9, "total_mib": 24565, "headroom_mib": 24565}
    without = correct(failure, margin_mib=256, **common)  # type: ignore[arg-type]
    with_graphs = correct(failure, margin_mib=256, beyond_share_mib=637.5, **common)  # type: ignore[arg-type]
    # (19968 - 256) / 24566 = 0.80; with Qwen2.5-0.5B's 637.5 MiB of graphs (19968 - 256 - 637.5) / 24566 = 0.77.
    assert (without.utilization, with_graphs.utilization) == (0.80, 0.77)
