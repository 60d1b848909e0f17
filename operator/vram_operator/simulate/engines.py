"""What an engine does on the GPUs its pod was given: the memory it takes, or how it fails (pure).

The ground truth is the operator's own sizing model, perturbed by a seeded error per model (it
"really" needs a little more or less than predicted), so the operator's predictions are no
oracle of themselves and its corrections get exercised. The failure texts are the engines' own
(vLLM 0.19 `gpu_worker`/`kv_cache_utils`, llama.cpp's loader), as they end a container's log.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vram_operator.api.inference_server import InferenceServerSpec
from vram_operator.simulate.engine_args import (
    EngineArgError,
    VllmArgs,
    read_generic_budget_mib,
    read_llamacpp,
    read_vllm,
)
from vram_operator.sizing import vllm
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.llamacpp import LlamaCppEstimate, LlamaCppSettings, estimate_llamacpp
from vram_operator.sizing.pipeline import binding_stage_profile
from vram_operator.sizing.server import DEFAULT_TARGET_CONCURRENCY, size_server

MIB_PER_GIB = 1024.0
BYTES_PER_MIB = 1024 * 1024
VLLM_DOCS = "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
VLLM_ENGINE_PID = 215  # the EngineCore process id vLLM's log lines carry


@dataclass(frozen=True)
class Perturbation:
    """How far the truth strays from the sizing model: a uniform relative error per server, seeded."""

    seed: int = 0
    activation: float = 0.08
    weights: float = 0.02

    def factors(self, key: str) -> tuple[float, float]:
        """(weights, activation) multipliers for the model `key`: same seed and model, same truth."""
        draw = random.Random(f"{self.seed}/{key}")
        return 1.0 + draw.uniform(-self.weights, self.weights), 1.0 + draw.uniform(-self.activation, self.activation)


@dataclass(frozen=True)
class GpuAtStart:
    """One GPU the pod sees, with what was free on it when the engine started."""

    uuid: str
    total_mib: float
    free_mib: float
    name: str = ""


@dataclass(frozen=True)
class Launch:
    """One start of an engine container: its command line, environment and the server it serves."""

    engine: str  # vllm | llamacpp | generic
    args: tuple[str, ...]
    env: Mapping[str, str]
    spec: InferenceServerSpec
    config: Mapping[str, Any] | None = None  # config.json from the server's ConfigMap
    true_footprint_mib: float | None = None  # generic: what the service really takes per GPU

    @property
    def model_key(self) -> str:
        """What the truth is a property of: the engine and the model (any server running it)."""
        model = self.spec.model
        if model is None:
            return f"{self.engine}/{self.spec.image}"
        return f"{self.engine}/{model.name or model.path}/{model.quantization or ''}/{model.dtype}"


@dataclass(frozen=True)
class EngineRun:
    """The engine running with `used_mib` per GPU UUID, or failed (`error` = the end of its log)."""

    used_mib: Mapping[str, float] = field(default_factory=dict)
    # What the engine sets aside by its own rule (vLLM: utilization x total); used_mib where absent.
    reserved_mib: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0
    detail: str = ""
    log: str = ""  # a running engine's start-up lines, as the engine prints them

    @property
    def running(self) -> bool:
        return self.error is None


def _failed(*lines: str, exit_code: int = 1) -> EngineRun:
    return EngineRun(error="\n".join(lines), exit_code=exit_code)


def play(launch: Launch, gpus: Sequence[GpuAtStart], perturbation: Perturbation) -> EngineRun:
    """What the engine of `launch` does on `gpus` (in device order, as CUDA numbers them)."""
    if launch.engine == "vllm":
        return _play_vllm(launch, gpus, perturbation)
    if launch.engine == "llamacpp":
        return _play_llamacpp(launch, gpus, perturbation)
    return _play_generic(launch, gpus)


# --- vLLM ----------------------------------------------------------------------------------------


def _vllm_error(message: str, error: str = "ValueError") -> EngineRun:
    engine = f"(EngineCore_DP0 pid={VLLM_ENGINE_PID})"
    return _failed(
        f"{engine} ERROR [core.py] EngineCore failed to start.",
        f"{engine} {error}: {message}",
        "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}",
    )


def _gib(mib: float) -> str:
    return f"{mib / MIB_PER_GIB:.2f}"


def _format_gib(num_bytes: float) -> str:
    # vLLM's format_gib: round(bytes / GiB, 2), printed as Python prints a float.
    return str(round(num_bytes / (MIB_PER_GIB * BYTES_PER_MIB), 2))


def cuda_graph_out_of_memory_message(rank: int, short_mib: float, left_mib: float, total_mib: float) -> str:
    """torch's words when capturing the CUDA graphs (after the KV cache) finds the GPU full."""
    return (
        f"CUDA out of memory. Tried to allocate {short_mib:.2f} MiB. GPU {rank} has a total capacity of "
        f"{_gib(total_mib)} GiB of which {left_mib:.2f} MiB is free."
    )


def startup_free_memory_message(rank: int, free_mib: float, total_mib: float, utilization: float) -> str:
    """vLLM's start-up check (gpu_worker.init_device) refusing to start."""
    return (
        f"Free memory on device cuda:{rank} ({_gib(free_mib)}/{_gib(total_mib)} GiB) on startup is less than "
        f"desired GPU memory utilization ({utilization}, {_gib(utilization * total_mib)} GiB). Decrease GPU memory "
        "utilization or reduce GPU memory used by other processes."
    )


NO_CACHE_BLOCKS_MESSAGE = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the "
    f"engine. {VLLM_DOCS}"
)


def max_model_len_message(max_model_len: int, needed_bytes: float, available_bytes: float, estimated: int) -> str:
    """vLLM's check that the KV cache holds one request of max_model_len tokens."""
    estimate = (
        f"Based on the available memory, the estimated maximum model length is {estimated}. " if estimated > 0 else ""
    )
    return (
        f"To serve at least one request with the model's max seq len ({max_model_len}), "
        f"({_format_gib(needed_bytes)} GiB KV cache is needed, which is larger than the available KV cache memory "
        f"({_format_gib(available_bytes)} GiB). {estimate}Try increasing `gpu_memory_utilization` or decreasing "
        f"`max_model_len` when initializing the engine. {VLLM_DOCS}"
    )


def _vllm_settings(spec: InferenceServerSpec, given: VllmArgs) -> vllm.VllmSettings:
    return vllm.VllmSettings(
        engine_version=spec.engine_version or vllm.DEFAULT_ENGINE_VERSION,
        max_model_len=given.max_model_len,
        max_num_seqs=given.max_num_seqs,
        max_num_batched_tokens=given.max_num_batched_tokens,
        tensor_parallel_size=given.tensor_parallel_size,
        kv_cache_dtype=given.kv_cache_dtype,
        dtype=given.dtype,
        enforce_eager=given.enforce_eager,
        allow_long_max_model_len=given.allow_long_max_model_len,
    )


def _play_vllm(launch: Launch, gpus: Sequence[GpuAtStart], perturbation: Perturbation) -> EngineRun:
    try:
        given = read_vllm(launch.args, launch.env)
    except EngineArgError as error:
        return _failed(f"vllm serve: error: {error}", exit_code=2)
    utilization = given.gpu_memory_utilization
    if not 0 < utilization <= 1:
        return _vllm_error(f"GPU memory utilization must be within (0, 1]. Got {utilization}.")
    tp = given.tensor_parallel_size
    if len(gpus) < tp:
        return _vllm_error(f"World size ({tp}) is larger than the number of available GPUs ({len(gpus)}) in this node.")
    try:
        sizing = size_server(launch.spec.model_copy(update={"engine": "vllm"}), launch.config)
        weights = sizing.weights
        if weights is None or weights.architecture is None:
            raise SizingError("the model's architecture is unknown", field="model")
        arch, spec = weights.architecture, launch.spec
        settings = _vllm_settings(spec, given)
        # the operator's own sizing path (pipeline stages, what each GPU loads): the truth before its error
        profiles = [
            binding_stage_profile(
                arch,
                weights.total_bytes,
                settings,
                gpu.total_mib,
                stages=spec.pipeline_parallel_size,
                sequences=spec.max_num_seqs or DEFAULT_TARGET_CONCURRENCY,
                gpu_name=gpu.name,
                source=weights.source,
                quantization=weights.quantization,
                exact_weights=bool(spec.model and spec.model.weights_mib is not None),
            )
            for gpu in gpus[:tp]
        ]
    except SizingError as error:
        return _vllm_error(str(error))
    weights_factor, activation_factor = perturbation.factors(launch.model_key)
    used: dict[str, float] = {}
    reserved: dict[str, float] = {}
    details = []
    ranks: list[tuple[float, float]] = []
    tokens, concurrency = 0, 0.0
    for rank, (gpu, predicted) in enumerate(zip(gpus[:tp], profiles, strict=True)):
        profile = dataclasses.replace(
            predicted,
            weights_mib=predicted.weights_mib * weights_factor,
            activation_mib=predicted.activation_mib * activation_factor,
        )
        free = min(max(gpu.free_mib, 0.0), gpu.total_mib)
        fit = vllm.fit(profile, gpu.total_mib, utilization, free)
        if fit.reason == "StartupFreeMemory":
            return _vllm_error(startup_free_memory_message(rank, free, gpu.total_mib, utilization))
        if fit.reason == "NoCacheBlocks":
            return _vllm_error(NO_CACHE_BLOCKS_MESSAGE)
        if fit.reason == "MaxModelLenTooLarge":
            needed = vllm.request_kv_bytes(profile, profile.max_model_len)
            available = max(fit.kv_cache_mib, 0.0) * BYTES_PER_MIB
            return _vllm_error(
                max_model_len_message(profile.max_model_len, needed, available, fit.max_fitting_model_len or 0)
            )
        if fit.reason == "CudaGraphsOutOfMemory":
            left = max(0.0, free - utilization * gpu.total_mib)
            message = cuda_graph_out_of_memory_message(rank, profile.graphs_outside_mib - left, left, gpu.total_mib)
            return _vllm_error(message, "torch.OutOfMemoryError")
        if not fit.fits:
            return _vllm_error(fit.message)
        # The pool fills utilization x total; CUDA graphs are captured after it, outside that
        # share, unless this vLLM subtracts their estimate beforehand.
        reserved[gpu.uuid] = utilization * gpu.total_mib
        used[gpu.uuid] = vllm.footprint_mib(profile, gpu.total_mib, utilization)
        details.append(f"cuda:{rank} KV cache {fit.kv_cache_tokens} tokens")
        ranks.append((profile.weights_mib, fit.kv_cache_mib))
        tokens, concurrency = fit.kv_cache_tokens, fit.max_concurrency
    log = vllm_startup_log(settings.engine_version, profiles[0].max_model_len, ranks, tokens, concurrency)
    return EngineRun(used_mib=used, reserved_mib=reserved, detail="; ".join(details), log=log)


def vllm_startup_log(
    version: str, max_model_len: int, ranks: Sequence[tuple[float, float]], tokens: int, concurrency: float
) -> str:
    """vLLM's start-up lines about its memory (the format of 0.11-0.14): per rank the weights it loaded
    and the KV cache memory left, then the pool in tokens and the concurrency it allows."""
    lines = [f"(APIServer pid=1) INFO [api_server.py:1272] vLLM API server version {version}"]
    for rank, (weights_mib, _) in enumerate(ranks):
        lines.append(
            f"(Worker_TP{rank} pid={100 + rank}) INFO [gpu_model_runner.py:2653] Model loading took "
            f"{weights_mib / 1024:.4f} GiB memory and 12.5 seconds"
        )
    for rank, (_, kv_mib) in enumerate(ranks):
        lines.append(
            f"(Worker_TP{rank} pid={100 + rank}) INFO [gpu_worker.py:298] Available KV cache memory: "
            f"{kv_mib / 1024:.2f} GiB"
        )
    lines += [
        f"(EngineCore_DP0 pid=90) INFO [kv_cache_utils.py:1087] GPU KV cache size: {tokens:,} tokens",
        f"(EngineCore_DP0 pid=90) INFO [kv_cache_utils.py:1091] Maximum concurrency for {max_model_len:,} tokens "
        f"per request: {concurrency:.2f}x",
        "(APIServer pid=1) INFO:     Application startup complete.",
    ]
    return "\n".join(lines) + "\n"


# --- llama.cpp -----------------------------------------------------------------------------------


def _llamacpp_oom(model: str, stage: str, mib: float) -> EngineRun:
    alloc = (
        f"ggml_backend_cuda_buffer_type_alloc_buffer: allocating {mib:.2f} MiB on device 0: "
        "cudaMalloc failed: out of memory"
    )
    tail = (
        f"srv    load_model: failed to load model, '{model}'",
        "srv    operator(): operator(): cleaning up before exit...",
        "main: exiting due to model loading error",
    )
    if stage == "weights":
        return _failed(
            alloc,
            f"alloc_tensor_range: failed to allocate CUDA0 buffer of size {int(mib * BYTES_PER_MIB)}",
            "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
            "llama_model_load_from_file_impl: failed to load model",
            f"common_init_from_params: failed to load model '{model}'",
            *tail,
        )
    if stage == "kv":
        return _failed(
            alloc,
            "llama_kv_cache: failed to allocate buffer for kv cache",
            "llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache",
            f"common_init_from_params: failed to create context with model '{model}'",
            *tail,
        )
    return _failed(
        f"ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size {int(mib * BYTES_PER_MIB)}",
        "graph_reserve: failed to allocate compute buffers",
        "llama_init_from_model: failed to initialize the context: failed to allocate compute pp buffers",
        f"common_init_from_params: failed to create context with model '{model}'",
        *tail,
    )


def _play_llamacpp(launch: Launch, gpus: Sequence[GpuAtStart], perturbation: Perturbation) -> EngineRun:
    try:
        given = read_llamacpp(launch.args, launch.env)
    except EngineArgError as error:
        return _failed(f"error: {error}", exit_code=1)
    model_name = given.model or "model.gguf"
    if not gpus:
        return EngineRun(detail="no GPU visible: runs on the CPU")
    weights_factor, activation_factor = perturbation.factors(launch.model_key)
    log = ""
    try:
        sizing = size_server(launch.spec.model_copy(update={"engine": "llamacpp"}), launch.config)
        if sizing.llamacpp_model is None:
            stages = [("weights", sizing.preferred_mib * weights_factor)]
        else:
            settings = LlamaCppSettings(
                n_ctx=given.ctx_size,
                parallel=given.parallel or 1,
                cache_type_k=given.cache_type_k,
                cache_type_v=given.cache_type_v,
                n_gpu_layers=given.n_gpu_layers,
            )
            estimate = estimate_llamacpp(sizing.llamacpp_model, settings)
            log = llamacpp_startup_log(
                estimate,
                weights_mib=estimate.weights_mib * weights_factor,
                parallel=settings.parallel,
                devices=len(gpus),
            )
            stages = [
                ("weights", (estimate.weights_mib + estimate.overhead_mib) * weights_factor),
                ("kv", estimate.kv_cache_mib),
                ("compute", estimate.compute_mib * activation_factor),
            ]
    except SizingError as error:
        return _failed(f"error: {error}", "main: exiting due to model loading error")
    # With several GPUs visible llama.cpp splits the layers evenly between them (--split-mode layer).
    share = 1.0 / len(gpus)
    used: dict[str, float] = {}
    for gpu in gpus:
        taken = 0.0
        for stage, mib in stages:
            if taken + mib * share > gpu.free_mib:
                return _llamacpp_oom(model_name, stage, mib * share)
            taken += mib * share
        used[gpu.uuid] = taken
    return EngineRun(used_mib=used, detail=f"llama.cpp {sum(used.values()):.0f} MiB", log=log)


def llamacpp_startup_log(estimate: LlamaCppEstimate, *, weights_mib: float, parallel: int, devices: int) -> str:
    """llama.cpp's start-up lines about its buffers (2025 builds), split evenly over `devices` GPUs."""
    share = 1.0 / max(devices, 1)
    seqs = parallel
    lines = ["build: 6123 (79c1160b) with cc (GCC) 13.2.0 for x86_64-linux-gnu"]
    for d in range(devices):
        lines.append(f"load_tensors:        CUDA{d} model buffer size = {weights_mib * share:8.2f} MiB")
    lines.append(f"llama_context: n_seq_max     = {seqs}")
    for d in range(devices):
        lines.append(f"llama_kv_cache:      CUDA{d} KV buffer size = {estimate.kv_cache_mib * share:8.2f} MiB")
    lines.append(
        f"llama_kv_cache: size = {estimate.kv_cache_mib:8.2f} MiB ({estimate.kv_cells:6d} cells, {seqs}/{seqs} seqs)"
    )
    for d in range(devices):
        lines.append(f"llama_context:      CUDA{d} compute buffer size = {estimate.compute_mib:8.2f} MiB")
    return "\n".join(lines) + "\n"


# --- generic -------------------------------------------------------------------------------------


def _play_generic(launch: Launch, gpus: Sequence[GpuAtStart]) -> EngineRun:
    budget = read_generic_budget_mib(launch.env)
    footprint = launch.true_footprint_mib if launch.true_footprint_mib is not None else budget
    if footprint is None or not gpus:
        return EngineRun(detail="no GPU memory")
    used: dict[str, float] = {}
    for position, gpu in enumerate(gpus):
        if footprint > gpu.free_mib:
            return _failed(
                f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {_gib(footprint)} GiB. "
                f"GPU {position} has a total capacity of {_gib(gpu.total_mib)} GiB of which "
                f"{_gib(max(gpu.free_mib, 0.0))} GiB is free."
            )
        used[gpu.uuid] = footprint
    lies = launch.true_footprint_mib is not None and budget is not None and footprint > budget
    return EngineRun(used_mib=used, detail="above its budget" if lies else "within its budget")
