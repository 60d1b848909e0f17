"""Fitting a sized server onto one GPU: whatever budget it got there, an answer, never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.fit.gpu_fit import fit_on_gpu
from vram_operator.sizing.server import ServerSizing, size_server, vllm_profile_on_gpu

SPEC = InferenceServerSpec.model_validate(
    {"engine": "vllm", "image": "i", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "maxModelLen": 4096}
)
A400_MIB = 4094.0


@settings(max_examples=80, deadline=None)
@given(st.floats(min_value=0.0, max_value=3 * A400_MIB), st.one_of(st.none(), st.floats(min_value=0.0, max_value=2.0)))
def test_vllm_fit_answers_for_any_budget_or_utilization(budget: float, utilization: float | None) -> None:
    # Before: a budget under 1% of the GPU (utilization 0.0), or a KV floor above the whole GPU (e.g. 1.38),
    # raised SizingError "utilization ... must be in (0, 1]", which the operator took for a bad spec.
    sizing = size_server(SPEC, gpu_total_mib=A400_MIB)
    fit = fit_on_gpu(sizing, SPEC, budget, A400_MIB, gpu_free_mib=A400_MIB, utilization=utilization)
    # Without a utilization, the budget holds vLLM's share (hundredths of the GPU, rounded down) and
    # the CUDA graphs vLLM 0.19 captures beyond it.
    graphs = _graphs_outside(sizing)
    effective = utilization if utilization is not None else int((budget - graphs) / A400_MIB * 100) / 100
    if 0 < effective <= 1:
        assert fit.utilization == effective
    else:
        assert (fit.utilization, fit.fits, fit.reason) == (None, False, "InsufficientMemory")
        assert fit.engine_args == ()
        assert f"vLLM needs {sizing.min_mib:.0f} MiB per GPU" in fit.message


def _graphs_outside(sizing: ServerSizing) -> float:
    profile = vllm_profile_on_gpu(sizing, SPEC, A400_MIB)
    assert profile is not None and profile.graphs_outside_mib > 0
    return profile.graphs_outside_mib


def test_the_boundaries_of_a_utilization_vllm_can_be_given() -> None:
    sizing = size_server(SPEC, gpu_total_mib=A400_MIB)
    graphs = _graphs_outside(sizing)
    assert fit_on_gpu(sizing, SPEC, A400_MIB * 0.0099 + graphs, A400_MIB).reason == "InsufficientMemory"
    assert fit_on_gpu(sizing, SPEC, A400_MIB * 0.01 + graphs, A400_MIB).utilization == 0.01
    assert fit_on_gpu(sizing, SPEC, A400_MIB, A400_MIB, utilization=1.0).utilization == 1.0
    assert fit_on_gpu(sizing, SPEC, A400_MIB, A400_MIB, utilization=1.01).reason == "InsufficientMemory"
