"""The twin's engines print the start-up lines of the real ones: the operator reads back what they did."""

from __future__ import annotations

import pytest
from test_simulate_engines import A5500, EXACT, gpu, llamacpp, vllm_launch, vllm_spec

from vram_operator.simulate.engines import Perturbation, play
from vram_operator.sizing import vllm
from vram_operator.sizing.engine_report import read_engine_log
from vram_operator.sizing.server import size_server, vllm_profile_on_gpu


def fit_of(utilization: float) -> vllm.VllmFit:
    """What the sizing model says vLLM does at this utilization (the twin without error does exactly that)."""
    profile = vllm_profile_on_gpu(size_server(vllm_spec()), vllm_spec(), A5500, "NVIDIA RTX A5500")
    assert profile is not None
    return vllm.fit(profile, A5500, utilization, A5500)


@pytest.mark.parametrize("utilization", [0.3, 0.5, 0.9])
def test_a_running_vllm_reports_its_weights_and_kv_cache_in_vllms_words(utilization: float) -> None:
    run = play(vllm_launch(utilization), [gpu()], EXACT)
    fit = fit_of(utilization)
    figures = read_engine_log("vllm", run.log)
    assert figures.complete
    assert figures.kv_cache_tokens == fit.kv_cache_tokens
    assert figures.weights_mib == pytest.approx(fit.weights_mib, abs=0.1)
    assert figures.kv_cache_mib == pytest.approx(fit.kv_cache_mib, abs=5.2)  # printed to 0.01 GiB
    assert figures.max_concurrency == pytest.approx(fit.max_concurrency, abs=0.005)
    assert figures.engine_version


def test_the_weights_it_reports_carry_the_twins_error() -> None:
    exact = read_engine_log("vllm", play(vllm_launch(0.5), [gpu()], EXACT).log)
    off = read_engine_log("vllm", play(vllm_launch(0.5), [gpu()], Perturbation(seed=3, weights=0.02)).log)
    assert exact.weights_mib is not None and off.weights_mib is not None
    assert off.weights_mib != exact.weights_mib and abs(off.weights_mib / exact.weights_mib - 1) <= 0.02


def test_a_crashed_vllm_has_no_start_up_report() -> None:
    assert play(vllm_launch(0.05), [gpu()], EXACT).log == ""


def test_llamacpp_reports_its_buffers_in_llamacpps_words() -> None:
    run = play(llamacpp("-c", "8192", "-np", "2"), [gpu()], EXACT)
    assert run.running
    figures = read_engine_log("llamacpp", run.log)
    assert figures.complete and figures.max_concurrency == 2.0
    assert figures.kv_cache_tokens is not None and figures.kv_cache_tokens >= 8192
