"""Reading an engine's own memory figures from its start-up log, in every format it printed."""
# ruff: noqa: E501  (log lines are kept verbatim)

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.inference_server import EstimateStatus
from vram_operator.sizing.engine_report import (
    EngineFigures,
    FigureError,
    figure_errors,
    read_engine_log,
    worst_error,
)

# vLLM 0.10 (V1): weights line without "memory", KV size and concurrency on two lines.
VLLM_0_10 = """\
INFO 08-05 10:01:12 [api_server.py:1805] vLLM API server version 0.10.0
INFO 08-05 10:01:12 [utils.py:326] non-default args: {'model': 'Qwen/Qwen2.5-7B-Instruct-AWQ'}
INFO 08-05 10:01:40 [gpu_model_runner.py:1892] Model loading took 5.2035 GiB and 3.118254 seconds
INFO 08-05 10:01:52 [gpu_worker.py:255] Available KV cache memory: 0.37 GiB
INFO 08-05 10:01:52 [kv_cache_utils.py:833] GPU KV cache size: 6,976 tokens
INFO 08-05 10:01:52 [kv_cache_utils.py:837] Maximum concurrency for 2,048 tokens per request: 3.41x
INFO 08-05 10:02:03 [gpu_model_runner.py:2485] Graph capturing finished in 11 secs, took 0.41 GiB
"""

# vLLM 0.11-0.14 with TP 2: process prefixes, "GiB memory and", one line per worker.
VLLM_0_14_TP2 = """\
(APIServer pid=15841) INFO 01-21 14:16:50 [api_server.py:1272] vLLM API server version 0.14.0
(Worker_TP0 pid=16010) INFO 01-21 14:17:31 [gpu_model_runner.py:2653] Model loading took 8.5302 GiB memory and 21.4 seconds
(Worker_TP1 pid=16011) INFO 01-21 14:17:31 [gpu_model_runner.py:2653] Model loading took 8.5311 GiB memory and 21.5 seconds
(Worker_TP0 pid=16010) INFO 01-21 14:17:50 [gpu_worker.py:298] Available KV cache memory: 54.61 GiB
(Worker_TP1 pid=16011) INFO 01-21 14:17:50 [gpu_worker.py:298] Available KV cache memory: 54.60 GiB
(EngineCore_DP0 pid=15950) INFO 01-21 14:17:51 [kv_cache_utils.py:1087] GPU KV cache size: 1,789,168 tokens
(EngineCore_DP0 pid=15950) INFO 01-21 14:17:51 [kv_cache_utils.py:1091] Maximum concurrency for 32,768 tokens per request: 54.60x
"""

# vLLM 0.2x-0.33: KV size and concurrency joined in one line.
VLLM_0_29 = """\
(APIServer pid=1) INFO 03-02 09:00:00 [api_server.py:1301] vLLM API server version 0.29.0
(EngineCore pid=90) INFO 03-02 09:00:41 [gpu_model_runner.py:3102] Model loading took 15.27 GiB memory and 30.1 seconds
(EngineCore pid=90) INFO 03-02 09:01:05 [gpu_worker.py:341] Available KV cache memory: 12.23 GiB
(EngineCore pid=90) INFO 03-02 09:01:05 [kv_cache_utils.py:1301] GPU KV cache size: 89,040 tokens, Maximum concurrency for 8,192 tokens per request: 10.87x
"""

# llama.cpp builds before the KV cache rework (2024): llm_load_tensors, KV self size, n_ctx.
LLAMA_OLD = """\
build: 3600 (2fb92678) with cc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0 for x86_64-linux-gnu
llm_load_tensors: offloaded 33/33 layers to GPU
llm_load_tensors:        CPU buffer size =   281.81 MiB
llm_load_tensors:      CUDA0 buffer size =  4155.99 MiB
llama_new_context_with_model: n_ctx      = 8192
llama_new_context_with_model: n_seq_max     = 4
llama_kv_cache_init:      CUDA0 KV buffer size =  1024.00 MiB
llama_new_context_with_model: KV self size  = 1024.00 MiB, K (f16):  512.00 MiB, V (f16):  512.00 MiB
llama_new_context_with_model:      CUDA0 compute buffer size =   560.00 MiB
"""

# llama.cpp 2025 builds: load_tensors "model buffer", llama_kv_cache size line with cells.
LLAMA_NEW = """\
build: 6123 (79c1160b) with cc (GCC) 13.2.0 for x86_64-linux-gnu
load_tensors: offloaded 29/29 layers to GPU
load_tensors:        CUDA0 model buffer size =  4403.49 MiB
load_tensors:   CPU_Mapped model buffer size =   292.36 MiB
llama_context: n_seq_max     = 2
llama_context:  CUDA_Host  output buffer size =     1.16 MiB
llama_kv_cache:      CUDA0 KV buffer size =   448.00 MiB
llama_kv_cache: size =  448.00 MiB (  8192 cells,  28 layers,  2/2 seqs), K (f16):  224.00 MiB, V (f16):  224.00 MiB
llama_context:      CUDA0 compute buffer size =   304.00 MiB
"""


def test_vllm_0_10_two_lines() -> None:
    figures = read_engine_log("vllm", VLLM_0_10)
    assert figures == EngineFigures(
        weights_mib=round(5.2035 * 1024, 1),
        kv_cache_mib=round(0.37 * 1024, 1),
        kv_cache_tokens=6976,
        max_concurrency=3.41,
        engine_version="0.10.0",
    )
    assert figures.complete


def test_vllm_tensor_parallel_keeps_the_binding_rank() -> None:
    figures = read_engine_log("vllm", VLLM_0_14_TP2)
    assert figures.weights_mib == round(8.5311 * 1024, 1)  # the larger rank
    assert figures.kv_cache_mib == round(54.61 * 1024, 1)
    assert figures.kv_cache_tokens == 1_789_168
    assert figures.max_concurrency == 54.60
    assert figures.engine_version == "0.14.0"


def test_vllm_joined_line_of_newer_versions() -> None:
    figures = read_engine_log("vllm", VLLM_0_29)
    assert (figures.kv_cache_tokens, figures.max_concurrency) == (89_040, 10.87)
    assert figures.weights_mib == round(15.27 * 1024, 1)
    assert figures.engine_version == "0.29.0"


def test_vllm_v0_weights_line_in_gb() -> None:
    line = "INFO 11-27 02:03:11 model_runner.py:1072] Loading model weights took 14.9888 GB\n"
    assert read_engine_log("vllm", line).weights_mib == round(14.9888 * 1024, 1)


def test_vllm_log_cut_before_the_kv_cache_is_incomplete() -> None:
    head = VLLM_0_10.split("INFO 08-05 10:01:52", maxsplit=1)[0]
    figures = read_engine_log("vllm", head)
    assert figures.weights_mib is not None and figures.kv_cache_mib is None
    assert not figures.complete and not figures.empty


def test_llamacpp_old_build() -> None:
    figures = read_engine_log("llamacpp", LLAMA_OLD)
    assert figures == EngineFigures(
        weights_mib=4156.0,  # CUDA0 only: CPU buffers are host memory
        kv_cache_mib=1024.0,
        kv_cache_tokens=8192,
        max_concurrency=4.0,
        engine_version="b3600",
    )


def test_llamacpp_new_build() -> None:
    figures = read_engine_log("llamacpp", LLAMA_NEW)
    assert figures == EngineFigures(
        weights_mib=4403.5, kv_cache_mib=448.0, kv_cache_tokens=8192, max_concurrency=2.0, engine_version="b6123"
    )


def test_llamacpp_without_per_device_kv_line_uses_the_size_line() -> None:
    text = "\n".join(line for line in LLAMA_NEW.splitlines() if "KV buffer" not in line)
    assert read_engine_log("llamacpp", text).kv_cache_mib == 448.0


def test_generic_and_unknown_logs_report_nothing() -> None:
    assert read_engine_log("generic", VLLM_0_10).empty
    assert read_engine_log("vllm", "Traceback (most recent call last):\n  ...").empty


def test_figure_errors_compare_against_the_estimate() -> None:
    estimate = EstimateStatus(weights_mib=5000.0, kv_cache_mib=600.0, kv_cache_tokens=6976)
    figures = EngineFigures(weights_mib=5000.0, kv_cache_mib=400.0, kv_cache_tokens=6976)
    errors = {e.figure: e for e in figure_errors(figures, estimate)}
    assert errors["kvCacheMiB"].error == pytest.approx(0.5)
    assert errors["weightsMiB"].error == 0.0
    worst = worst_error(list(errors.values()), 0.10)
    assert worst is not None and worst.figure == "kvCacheMiB"
    assert "estimated 600, the engine reported 400 (+50.0%)" in worst.describe()


def test_figures_not_reported_have_no_error() -> None:
    errors = figure_errors(EngineFigures(weights_mib=100.0), EstimateStatus(weights_mib=150.0, kv_cache_mib=9.0))
    assert [e.figure for e in errors] == ["weightsMiB"]


def test_threshold_is_exclusive() -> None:
    at = FigureError("kvCacheMiB", estimated=110.0, reported=100.0)
    assert at.error == pytest.approx(0.10)
    assert worst_error([at], 0.1000001) is None
    assert worst_error([at], 0.0999999) is at


@given(
    st.floats(min_value=1.0, max_value=1e6),
    st.floats(min_value=1.0, max_value=1e6),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_worst_error_is_reported_only_beyond_the_threshold(estimated: float, reported: float, threshold: float) -> None:
    error = FigureError("weightsMiB", estimated, reported)
    found = worst_error([error], threshold)
    assert (found is not None) == (abs(estimated / reported - 1.0) > threshold)
