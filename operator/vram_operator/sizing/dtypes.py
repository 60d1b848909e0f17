"""Bytes per parameter and per KV-cache element, by dtype and quantization method."""

from __future__ import annotations

from vram_operator.sizing.architecture import ModelArchitecture
from vram_operator.sizing.errors import SizingError

DTYPE_BYTES: dict[str, int] = {
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float32": 4,
    "float": 4,
}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}

# Effective bits per weight of the quantized linear layers, scales and zero points included.
QUANT_BITS: dict[str, float] = {
    "fp8": 8.0,  # one byte per weight, per-tensor/per-channel scales are negligible
    "int8": 8.0,
    "w8a8": 8.0,
    "awq": 4.0 + 16 / 128 + 4 / 128,  # 4-bit weights, fp16 scale + 4-bit zero per group of 128
    "gptq": 4.0 + 16 / 128 + 4 / 128,  # same packing as AWQ (g_idx is negligible)
    "gptq-8bit": 8.0 + 16 / 128 + 8 / 128,
    "mxfp4": 4.0 + 8 / 32,  # e2m1 values with one e8m0 scale per 32
    "nvfp4": 4.0 + 8 / 16,  # e2m1 values with one fp8 scale per 16
    "bitsandbytes": 4.0 + 32 / 64,  # nf4 with an fp32 absmax per block of 64
    "bitsandbytes-8bit": 8.0 + 32 / 64,
}
# llama.cpp formats: bits per weight of the block formats; *_K_S/M/L are mixes, given as the
# file-wide average llama.cpp reports for a Llama-class model (approximate, +-0.1 bit).
GGUF_BITS: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_XXS": 3.06,
    "Q2_K": 3.35,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_S": 1.56,
}
_QUANT_ALIASES = {
    "compressed-tensors": "int8",
    "fp8_e4m3": "fp8",
    "modelopt": "fp8",
    "fbgemm_fp8": "fp8",
    "awq_marlin": "awq",
    "gptq_marlin": "gptq",
    "4bit": "awq",
    "int4": "awq",
    "bnb": "bitsandbytes",
    "modelopt_fp4": "nvfp4",
}
KV_CACHE_DTYPE_BYTES: dict[str, int | None] = {
    "auto": None,  # same as the model dtype
    "bfloat16": 2,
    "float16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
    "fp8_ds_mla": 1,
}


def resolve_dtype(dtype: str | None, torch_dtype: str | None) -> str:
    """vLLM's --dtype: "auto" takes the checkpoint dtype, but float32 checkpoints run in bfloat16."""
    name = (dtype or "auto").lower()
    name = _DTYPE_ALIASES.get(name, name)
    if name == "auto":
        config = _DTYPE_ALIASES.get((torch_dtype or "bfloat16").lower(), (torch_dtype or "bfloat16").lower())
        return config if config in ("bfloat16", "float16") else "bfloat16"
    if name not in DTYPE_BYTES:
        raise SizingError(f"unknown dtype {dtype!r} (auto, bfloat16, float16, float32)", field="dtype")
    return name


def dtype_bytes(dtype: str | None, torch_dtype: str | None = None) -> int:
    return DTYPE_BYTES[resolve_dtype(dtype, torch_dtype)]


def normalize_quantization(quantization: str | None) -> str | None:
    """Canonical quantization name; None for unquantized. Raises SizingError when unknown."""
    if quantization is None:
        return None
    name = quantization.strip()
    if name.lower() in ("", "none", "null"):
        return None
    if name.lower().startswith("gguf"):
        kind = name[4:].lstrip("-_:").upper()
        if kind not in GGUF_BITS:
            raise SizingError(f"unknown GGUF quantization {quantization!r}", field="quantization")
        return f"gguf-{kind}"
    lowered = name.lower()
    lowered = _QUANT_ALIASES.get(lowered, lowered)
    if lowered not in QUANT_BITS:
        raise SizingError(f"unknown quantization {quantization!r}", field="quantization")
    return lowered


def bits_per_weight(quantization: str | None, dtype: str | None = "bfloat16") -> float:
    """Bits per quantized weight; the dtype's bits when unquantized."""
    name = normalize_quantization(quantization)
    if name is None:
        return 8.0 * dtype_bytes(dtype)
    if name.startswith("gguf-"):
        return GGUF_BITS[name[5:]]
    return QUANT_BITS[name]


def kv_cache_dtype_bytes(kv_cache_dtype: str | None, model_dtype: str) -> int:
    """Bytes per KV element: "auto" follows the model dtype, fp8 variants are one byte."""
    name = (kv_cache_dtype or "auto").lower()
    if name not in KV_CACHE_DTYPE_BYTES:
        raise SizingError(f"unknown kv cache dtype {kv_cache_dtype!r}", field="kvCacheDtype")
    size = KV_CACHE_DTYPE_BYTES[name]
    return DTYPE_BYTES[resolve_dtype(model_dtype, None)] if size is None else size


def weights_bytes_from_params(
    params_b: float,
    dtype: str | None,
    quantization: str | None,
    unquantized_params_b: float = 0.0,
) -> int:
    """Bytes of weights for `params_b` billion parameters.

    `unquantized_params_b` of them (embeddings, lm_head, norms: AWQ/GPTQ/FP8 leave these in
    the model dtype) are counted at the dtype's size. GGUF bits are file-wide averages, so
    nothing is kept apart for them.
    """
    if params_b < 0 or unquantized_params_b < 0:
        raise SizingError("parameter count must not be negative", field="paramsB")
    name = normalize_quantization(quantization)
    full_bytes = dtype_bytes(dtype)
    if name is None:
        return round(params_b * 1e9 * full_bytes)
    kept = 0.0 if name.startswith("gguf-") else min(unquantized_params_b, params_b)
    quantized = params_b - kept
    return round(quantized * 1e9 * bits_per_weight(name) / 8 + kept * 1e9 * full_bytes)


# MXFP4 MoE (gpt-oss): each expert's gate/up (2I x H) and down (H x I) projections are packed 4-bit
# values (two per byte) plus one e8m0 scale byte per block of 32 values, with bf16 biases; the
# router stays in bf16. vLLM's fused-MoE kernels need each rank's share of the intermediate size
# padded to a multiple of 128 and the hidden size to 256 (Marlin, used where the GPU has no FP4
# units; the Hopper and Blackwell kernels pad about as much), so 2880-wide gpt-oss experts load as
# 2944 x 3072 on one GPU and as 1536 x 3072 per rank at tensor parallel 2.
MXFP4_BLOCK = 32
MXFP4_INTERMEDIATE_ALIGN = 128
MXFP4_HIDDEN_ALIGN = 256
_BF16_BYTES = 2


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def mxfp4_expert_bytes(arch: ModelArchitecture, tensor_parallel_size: int = 1, *, padded: bool = True) -> int:
    """Bytes of the MoE experts and routers of an MXFP4 model on one of `tensor_parallel_size` ranks.

    `padded=False` is the checkpoint's own layout (what its safetensors hold, all ranks together
    at tensor parallel 1); `padded=True` what vLLM allocates.
    """
    inner = -(-arch.expert_intermediate_size // tensor_parallel_size)
    hidden = arch.hidden_size
    if padded:
        inner = _round_up(inner, MXFP4_INTERMEDIATE_ALIGN)
        hidden = _round_up(hidden, MXFP4_HIDDEN_ALIGN)
    values = 3 * inner * hidden
    per_expert = values // 2 + values // MXFP4_BLOCK + 2 * inner * _BF16_BYTES + hidden * _BF16_BYTES
    router = (arch.hidden_size + 1) * arch.num_experts * _BF16_BYTES
    return arch.num_moe_layers * (arch.num_experts * per_expert + router)


def mxfp4_padding_bytes_per_rank(arch: ModelArchitecture, tensor_parallel_size: int) -> int:
    """What vLLM's padding adds on one rank to that rank's share of the MXFP4 checkpoint."""
    if not arch.is_moe:
        return 0
    checkpoint = mxfp4_expert_bytes(arch, padded=False)
    return mxfp4_expert_bytes(arch, tensor_parallel_size) - checkpoint // tensor_parallel_size


def weights_bytes_for_architecture(arch: ModelArchitecture, dtype: str | None, quantization: str | None) -> int:
    """Weights bytes from the architecture's shapes, quantizing only what the method quantizes.

    MXFP4 (gpt-oss) quantizes only the MoE experts (attention, embeddings, router and LM head
    stay in the model dtype); the other methods quantize every linear layer of the decoder
    blocks. Vision towers stay in the model dtype.
    """
    parts = arch.param_breakdown()
    name = normalize_quantization(quantization or arch.quantization)
    resolved = resolve_dtype(dtype, arch.torch_dtype)
    if name == "mxfp4" and arch.is_moe:
        rest = parts.total - parts.experts
        return mxfp4_expert_bytes(arch, padded=False) + weights_bytes_from_params(rest / 1e9, resolved, None)
    if name == "mxfp4":
        quantized = parts.experts
    elif name is not None and name.startswith("gguf-"):
        quantized = parts.total
    else:
        quantized = parts.linear
    return weights_bytes_from_params(
        parts.total / 1e9, resolved, name, unquantized_params_b=(parts.total - quantized) / 1e9
    )
