from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.controller.failures import FailureKind, classify
from vram_operator.simulate.engines import GpuAtStart, Launch, Perturbation, play
from vram_operator.sizing import vllm
from vram_operator.sizing.server import size_server, vllm_profile_on_gpu

A5500 = 24564.0
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
EXACT = Perturbation(activation=0.0, weights=0.0)


def vllm_spec(**spec: object) -> InferenceServerSpec:
    return InferenceServerSpec.model_validate(
        {"engine": "vllm", "image": "vllm/vllm-openai", "model": {"name": QWEN}, "maxModelLen": 4096, **spec}
    )


def vllm_launch(utilization: float, *extra: str, spec: InferenceServerSpec | None = None) -> Launch:
    args = (QWEN, "--gpu-memory-utilization", str(utilization), "--max-model-len", "4096", *extra)
    return Launch("vllm", args, {}, spec or vllm_spec())


def gpu(free: float = A5500, total: float = A5500, uuid: str = "GPU-0") -> GpuAtStart:
    return GpuAtStart(uuid=uuid, total_mib=total, free_mib=free, name="NVIDIA RTX A5500")


def test_vllm_takes_its_share_plus_cuda_graphs() -> None:
    run = play(vllm_launch(0.5), [gpu()], EXACT)
    profile = vllm_profile_on_gpu(size_server(vllm_spec()), vllm_spec(), A5500, "NVIDIA RTX A5500")
    assert profile is not None and not profile.cuda_graph_subtracted  # vLLM 0.19: graphs outside the share
    assert run.running
    assert run.reserved_mib == {"GPU-0": 0.5 * A5500}
    assert run.used_mib == {"GPU-0": pytest.approx(0.5 * A5500 + profile.cuda_graph_mib)}


def test_vllm_start_check_boundary_and_its_message() -> None:
    wanted = 0.5 * A5500
    profile = vllm_profile_on_gpu(size_server(vllm_spec()), vllm_spec(), A5500, "NVIDIA RTX A5500")
    assert profile is not None and profile.graphs_outside_mib > 0
    # It runs when the free memory holds its share and the CUDA graphs it captures beyond it.
    assert play(vllm_launch(0.5), [gpu(free=wanted + profile.graphs_outside_mib)], EXACT).running
    # With only its share free it passes the start-up check (free < wanted refuses), then the graphs
    # find the GPU full.
    graphs = play(vllm_launch(0.5), [gpu(free=wanted)], EXACT)
    assert graphs.error is not None and "Free memory on device" not in graphs.error
    assert (
        f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {profile.graphs_outside_mib:.2f} MiB. "
        "GPU 0 has a total capacity of 23.99 GiB of which 0.00 MiB is free."
    ) in graphs.error
    run = play(vllm_launch(0.5), [gpu(free=wanted - 1)], EXACT)
    assert not run.running and run.exit_code == 1
    assert run.error is not None
    assert (
        "ValueError: Free memory on device cuda:0 (11.99/23.99 GiB) on startup is less than desired GPU memory "
        "utilization (0.5, 11.99 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
    ) in run.error
    failure = classify(run.error)
    assert failure is not None and failure.kind is FailureKind.STARTUP_FREE_MEMORY
    assert failure.free_mib == pytest.approx(11.99 * 1024)


def test_vllm_without_room_for_the_cache_and_for_one_request() -> None:
    none = play(vllm_launch(0.05), [gpu()], EXACT)
    assert none.error is not None
    assert "ValueError: No available memory for the cache blocks. Try increasing" in none.error
    failure = classify(none.error)
    assert failure is not None and failure.kind is FailureKind.KV_CACHE_NO_MEMORY

    spec = vllm_spec(maxModelLen=32768)
    short = play(vllm_launch(0.08, "--max-model-len", "32768", spec=spec), [gpu()], EXACT)
    assert short.error is not None
    assert "To serve at least one request with the model's max seq len (32768), (0.38 GiB KV cache" in short.error
    assert "the estimated maximum model length is" in short.error
    failure = classify(short.error)
    assert failure is not None and failure.kind is FailureKind.KV_CACHE_TOO_SMALL


@settings(max_examples=60, deadline=None)
@given(utilization=st.integers(min_value=1, max_value=100).map(lambda n: n / 100))
def test_without_error_the_engine_does_what_the_sizing_model_predicts(utilization: float) -> None:
    spec = vllm_spec()
    profile = vllm_profile_on_gpu(size_server(spec), spec, A5500, "NVIDIA RTX A5500")
    assert profile is not None
    predicted = vllm.fit(profile, A5500, utilization, A5500)
    run = play(vllm_launch(utilization), [gpu()], EXACT)
    assert run.running == predicted.fits


@given(seed=st.integers(min_value=0, max_value=2**32), key=st.text(min_size=1, max_size=20))
def test_the_error_is_seeded_and_bounded(seed: int, key: str) -> None:
    perturbation = Perturbation(seed=seed, activation=0.08, weights=0.02)
    weights, activation = perturbation.factors(key)
    assert perturbation.factors(key) == (weights, activation)
    assert 0.98 <= weights <= 1.02 and 0.92 <= activation <= 1.08
    assert Perturbation(seed=seed, activation=0, weights=0).factors(key) == (1.0, 1.0)


def test_the_error_moves_where_vllm_starts() -> None:
    """Near its minimum, whether vLLM starts depends on the seeded truth, not on the prediction alone."""
    spec = vllm_spec()
    profile = vllm_profile_on_gpu(size_server(spec), spec, A5500, "NVIDIA RTX A5500")
    assert profile is not None
    edge = vllm.memory_for_tokens(profile, 0) / A5500
    outcomes = {
        seed: play(vllm_launch(round(edge, 4)), [gpu()], Perturbation(seed=seed, activation=0.3, weights=0.05)).running
        for seed in range(20)
    }
    assert set(outcomes.values()) == {True, False}


def test_tensor_parallel_needs_its_gpus() -> None:
    spec = vllm_spec(tensorParallelSize=2)
    two = [gpu(uuid="GPU-0"), gpu(uuid="GPU-1")]
    run = play(vllm_launch(0.3, "--tensor-parallel-size", "2", spec=spec), two, EXACT)
    assert run.running and set(run.used_mib) == {"GPU-0", "GPU-1"}
    alone = play(vllm_launch(0.3, "-tp", "2", spec=spec), two[:1], EXACT)
    assert alone.error is not None and "World size (2) is larger than the number of available GPUs (1)" in alone.error
    second_full = [gpu(uuid="GPU-0"), gpu(uuid="GPU-1", free=1000)]
    run = play(vllm_launch(0.3, "-tp=2", spec=spec), second_full, EXACT)
    assert run.error is not None and "Free memory on device cuda:1 (0.98/23.99 GiB)" in run.error


def test_a_command_line_vllm_refuses() -> None:
    run = play(vllm_launch(0.5, "--max-model-len", "lots"), [gpu()], EXACT)
    assert run.exit_code == 2
    assert run.error == "vllm serve: error: argument --max-model-len: invalid human_readable_int value: 'lots'"


def generic(budget_mib: float | None, footprint: float | None = None) -> Launch:
    spec = InferenceServerSpec.model_validate({"engine": "generic", "image": "x", "vramBudget": "2Gi"})
    env = {} if budget_mib is None else {"VRAM_BUDGET_MIB": str(int(budget_mib)), "VRAM_BUDGET_GB": "2.00"}
    return Launch("generic", (), env, spec, true_footprint_mib=footprint)


def test_generic_uses_its_budget_or_its_true_footprint() -> None:
    assert play(generic(2048), [gpu()], EXACT).used_mib == {"GPU-0": 2048}
    liar = play(generic(2048, footprint=3000), [gpu()], EXACT)
    assert liar.used_mib == {"GPU-0": 3000} and liar.detail == "above its budget"
    assert play(generic(2048, footprint=3000), [gpu(free=3000)], EXACT).running
    oom = play(generic(2048, footprint=3000), [gpu(free=2999)], EXACT)
    assert oom.error is not None and oom.error.startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert play(generic(None), [gpu()], EXACT).used_mib == {}


def llamacpp(*args: str, env: dict[str, str] | None = None) -> Launch:
    spec = InferenceServerSpec.model_validate(
        {"engine": "llamacpp", "image": "x", "model": {"name": QWEN, "path": "/models/qwen.gguf"}}
    )
    return Launch("llamacpp", ("-m", "/models/qwen.gguf", *args), env or {}, spec)


def test_llamacpp_weights_kv_for_context_times_slots_and_compute() -> None:
    one = play(llamacpp("-c", "4096", "-np", "1"), [gpu()], EXACT)
    four = play(llamacpp("--ctx-size", "16384", "--parallel", "4"), [gpu()], EXACT)
    from_env = play(llamacpp(env={"LLAMA_ARG_CTX_SIZE": "16384", "LLAMA_ARG_N_PARALLEL": "4"}), [gpu()], EXACT)
    assert one.running and four.running
    assert four.used_mib["GPU-0"] > one.used_mib["GPU-0"]
    assert from_env.used_mib == four.used_mib


def test_llamacpp_fails_to_load_where_it_does_not_fit() -> None:
    needs = play(llamacpp("-c", "4096"), [gpu()], EXACT).used_mib["GPU-0"]
    assert play(llamacpp("-c", "4096"), [gpu(free=needs)], EXACT).running
    short = play(llamacpp("-c", "4096"), [gpu(free=needs - 1)], EXACT)
    assert short.error is not None and short.error.endswith("main: exiting due to model loading error")
    weights = play(llamacpp("-c", "4096"), [gpu(free=10)], EXACT)
    assert weights.error is not None
    assert "llama_model_load: error loading model: unable to allocate CUDA0 buffer" in weights.error
