"""The llama.cpp (llama-server) memory model, and fitting it into a VRAM budget.

What llama.cpp puts on the GPU, from its model loader and context set-up:

- Weights. ``--n-gpu-layers N`` offloads the last N repeating layers; N = n_layer + 1 also
  offloads the output layer (output.weight, or the token embedding duplicated as output
  when tied). The input layer (token embedding) always stays in host memory.
- KV cache. ``-c`` is the total context, shared by the ``--parallel`` slots (each slot gets
  n_ctx / parallel). Each layer keeps n_ctx cells of head_count_kv x key_length (K) and
  x value_length (V) elements in ``--cache-type-k/-v`` (f16 by default; q8_0 and q4_0 are
  32-element blocks of 34 and 18 bytes). The cache of an offloaded layer lives on the GPU,
  that of a host layer in host memory. Sliding-window layers keep only
  min(n_ctx, window x parallel + ubatch) cells; MLA layers (DeepSeek) one compressed K row
  (kv_lora_rank + rope dims) and no V. The KV size is rounded up to a multiple of 256.
- Compute buffer: the largest set of intermediate f32 tensors alive at once in the graph of
  one micro-batch (``--ubatch-size``, 512 by default), see ``compute_buffer_bytes``.
- CUDA context and library workspaces: a fixed overhead per process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vram_operator.sizing.architecture import KV_LAYER_KINDS, SLIDING_ATTENTION, ModelArchitecture
from vram_operator.sizing.errors import SizingError

if TYPE_CHECKING:
    from vram_operator.sizing.gguf_metadata import GgufModel

MIB = 1024 * 1024
# llama-server's -c default since llama.cpp PR #10136 (0 means the model's training context).
DEFAULT_N_CTX = 4096
DEFAULT_N_UBATCH = 512
KV_PADDING = 256
# CUDA context, cuBLAS handles and workspaces of one llama-server process: roughly 250-450 MiB
# depending on GPU and driver; the upper end so that an estimate does not overcommit.
DEFAULT_OVERHEAD_MIB = 400.0
# When ctx is not fixed by the user, fitting may shrink it down to this (total, all slots).
DEFAULT_MIN_CTX = 2048

# --cache-type-k/-v values: (elements per block, bytes per block).
CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}


@dataclass(frozen=True)
class LlamaCppModel:
    """The shape facts of a model as llama.cpp splits it between GPU and host."""

    n_layer: int
    # Weight bytes of each repeating layer, in layer order.
    layer_bytes: tuple[int, ...]
    # Offloaded with n_gpu_layers > n_layer: output matrix, final norm and other tensors.
    output_bytes: int
    # Token embedding: always in host memory.
    input_bytes: int
    n_embd: int
    n_head: int
    n_vocab: int
    # Per layer; 0 = no KV cache (recurrent or MLP-only layers of hybrids).
    kv_heads: tuple[int, ...]
    key_length: int
    value_length: int
    # Feed-forward width that is live per token: n_ff, or experts used x expert width.
    n_ff_active: int
    kv_lora_rank: int = 0
    rope_dim: int = 0
    sliding_window: int | None = None
    # Per layer True where the layer uses the sliding window; () = none does.
    swa_layers: tuple[bool, ...] = ()
    n_ctx_train: int | None = None

    @classmethod
    def from_gguf(cls, gguf: GgufModel) -> LlamaCppModel:
        """Exact per-layer sizes from the GGUF tensor table."""
        n_ff_active = max(
            gguf.feed_forward_length,
            gguf.expert_feed_forward_length * gguf.expert_used_count,
        )
        return cls(
            n_layer=gguf.block_count,
            layer_bytes=gguf.block_bytes,
            output_bytes=gguf.output_bytes + gguf.other_bytes,
            input_bytes=gguf.token_embd_bytes,
            n_embd=gguf.embedding_length,
            n_head=gguf.head_count,
            n_vocab=gguf.vocab_size,
            kv_heads=gguf.head_count_kv,
            key_length=gguf.key_length,
            value_length=gguf.value_length,
            n_ff_active=n_ff_active,
            kv_lora_rank=gguf.kv_lora_rank,
            rope_dim=gguf.rope_dimension_count,
            sliding_window=gguf.sliding_window,
            swa_layers=gguf.sliding_window_layers,
            n_ctx_train=gguf.context_length,
        )

    @classmethod
    def from_architecture(cls, arch: ModelArchitecture, weights_bytes: int) -> LlamaCppModel:
        """Split an estimated total evenly over the layers (no GGUF file at hand).

        The embedding's share of the bytes is its share of the parameters; the output layer
        is the same size (llama.cpp duplicates a tied embedding as output).
        """
        if weights_bytes <= 0:
            raise SizingError("weights must be positive to size llama.cpp", field="weightsMiB")
        params = arch.total_params()
        embedding = min(weights_bytes // 2, weights_bytes * arch.vocab_size * arch.hidden_size // max(params, 1))
        stored_output = 0 if arch.tie_word_embeddings else embedding
        per_layer = (weights_bytes - embedding - stored_output) // arch.num_layers
        kinds = arch.layer_kinds()
        active_experts = arch.expert_intermediate_size * arch.num_experts_per_tok if arch.is_moe else 0
        return cls(
            n_layer=arch.num_layers,
            layer_bytes=(per_layer,) * arch.num_layers,
            output_bytes=embedding,
            input_bytes=embedding,
            n_embd=arch.hidden_size,
            n_head=arch.num_attention_heads,
            n_vocab=arch.vocab_size,
            kv_heads=tuple(arch.num_kv_heads if kind in KV_LAYER_KINDS else 0 for kind in kinds),
            key_length=arch.head_dim,
            value_length=arch.head_dim,
            n_ff_active=max(arch.intermediate_size, active_experts),
            kv_lora_rank=arch.kv_lora_rank,
            rope_dim=arch.qk_rope_head_dim,
            sliding_window=arch.sliding_window,
            swa_layers=tuple(kind == SLIDING_ATTENTION for kind in kinds) if arch.sliding_window else (),
            n_ctx_train=arch.max_position_embeddings,
        )


@dataclass(frozen=True)
class LlamaCppSettings:
    """llama-server flags that change its memory use. None = let fitting choose."""

    # -c: total context of all slots; None = llama-server's default, 0 = training context.
    n_ctx: int | None = None
    # --parallel: slots sharing n_ctx.
    parallel: int = 1
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    n_ubatch: int = DEFAULT_N_UBATCH
    # --flash-attn: on by default on CUDA ("auto"); off materialises the KQ matrix.
    flash_attn: bool = True
    # --n-gpu-layers; None = all (llama.cpp's 999/-1).
    n_gpu_layers: int | None = None
    overhead_mib: float = DEFAULT_OVERHEAD_MIB


@dataclass(frozen=True)
class LlamaCppEstimate:
    """GPU (and host) memory of one llama-server process at fixed settings."""

    n_gpu_layers: int
    n_ctx: int
    ctx_per_slot: int
    # Padded KV size in cells (what llama.cpp logs as the cache size).
    kv_cells: int
    weights_mib: float
    kv_cache_mib: float
    compute_mib: float
    overhead_mib: float
    host_weights_mib: float
    host_kv_cache_mib: float
    # KV bytes one token adds across all layers (full-attention layers).
    kv_bytes_per_token: int

    @property
    def total_mib(self) -> float:
        return self.weights_mib + self.kv_cache_mib + self.compute_mib + self.overhead_mib


@dataclass(frozen=True)
class LlamaCppFit:
    """Settings that fit a budget, with the memory they use and why."""

    estimate: LlamaCppEstimate
    budget_mib: float
    fits: bool
    # All layers (and the output layer) on the GPU.
    full_offload: bool
    reason: str
    # Recommended llama-server arguments: --n-gpu-layers and -c.
    args: tuple[str, ...]
    warnings: tuple[str, ...]


def estimate_llamacpp(model: LlamaCppModel, settings: LlamaCppSettings) -> LlamaCppEstimate:
    """Memory of llama-server with exactly these settings."""
    _check(settings)
    n_ctx = _resolve_ctx(model, settings.n_ctx)
    total_layers = model.n_layer + 1
    requested = settings.n_gpu_layers
    ngl = total_layers if requested is None or requested < 0 else min(requested, total_layers)
    first_gpu_layer = max(model.n_layer - ngl, 0)
    output_on_gpu = ngl > model.n_layer
    cells = _pad(n_ctx)
    layer_kv = [_layer_kv_bytes(model, il, cells, settings) for il in range(model.n_layer)]
    gpu_layers = range(first_gpu_layer, model.n_layer) if ngl > 0 else range(0)
    gpu_weights = sum(model.layer_bytes[il] for il in gpu_layers) + (model.output_bytes if output_on_gpu else 0)
    all_weights = sum(model.layer_bytes) + model.output_bytes + model.input_bytes
    gpu_kv = sum(layer_kv[il] for il in gpu_layers)
    partial = len(gpu_layers) < model.n_layer
    compute = compute_buffer_bytes(model, n_ctx, settings, output_on_gpu=output_on_gpu)
    if partial:
        # Host layers' large matmuls are run on the GPU one weight at a time (llama.cpp
        # offloads big-batch ops); budget one layer of staging for them.
        compute += max(model.layer_bytes)
    return LlamaCppEstimate(
        n_gpu_layers=ngl,
        n_ctx=n_ctx,
        ctx_per_slot=n_ctx // settings.parallel,
        kv_cells=cells,
        weights_mib=gpu_weights / MIB,
        kv_cache_mib=gpu_kv / MIB,
        compute_mib=compute / MIB,
        overhead_mib=settings.overhead_mib,
        host_weights_mib=(all_weights - gpu_weights) / MIB,
        host_kv_cache_mib=(sum(layer_kv) - gpu_kv) / MIB,
        kv_bytes_per_token=sum(_layer_kv_bytes(model, il, 1, settings, full=True) for il in range(model.n_layer)),
    )


def compute_buffer_bytes(
    model: LlamaCppModel, n_ctx: int, settings: LlamaCppSettings, *, output_on_gpu: bool = True
) -> int:
    """Peak bytes of one micro-batch's intermediate tensors (all f32).

    The allocator reuses memory between graph nodes, so the buffer is a set of
    hidden-state-sized tensors that stay alive (residual stream, norm output, Q/K/V and
    attention output: 6 x ubatch x n_embd) plus the largest of: the gate/up activations
    (2 x ubatch x n_ff), the attention scores without flash attention (ubatch x n_ctx x
    n_head; flash attention never materialises them) and the logits (ubatch x n_vocab,
    only where the output layer is). Check: Llama-3.1-8B Q4_K_M at -c 8192, ubatch 512,
    flash attention off gives 48 + 512 = 560 MiB, the "CUDA0 compute buffer size" llama.cpp
    logs for it.
    """
    ubatch = min(settings.n_ubatch, max(n_ctx, 1))
    f32 = 4
    hidden_states = 6 * ubatch * model.n_embd * f32
    ffn = 2 * ubatch * model.n_ff_active * f32
    scores = 0 if settings.flash_attn else ubatch * _pad(n_ctx) * model.n_head * f32
    logits = ubatch * model.n_vocab * f32 if output_on_gpu else 0
    return hidden_states + max(ffn, scores, logits)


def fit_llamacpp(
    model: LlamaCppModel,
    budget_mib: float,
    settings: LlamaCppSettings | None = None,
    *,
    min_ctx: int = DEFAULT_MIN_CTX,
) -> LlamaCppFit:
    """The most GPU use that fits ``budget_mib``.

    Order: the settings as given; then, if the user did not fix ``n_ctx``, a smaller
    context (down to ``min_ctx``) with every layer offloaded; then, if the user did not fix
    ``n_gpu_layers``, the largest layer count that fits (the rest run on the CPU).
    """
    settings = settings or LlamaCppSettings()
    if not budget_mib > 0:
        raise SizingError(f"budget must be a positive number of MiB, got {budget_mib!r}", field="budgetMiB")
    if min_ctx < 1:
        raise SizingError(f"min_ctx must be positive, got {min_ctx}", field="min_ctx")
    full_layers = model.n_layer + 1
    requested = estimate_llamacpp(model, settings)
    warnings = _ctx_warnings(model, requested)
    if requested.total_mib <= budget_mib:
        return _fit(model, requested, budget_mib, "fits as configured", warnings)

    ctx_fixed = settings.n_ctx is not None
    layers_fixed = settings.n_gpu_layers is not None and 0 <= settings.n_gpu_layers < full_layers
    shrink_floor = min(requested.n_ctx, max(min_ctx, settings.parallel))
    ctx = requested.n_ctx
    if not ctx_fixed:
        smaller = _largest_fitting_ctx(model, settings, budget_mib, low=shrink_floor, high=requested.n_ctx)
        if smaller is not None:
            estimate = estimate_llamacpp(model, replace(settings, n_ctx=smaller))
            why = f"-c reduced from {requested.n_ctx} to {smaller} to fit {budget_mib:.0f} MiB"
            return _fit(model, estimate, budget_mib, why, warnings)
        ctx = shrink_floor
    if not layers_fixed:
        at_ctx = replace(settings, n_ctx=ctx)
        for ngl in range(min(requested.n_gpu_layers, full_layers) - 1, -1, -1):
            estimate = estimate_llamacpp(model, replace(at_ctx, n_gpu_layers=ngl))
            if estimate.total_mib <= budget_mib:
                why = (
                    f"only {ngl} of {full_layers} layers fit {budget_mib:.0f} MiB at -c {ctx}; "
                    "the rest run on the CPU (slower)"
                )
                return _fit(model, estimate, budget_mib, why, [*warnings, why])
    smallest = estimate_llamacpp(
        model, replace(settings, n_ctx=ctx, n_gpu_layers=settings.n_gpu_layers if layers_fixed else 0)
    )
    why = (
        f"needs {requested.total_mib:.0f} MiB as configured and {smallest.total_mib:.0f} MiB at the least "
        f"(-c {smallest.n_ctx}, --n-gpu-layers {smallest.n_gpu_layers}); budget {budget_mib:.0f} MiB"
    )
    return LlamaCppFit(
        estimate=requested,
        budget_mib=budget_mib,
        fits=False,
        full_offload=requested.n_gpu_layers == full_layers,
        reason=why,
        args=_args(requested),
        warnings=tuple(warnings),
    )


def _fit(
    model: LlamaCppModel, estimate: LlamaCppEstimate, budget_mib: float, reason: str, warnings: list[str]
) -> LlamaCppFit:
    return LlamaCppFit(
        estimate=estimate,
        budget_mib=budget_mib,
        fits=True,
        full_offload=estimate.n_gpu_layers == model.n_layer + 1,
        reason=f"{reason}: {estimate.total_mib:.0f} of {budget_mib:.0f} MiB",
        args=_args(estimate),
        warnings=tuple(warnings),
    )


def _largest_fitting_ctx(
    model: LlamaCppModel, settings: LlamaCppSettings, budget_mib: float, *, low: int, high: int
) -> int | None:
    """Binary search over n_ctx (multiples of 256 above ``low``): memory grows with n_ctx."""

    def fits(ctx: int) -> bool:
        return estimate_llamacpp(model, replace(settings, n_ctx=ctx)).total_mib <= budget_mib

    if not fits(low):
        return None
    lo, hi = low, high
    while hi - lo > KV_PADDING:
        mid = (lo + hi) // 2 // KV_PADDING * KV_PADDING
        mid = max(mid, lo + KV_PADDING)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _layer_kv_bytes(
    model: LlamaCppModel, il: int, cells: int, settings: LlamaCppSettings, *, full: bool = False
) -> int:
    """KV bytes of layer ``il`` holding ``cells`` cells; sliding layers hold fewer unless ``full``."""
    if model.kv_lora_rank:
        k_row, v_row = model.kv_lora_rank + model.rope_dim, 0
    else:
        k_row = model.kv_heads[il] * model.key_length
        v_row = model.kv_heads[il] * model.value_length
    if k_row == 0:
        return 0
    if not full and model.swa_layers and model.swa_layers[il] and model.sliding_window:
        cells = min(cells, _pad(model.sliding_window * settings.parallel + settings.n_ubatch))
    return cells * (_row_bytes(k_row, settings.cache_type_k) + _row_bytes(v_row, settings.cache_type_v))


def _row_bytes(elements: int, cache_type: str) -> int:
    block_elements, block_bytes = CACHE_TYPES[cache_type]
    return -(-elements // block_elements) * block_bytes


def _pad(n_ctx: int) -> int:
    return -(-n_ctx // KV_PADDING) * KV_PADDING


def _resolve_ctx(model: LlamaCppModel, n_ctx: int | None) -> int:
    if n_ctx is None:
        return DEFAULT_N_CTX
    if n_ctx == 0:
        if model.n_ctx_train is None:
            raise SizingError("-c 0 asks for the training context, which the model does not state", field="n_ctx")
        return model.n_ctx_train
    return n_ctx


def _check(settings: LlamaCppSettings) -> None:
    for name in ("cache_type_k", "cache_type_v"):
        value = getattr(settings, name)
        if value not in CACHE_TYPES:
            raise SizingError(f"unknown llama.cpp cache type {value!r} ({', '.join(CACHE_TYPES)})", field=name)
    if settings.cache_type_v not in ("f32", "f16", "bf16") and not settings.flash_attn:
        raise SizingError("a quantized V cache needs flash attention in llama.cpp", field="cache_type_v")
    if settings.n_ctx is not None and settings.n_ctx < 0:
        raise SizingError(f"n_ctx must not be negative, got {settings.n_ctx}", field="n_ctx")
    if settings.parallel < 1:
        raise SizingError(f"parallel must be at least 1, got {settings.parallel}", field="parallel")
    if settings.n_ubatch < 1:
        raise SizingError(f"n_ubatch must be at least 1, got {settings.n_ubatch}", field="n_ubatch")
    if settings.overhead_mib < 0:
        raise SizingError(f"overhead must not be negative, got {settings.overhead_mib}", field="overhead_mib")


def _ctx_warnings(model: LlamaCppModel, estimate: LlamaCppEstimate) -> list[str]:
    if model.n_ctx_train is not None and estimate.ctx_per_slot > model.n_ctx_train:
        return [f"context per slot {estimate.ctx_per_slot} exceeds the model's training context {model.n_ctx_train}"]
    return []


def _args(estimate: LlamaCppEstimate) -> tuple[str, ...]:
    return ("--n-gpu-layers", str(estimate.n_gpu_layers), "-c", str(estimate.n_ctx))
