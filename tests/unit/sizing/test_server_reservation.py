"""A vLLM server's reservation: its share of the GPU and, before vLLM 0.21, the CUDA graphs beyond it."""

from __future__ import annotations

import pytest

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.sizing import vllm
from vram_operator.sizing.server import size_server, vllm_profile_on_gpu

A5500_MIB = 24564.0


def _spec(**changes: object) -> InferenceServerSpec:
    return InferenceServerSpec.model_validate(
        {"engine": "vllm", "image": "i", "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "maxModelLen": 4096} | changes
    )


@pytest.mark.parametrize(("changes", "beyond"), [({}, True), ({"engineVersion": "0.21.0"}, False)])
def test_the_budgets_hold_the_graphs_captured_beyond_the_share(changes: dict[str, object], beyond: bool) -> None:
    spec = _spec(**changes)
    sizing = size_server(spec, gpu_total_mib=A5500_MIB)
    profile = vllm_profile_on_gpu(sizing, spec, A5500_MIB)
    assert profile is not None
    # 24 layers: 25 pieces over 51 capture sizes, 51 x (5.9 + 0.34 x 25) = 734 MiB.
    assert profile.cuda_graph_mib == pytest.approx(51 * (5.9 + 0.34 * 25))
    outside = profile.cuda_graph_mib if beyond else 0.0
    assert sizing.beyond_share_mib == outside
    assert sizing.min_mib == pytest.approx(vllm.memory_for_tokens(profile, 4096) + outside)
    assert sizing.preferred_mib == pytest.approx(vllm.memory_for_tokens(profile, 4 * 4096) + outside)


@pytest.mark.parametrize("flag", ["--enforce-eager", "--enforce_eager"])
def test_enforce_eager_captures_no_graphs_and_reserves_none(flag: str) -> None:
    graphs = size_server(_spec(), gpu_total_mib=A5500_MIB)
    eager = size_server(_spec(args=[flag]), gpu_total_mib=A5500_MIB)
    assert eager.beyond_share_mib == 0.0 < graphs.beyond_share_mib
    assert eager.preferred_mib == pytest.approx(graphs.preferred_mib - graphs.beyond_share_mib)
