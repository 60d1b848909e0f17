from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.simulate.engine_args import (
    EngineArgError,
    human_readable_int,
    read_generic_budget_mib,
    read_llamacpp,
    read_vllm,
)

UTILIZATION_SPELLINGS = (
    lambda v: ["--gpu-memory-utilization", v],
    lambda v: [f"--gpu-memory-utilization={v}"],
    lambda v: ["--gpu_memory_utilization", v],
    lambda v: [f"--gpu_memory_utilization={v}"],
)


@given(
    value=st.floats(min_value=0.01, max_value=1.0, allow_nan=False).map(lambda v: round(v, 4)),
    spelling=st.sampled_from(UTILIZATION_SPELLINGS),
    before=st.lists(st.sampled_from(["--port", "8000", "--enforce-eager", "--served-model-name", "m"]), max_size=4),
)
def test_every_spelling_of_the_utilization_reads_the_same(
    value: float, spelling: Callable[[str], list[str]], before: list[str]
) -> None:
    args = ["Qwen/Qwen2.5-0.5B-Instruct", *before, *spelling(str(value))]
    assert read_vllm(args, {}).gpu_memory_utilization == value


def test_the_last_utilization_wins_and_the_default_is_vllms() -> None:
    assert read_vllm(["m"], {}).gpu_memory_utilization == 0.9
    args = ["m", "--gpu-memory-utilization", "0.5", "--gpu_memory_utilization=0.7"]
    assert read_vllm(args, {}).gpu_memory_utilization == 0.7


def test_vllm_lengths_and_parallelism() -> None:
    given_args = read_vllm(["m", "--max-model-len", "32k", "-tp", "2", "--max_num_seqs=8", "--enforce-eager"], {})
    assert given_args.max_model_len == 32000
    assert given_args.tensor_parallel_size == 2
    assert given_args.max_num_seqs == 8
    assert given_args.enforce_eager
    assert read_vllm(["m", "--max-model-len=32K"], {}).max_model_len == 32768
    assert read_vllm(["m", "--max-model-len", "4096", "--tensor-parallel-size=4"], {}).tensor_parallel_size == 4
    assert read_vllm(["m"], {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}).allow_long_max_model_len
    assert not read_vllm(["m"], {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "0"}).allow_long_max_model_len


def test_human_readable_lengths() -> None:
    assert human_readable_int("--max-model-len", "1.5k") == 1500
    assert human_readable_int("--max-model-len", "1M") == 1 << 20
    with pytest.raises(EngineArgError, match="invalid human_readable_int value: '4x'"):
        human_readable_int("--max-model-len", "4x")


def test_vllm_refuses_a_utilization_that_is_not_a_number() -> None:
    with pytest.raises(EngineArgError, match="argument --gpu-memory-utilization: invalid float value: 'lots'"):
        read_vllm(["m", "--gpu-memory-utilization", "lots"], {})


def test_llamacpp_short_long_and_environment() -> None:
    args = ["-m", "/models/x.gguf", "-c", "8192", "-np", "2", "-ngl", "20", "-ctk", "q8_0", "--cache-type-v=q8_0"]
    read = read_llamacpp(args, {})
    assert (read.model, read.ctx_size, read.parallel, read.n_gpu_layers) == ("/models/x.gguf", 8192, 2, 20)
    assert (read.cache_type_k, read.cache_type_v) == ("q8_0", "q8_0")
    long_form = read_llamacpp(["--ctx-size", "4096", "--parallel", "3", "--n-gpu-layers", "999"], {})
    assert (long_form.ctx_size, long_form.parallel, long_form.n_gpu_layers) == (4096, 3, 999)
    from_env = read_llamacpp([], {"LLAMA_ARG_CTX_SIZE": "2048", "LLAMA_ARG_N_PARALLEL": "4"})
    assert (from_env.ctx_size, from_env.parallel) == (2048, 4)
    # The command line wins over the environment.
    assert read_llamacpp(["-c", "1024"], {"LLAMA_ARG_CTX_SIZE": "2048"}).ctx_size == 1024
    assert read_llamacpp(["-ngl", "all"], {}).n_gpu_layers is None


def test_generic_budget_from_its_environment() -> None:
    assert read_generic_budget_mib({"VRAM_BUDGET_MIB": "650", "VRAM_BUDGET_GB": "0.63"}) == 650
    assert read_generic_budget_mib({"VRAM_BUDGET_GB": "2.00"}) == 2048
    assert read_generic_budget_mib({}) is None
