"""What an engine says about its own memory at start, read from its log, and how far the estimate is
from it (pure: the log text comes in, figures come out).

vLLM (0.10 and later, the V1 engine) prints, per worker, "Model loading took X GiB [memory] and S
seconds" and "Available KV cache memory: X GiB"; once, "GPU KV cache size: N tokens" and "Maximum
concurrency for L tokens per request: Cx" (two lines up to 0.11, one line joined by a comma later;
counts with thousands separators since 0.10) and "vLLM API server version V". Older engines wrote
"Loading model weights took X GB" (GiB despite the unit). llama.cpp prints its buffers per device:
"[llm_]load_tensors: CUDA0 [model ]buffer size = X MiB", "llama_kv_cache[_init|_unified]: CUDA0 KV
buffer size = X MiB", "llama_kv_cache[_unified]: size = X MiB (N cells, L layers, S/S seqs)" (or, in
older builds, "KV self size = X MiB" and "n_ctx = N"), "n_seq_max = S" and "build: B (hash)".

Figures are per GPU, like `status.estimate`: with tensor parallelism each rank prints its own share and
the largest is kept (the binding rank).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vram_operator.api.inference_server import EstimateStatus

MIB_PER_GIB = 1024.0
# Devices whose buffers are host memory, not GPU memory.
_HOST_DEVICES = re.compile(r"CPU|Host", re.IGNORECASE)
_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"

_VLLM_WEIGHTS = re.compile(r"(?:Model loading took|Loading model weights took) ([0-9.]+) (?:GiB|GB)")
_VLLM_KV_MEMORY = re.compile(r"Available KV cache memory: ([0-9.]+) GiB")
_VLLM_KV_TOKENS = re.compile(r"GPU KV cache size: " + _NUMBER + " tokens")
_VLLM_CONCURRENCY = re.compile(r"Maximum concurrency for " + _NUMBER + r" tokens per request: ([0-9.]+)x")
_VLLM_VERSION = re.compile(r"vLLM API server version (\S+)")

_LLAMA_WEIGHTS = re.compile(r"load_tensors:\s+(\S+) (?:model )?buffer size =\s+([0-9.]+) MiB")
_LLAMA_KV_BUFFER = re.compile(r"llama_kv_cache\w*:\s+(\S+) KV buffer size =\s+([0-9.]+) MiB")
_LLAMA_KV_SIZE = re.compile(r"llama_kv_cache\w*: size =\s+([0-9.]+) MiB \(\s*([0-9]+) cells")
_LLAMA_KV_SELF = re.compile(r"KV self size\s+=\s+([0-9.]+) MiB")
_LLAMA_N_CTX = re.compile(r"llama_(?:new_context_with_model|context): n_ctx\s+=\s+([0-9]+)")
_LLAMA_SEQS = re.compile(r"n_seq_max\s+=\s+([0-9]+)")
_LLAMA_BUILD = re.compile(r"^build: ([0-9]+) \((\w+)\)", re.MULTILINE)


@dataclass(frozen=True)
class EngineFigures:
    """What the engine reported; None where its log did not say."""

    weights_mib: float | None = None
    kv_cache_mib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    engine_version: str = ""

    @property
    def empty(self) -> bool:
        return self.weights_mib is None and self.kv_cache_mib is None and self.kv_cache_tokens is None

    @property
    def complete(self) -> bool:
        """Weights and the KV pool are known: the engine finished sizing itself."""
        return self.weights_mib is not None and (self.kv_cache_mib is not None or self.kv_cache_tokens is not None)


def read_engine_log(engine: str, text: str) -> EngineFigures:
    """The figures an engine's start-up log holds (empty for a generic server or an unknown format)."""
    if engine == "vllm":
        return _read_vllm(text)
    if engine == "llamacpp":
        return _read_llamacpp(text)
    return EngineFigures()


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def _read_vllm(text: str) -> EngineFigures:
    weights = [float(m.group(1)) * MIB_PER_GIB for m in _VLLM_WEIGHTS.finditer(text)]
    kv = [float(m.group(1)) * MIB_PER_GIB for m in _VLLM_KV_MEMORY.finditer(text)]
    tokens = [_count(m.group(1)) for m in _VLLM_KV_TOKENS.finditer(text)]
    concurrency = [float(m.group(2)) for m in _VLLM_CONCURRENCY.finditer(text)]
    version = _VLLM_VERSION.search(text)
    return EngineFigures(
        weights_mib=round(max(weights), 1) if weights else None,
        kv_cache_mib=round(max(kv), 1) if kv else None,
        kv_cache_tokens=min(tokens) if tokens else None,
        max_concurrency=min(concurrency) if concurrency else None,
        engine_version=version.group(1) if version else "",
    )


def _per_device_max(pattern: re.Pattern[str], text: str) -> float | None:
    per_device: dict[str, float] = {}
    for found in pattern.finditer(text):
        device = found.group(1)
        if not _HOST_DEVICES.search(device):
            per_device[device] = per_device.get(device, 0.0) + float(found.group(2))
    return round(max(per_device.values()), 1) if per_device else None


def _read_llamacpp(text: str) -> EngineFigures:
    weights = _per_device_max(_LLAMA_WEIGHTS, text)
    kv = _per_device_max(_LLAMA_KV_BUFFER, text)
    sized = _LLAMA_KV_SIZE.search(text)
    if kv is None and (self_size := _LLAMA_KV_SELF.search(text) or sized) is not None:
        kv = float(self_size.group(1))
    n_ctx = _LLAMA_N_CTX.search(text)
    tokens = int(sized.group(2)) if sized else (int(n_ctx.group(1)) if n_ctx else None)
    seqs = _LLAMA_SEQS.search(text)
    build = _LLAMA_BUILD.search(text)
    return EngineFigures(
        weights_mib=weights,
        kv_cache_mib=kv,
        kv_cache_tokens=tokens,
        max_concurrency=float(seqs.group(1)) if seqs else None,
        engine_version=f"b{build.group(1)}" if build else "",
    )


@dataclass(frozen=True)
class FigureError:
    """One figure the engine reported against the estimate: error = estimate / reported - 1."""

    figure: str  # the status field, e.g. "kvCacheMiB"
    estimated: float
    reported: float

    @property
    def error(self) -> float:
        return self.estimated / self.reported - 1.0

    def describe(self) -> str:
        return f"{self.figure}: estimated {self.estimated:g}, the engine reported {self.reported:g} ({self.error:+.1%})"


def figure_errors(figures: EngineFigures, estimate: EstimateStatus) -> list[FigureError]:
    """The estimate against each figure the engine reported (figures it did not report, or reported as
    zero, have no error)."""
    pairs: tuple[tuple[str, float, float | int | None], ...] = (
        ("weightsMiB", estimate.weights_mib, figures.weights_mib),
        ("kvCacheMiB", estimate.kv_cache_mib, figures.kv_cache_mib),
        ("kvCacheTokens", float(estimate.kv_cache_tokens), figures.kv_cache_tokens),
    )
    return [FigureError(name, estimated, float(reported)) for name, estimated, reported in pairs if reported]


def worst_error(errors: list[FigureError], threshold: float) -> FigureError | None:
    """The figure furthest off, when it is off by more than `threshold` (a ratio, 0.10 = 10%)."""
    worst = max(errors, key=lambda e: abs(e.error), default=None)
    return worst if worst is not None and abs(worst.error) > threshold else None
