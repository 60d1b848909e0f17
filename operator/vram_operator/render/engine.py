"""The engine container: command line, engine environment, port and probes per engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.api.owned_flags import owned_flag_errors
from vram_operator.render.errors import RenderError
from vram_operator.render.settings import ProbeTimings, RenderSettings

VLLM_KV_CACHE_DTYPES = frozenset({"auto", "fp8", "fp8_e4m3", "fp8_e5m2"})
LLAMACPP_KV_CACHE_DTYPES = frozenset({"auto", "f16", "q8_0", "q4_0"})
# Quantization names vLLM takes on --quantization. The others (none, int8, gguf-*) are read by
# vLLM from the checkpoint itself, so the flag is left out rather than guessed.
VLLM_QUANTIZATION_FLAGS = frozenset({"fp8", "awq", "gptq", "mxfp4", "bitsandbytes"})
# llama.cpp clamps the offloaded layer count to the model's, so this means "every layer".
ALL_LAYERS = 999
MIB_PER_GIB = 1024
# HAMi-core's device-memory cap (see memory_limit_env).
MEMORY_LIMIT_ENV = "CUDA_DEVICE_MEMORY_LIMIT"


@dataclass(frozen=True)
class LlamaCppLaunch:
    """What sizing decided for a llama.cpp server: layers on the GPU and context length."""

    n_gpu_layers: int
    context_length: int
    parallel: int | None = None


@dataclass(frozen=True)
class EngineContainer:
    """The engine-specific part of the container; pinning and pass-through fields come later."""

    command: tuple[str, ...]  # empty: the image's own entrypoint
    args: tuple[str, ...]
    env: tuple[dict[str, Any], ...]
    port: int
    probe_handler: dict[str, Any] | None  # httpGet / tcpSocket, or None for no probes


def engine_port(server: InferenceServer, settings: RenderSettings) -> int:
    """The port the engine listens on inside the pod."""
    ports = {"vllm": settings.vllm_port, "llamacpp": settings.llamacpp_port, "generic": settings.generic_port}
    return ports[server.spec.engine]


def format_utilization(value: float) -> str:
    """0.4 -> "0.4", 0.51234 -> "0.5123": four decimals is finer than vLLM's accounting."""
    return f"{value:.4f}".rstrip("0").rstrip(".")


def user_args(server: InferenceServer) -> list[str]:
    """spec.args, after checking again that none sets a flag the operator owns.

    The API server and the model's validation refuse such a spec already; this keeps a spec that
    skipped them (built in code, changed after validation) from rendering an owned flag twice.
    """
    owned = owned_flag_errors(server.spec.engine, server.spec.args)
    if owned:
        raise RenderError("; ".join(owned), field="spec.args")
    return list(server.spec.args)


def _vllm(server: InferenceServer, utilization: float | None, settings: RenderSettings) -> list[str]:
    spec = server.spec
    model = spec.model
    if model is None or not (model.path or model.name):
        raise RenderError("vLLM needs model.path or model.name", field="spec.model")
    if utilization is None or not 0 < utilization <= 1:
        raise RenderError(
            f"effective utilization {utilization} must be within (0, 1] for vLLM", field="status.gpuMemoryUtilization"
        )
    if spec.kv_cache_dtype not in VLLM_KV_CACHE_DTYPES:
        raise RenderError(
            f"{spec.kv_cache_dtype} is a llama.cpp cache type; vLLM takes {', '.join(sorted(VLLM_KV_CACHE_DTYPES))}",
            field="spec.kvCacheDtype",
        )
    args = [str(model.path or model.name)]
    if model.path and model.name:
        # Clients address the model by its well-known name, not the path it was mounted at.
        args += ["--served-model-name", model.name]
    args += ["--gpu-memory-utilization", format_utilization(utilization)]
    if spec.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    if spec.pipeline_parallel_size > 1:
        args += ["--pipeline-parallel-size", str(spec.pipeline_parallel_size)]
    optional = (
        ("--max-model-len", spec.max_model_len),
        ("--max-num-seqs", spec.max_num_seqs),
        ("--max-num-batched-tokens", spec.max_num_batched_tokens),
        ("--kv-cache-dtype", None if spec.kv_cache_dtype == "auto" else spec.kv_cache_dtype),
        ("--dtype", None if model.dtype == "auto" else model.dtype),
        ("--quantization", model.quantization if model.quantization in VLLM_QUANTIZATION_FLAGS else None),
    )
    args += [item for flag, value in optional if value is not None for item in (flag, str(value))]
    args += ["--port", str(settings.vllm_port)]
    return args + user_args(server)


def _llamacpp(server: InferenceServer, launch: LlamaCppLaunch | None, settings: RenderSettings) -> list[str]:
    spec = server.spec
    model = spec.model
    if model is None or not (model.path or model.name):
        raise RenderError("llama.cpp needs model.path (a .gguf file) or model.name", field="spec.model")
    if spec.kv_cache_dtype not in LLAMACPP_KV_CACHE_DTYPES:
        raise RenderError(
            f"{spec.kv_cache_dtype} is a vLLM cache type; llama.cpp takes "
            f"{', '.join(sorted(LLAMACPP_KV_CACHE_DTYPES))}",
            field="spec.kvCacheDtype",
        )
    if model.path:
        args = ["-m", model.path]
    else:
        # llama-server downloads from Hugging Face itself; the quant tag picks the GGUF file.
        repo, quant = str(model.name), model.quantization or ""
        args = ["-hf", f"{repo}:{quant.removeprefix('gguf-')}" if quant.startswith("gguf-") else repo]
    layers = launch.n_gpu_layers if launch else ALL_LAYERS
    context = launch.context_length if launch else spec.max_model_len
    parallel = launch.parallel if launch and launch.parallel else spec.max_num_seqs
    args += ["--n-gpu-layers", str(layers)]
    if context is not None:
        args += ["-c", str(context)]
    if parallel is not None:
        args += ["--parallel", str(parallel)]
    if spec.kv_cache_dtype != "auto":
        args += ["--cache-type-k", spec.kv_cache_dtype, "--cache-type-v", spec.kv_cache_dtype]
    args += ["--host", "0.0.0.0", "--port", str(settings.llamacpp_port)]
    return args + user_args(server)


def budget_env(placement: PlacementStatus) -> tuple[dict[str, Any], ...]:
    """The budget a generic service must stay within, in GiB ("GB" as nvidia-smi says) and MiB."""
    return (
        {"name": "VRAM_BUDGET_GB", "value": f"{placement.budget_mib / MIB_PER_GIB:.2f}"},
        {"name": "VRAM_BUDGET_MIB", "value": str(int(placement.budget_mib))},
    )


def memory_limit_env(placement: PlacementStatus) -> tuple[dict[str, Any], ...]:
    """The per-GPU budget as HAMi-core enforces it, when its libvgpu.so is preloaded in the container.

    HAMi-core reads CUDA_DEVICE_MEMORY_LIMIT (every visible device) and CUDA_DEVICE_MEMORY_LIMIT_<i>
    (the i-th visible device; it wins), with a k/m/g suffix in powers of 1024: `m` is MiB. KAI
    Scheduler's HAMi-core integration sets the same variable. The budget is the same on every GPU
    of a placement, so the device order inside the container does not matter. Without libvgpu.so
    nothing reads them.
    """
    limit = f"{int(placement.budget_mib)}m"
    per_device = tuple(
        {"name": f"{MEMORY_LIMIT_ENV}_{position}", "value": limit} for position in range(len(placement.gpus))
    )
    return ({"name": MEMORY_LIMIT_ENV, "value": limit}, *per_device)


def engine_container(
    server: InferenceServer,
    placement: PlacementStatus,
    utilization: float | None,
    settings: RenderSettings,
    launch: LlamaCppLaunch | None = None,
) -> EngineContainer:
    """Command line, environment, port and probe target of the server's engine."""
    engine = server.spec.engine
    port = engine_port(server, settings)
    http_health: dict[str, Any] = {"httpGet": {"path": "/health", "port": "http"}}
    # No memory cap for vLLM: HAMi-core shows the container a card as large as the cap, and vLLM's
    # --gpu-memory-utilization (computed against the physical card) would then be a fraction of it.
    if engine == "vllm":
        args = _vllm(server, utilization, settings)
        return EngineContainer(settings.vllm_command, tuple(args), (), port, http_health)
    if engine == "llamacpp":
        args = _llamacpp(server, launch, settings)
        return EngineContainer(settings.llamacpp_command, tuple(args), memory_limit_env(placement), port, http_health)
    probe = {"tcpSocket": {"port": "http"}} if settings.generic_tcp_probe else None
    env = (*budget_env(placement), *memory_limit_env(placement))
    return EngineContainer((), tuple(server.spec.args), env, port, probe)


def _probe(handler: dict[str, Any], timings: ProbeTimings) -> dict[str, Any]:
    return {
        **handler,
        "periodSeconds": timings.period_seconds,
        "failureThreshold": timings.failure_threshold,
        "timeoutSeconds": timings.timeout_seconds,
        "initialDelaySeconds": timings.initial_delay_seconds,
    }


def probes(handler: dict[str, Any] | None, settings: RenderSettings) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe fields of the container (none without a handler)."""
    if handler is None:
        return {}
    return {
        "startupProbe": _probe(handler, settings.startup_probe),
        "readinessProbe": _probe(handler, settings.readiness_probe),
        "livenessProbe": _probe(handler, settings.liveness_probe),
    }
