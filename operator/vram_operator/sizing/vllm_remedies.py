"""When a vLLM model does not fit one GPU: what it needs per GPU, and what would make it fit.

Three ways out, each checked with the same start-up arithmetic (sizing/vllm.py): split it over
more GPUs (the smallest tensor-parallel size that fits), serve shorter requests (the longest
max_model_len that fits), or load it quantized (the first smaller format that fits). Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import ModelArchitecture
from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.pipeline import binding_stage_profile

# vLLM accepts tensor-parallel sizes up to the attention heads; none of the catalog's models needs more.
MAX_TENSOR_PARALLEL = 64
# The shortest max_model_len worth suggesting (the CRD's minimum).
MIN_MODEL_LEN = 16


@dataclass(frozen=True)
class VllmShape:
    """One way to run a model: its architecture, weights of all ranks and engine settings, on one GPU."""

    arch: ModelArchitecture
    weights_bytes: int
    settings: vllm.VllmSettings
    gpu_total_mib: float
    gpu_name: str = ""
    source: str = "config"
    # Pipeline stages (each on tensor_parallel_size GPUs): the profile is the binding stage's.
    pipeline_parallel_size: int = 1
    quantization: str | None = None
    # weights_bytes is what one stage loads (a user's weightsMiB), not a checkpoint's size.
    exact_weights: bool = False

    def profile(self) -> vllm.VllmProfile:
        return binding_stage_profile(
            self.arch,
            self.weights_bytes,
            self.settings,
            self.gpu_total_mib,
            stages=self.pipeline_parallel_size,
            gpu_name=self.gpu_name,
            source=self.source,
            quantization=self.quantization,
            exact_weights=self.exact_weights,
        )

    def required_mib(self) -> float:
        """Memory vLLM holds per GPU for one request of max_model_len (CUDA graphs outside its share included)."""
        return vllm.reservation_for_tokens(self.profile(), 0)

    def fits(self, limit: float) -> bool:
        """Whether vLLM starts at a utilization of at most `limit` (one full-length request)."""
        try:
            return vllm.min_utilization(self.profile(), self.gpu_total_mib) <= limit
        except SizingError:  # a tensor-parallel size or length this model cannot take
            return False

    def with_tensor_parallel(self, size: int) -> VllmShape:
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, tensor_parallel_size=size))

    def with_weights(self, weights_bytes: int) -> VllmShape:
        return dataclasses.replace(self, weights_bytes=weights_bytes)

    def with_model_len(self, tokens: int) -> VllmShape:
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, max_model_len=tokens))


@dataclass(frozen=True)
class Remedies:
    """What a model needs per GPU where it does not fit, and the nearest settings that fit (None: none does)."""

    required_mib_per_gpu: float
    max_model_len_now: int
    gpu_total_mib: float
    limit: float
    tensor_parallel_size: int | None
    max_model_len: int | None
    quantization: str | None

    def lines(self) -> tuple[str, ...]:
        """One sentence per way out, for humans."""
        at = f"at utilization <= {self.limit:.2f}"
        lines = []
        if self.tensor_parallel_size is not None:
            lines.append(f"fits with tensor parallel size {self.tensor_parallel_size} ({at} on each GPU)")
        if self.max_model_len is not None:
            lines.append(f"fits with maxModelLen {self.max_model_len} ({at})")
        if self.quantization is not None:
            lines.append(f"fits quantized as {self.quantization} ({at})")
        if not lines:
            lines.append("no larger tensor parallel size, shorter maxModelLen or quantization makes it fit this GPU")
        return tuple(lines)


def remedies(shape: VllmShape, limit: float, quantized_bytes: Mapping[str, int]) -> Remedies:
    """What would make `shape` fit at a utilization of at most `limit`.

    `quantized_bytes` gives the weights of all ranks in each quantization worth trying, smallest last.
    """
    return Remedies(
        required_mib_per_gpu=shape.required_mib(),
        max_model_len_now=shape.profile().max_model_len,
        gpu_total_mib=shape.gpu_total_mib,
        limit=limit,
        tensor_parallel_size=smallest_tensor_parallel(shape, limit),
        max_model_len=longest_model_len(shape, limit),
        quantization=next(
            (name for name, size in quantized_bytes.items() if shape.with_weights(size).fits(limit)), None
        ),
    )


def smallest_tensor_parallel(shape: VllmShape, limit: float) -> int | None:
    """The smallest tensor-parallel size above the current one at which each GPU fits."""
    start = shape.settings.tensor_parallel_size + 1
    top = min(MAX_TENSOR_PARALLEL, shape.arch.num_attention_heads)
    return next((tp for tp in range(start, top + 1) if shape.with_tensor_parallel(tp).fits(limit)), None)


def longest_model_len(shape: VllmShape, limit: float) -> int | None:
    """The longest max_model_len below the current one that fits; None when not even the shortest does."""
    current = shape.profile().max_model_len
    if current <= MIN_MODEL_LEN or not shape.with_model_len(MIN_MODEL_LEN).fits(limit):
        return None
    low, high = MIN_MODEL_LEN, current - 1
    while low < high:
        middle = (low + high + 1) // 2
        if shape.with_model_len(middle).fits(limit):
            low = middle
        else:
            high = middle - 1
    return low
