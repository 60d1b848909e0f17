"""What one GPU holds once vLLM has loaded a model ("Model loading took N GiB"), beyond its share of the checkpoint.

- MXFP4 experts padded to the MoE kernels' alignment (sizing/dtypes.py), per rank;
- the rotary embedding's cos/sin tables, in the model dtype, whole on every rank: one row per
  position the (scaled) table covers. Small for most models (32 MiB for Llama 3.1's 128k
  positions) but 2.5 GiB for Llama 4 Scout's 10M positions and half a GiB for Gemma 3's x8
  linear scaling.
"""

from __future__ import annotations

from vram_operator.sizing import vllm
from vram_operator.sizing.architecture import ModelArchitecture
from vram_operator.sizing.dtypes import dtype_bytes, mxfp4_padding_bytes_per_rank, normalize_quantization


def loaded_bytes_per_rank(
    checkpoint_bytes: int,
    arch: ModelArchitecture,
    tensor_parallel_size: int,
    *,
    dtype: str | None,
    quantization: str | None,
) -> int:
    """One rank's share of `checkpoint_bytes` plus what vLLM allocates next to it on that rank."""
    per_rank = vllm.weights_per_rank(checkpoint_bytes, arch, tensor_parallel_size)
    if normalize_quantization(quantization or arch.quantization) == "mxfp4":
        per_rank += mxfp4_padding_bytes_per_rank(arch, tensor_parallel_size)
    return per_rank + arch.rope_cache_elements * dtype_bytes(dtype, arch.torch_dtype)
