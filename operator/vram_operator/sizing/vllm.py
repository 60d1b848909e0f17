"""vLLM's own start-up memory arithmetic, by engine version.

At start-up vLLM (1) checks that the free memory covers ``utilization x total`` (V1 since
0.9), (2) loads the weights, (3) runs one dummy forward pass of ``max_num_batched_tokens``
tokens plus a dummy sampler pass over ``max_num_seqs`` rows of logits and records the
torch peak ("activation") and the memory allocated outside torch (NCCL, cuBLAS), (4) gives
the KV cache ``utilization x total - (weights + activation + non-torch [+ CUDA graphs])``,
cut into blocks of ``block_size`` tokens, and (5) refuses to start when there is no room for
a block or for one request of ``max_model_len``. This module reproduces those steps from the
architecture, without a GPU; everything here is pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from vram_operator.sizing.architecture import (
    FULL_ATTENTION,
    KV_LAYER_KINDS,
    SLIDING_ATTENTION,
    STATE_LAYER_KINDS,
    ModelArchitecture,
)
from vram_operator.sizing.dtypes import dtype_bytes, kv_cache_dtype_bytes, resolve_dtype
from vram_operator.sizing.errors import SizingError

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_ENGINE_VERSION = "0.19.0"
DEFAULT_BLOCK_SIZE = 16


@dataclass(frozen=True, order=True)
class EngineVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str | None) -> EngineVersion:
        """ "0.19.0", "v0.12", "0.11.0+cu118", "~0.7.x (V0)" -> the leading major.minor[.patch].

        "nightly", "latest" and "main" mean the newest release this model knows (with a warning).
        """
        if text is not None and text.strip().lower() in UNRELEASED_NAMES:
            return NEWEST_KNOWN_VERSION
        match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or DEFAULT_ENGINE_VERSION)
        if match is None:
            raise SizingError(
                f"engineVersion {text!r} is not a version like 0.19.0 (or nightly)", field="engineVersion"
            )
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# Version facts (vLLM release history).
V1_ENGINE_SINCE = EngineVersion(0, 8)  # V1 became the default engine
STARTUP_CHECK_SINCE = EngineVersion(0, 9)  # gpu_worker.init_device free-memory check
BASELINE_PROFILING_SINCE = EngineVersion(0, 6, 4)  # before: others' memory counted as our peak
HYBRID_KV_SINCE = EngineVersion(0, 10)  # hybrid KV cache manager: sliding/mamba groups
CUDAGRAPH_ESTIMATE_SINCE = EngineVersion(0, 14)  # estimated and logged (opt-in subtraction)
CUDAGRAPH_SUBTRACT_SINCE = EngineVersion(0, 21)  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS on
# Model Runner V2 is the default for dense (non-MoE, non-hybrid) models (vllm PR #44443). Its
# profile run builds the dummy batch without sampling parameters, so the sampler returns before
# the fp32 upcast and the top-k/top-p sort: the warm-up holds only the logits in the model dtype
# (vllm PR #57926 measures the difference).
MODEL_RUNNER_V2_SINCE = EngineVersion(0, 28)
# The newest release (on PyPI) whose memory behaviour the facts above describe; later ones are
# assumed to behave like it.
NEWEST_KNOWN_VERSION = EngineVersion(0, 33)
UNRELEASED_NAMES = frozenset({"nightly", "latest", "main"})


def version_warnings(text: str | None) -> tuple[str, ...]:
    """A warning when the version is newer than this model knows: whose behaviour is assumed instead."""
    version = EngineVersion.parse(text)
    newest = NEWEST_KNOWN_VERSION
    if text is not None and text.strip().lower() in UNRELEASED_NAMES:
        return (f"engineVersion {text} is not a release: assuming vLLM {newest.major}.{newest.minor} behaviour",)
    if (version.major, version.minor) <= (newest.major, newest.minor):
        return ()
    return (
        f"engineVersion {text} is newer than the newest vLLM this memory model knows "
        f"({newest.major}.{newest.minor}): assuming {newest.major}.{newest.minor} behaviour",
    )


# CUDA graphs, per captured batch size: a part per piece (one per layer, plus one: piecewise graphs)
# and, from 0.11 (FULL_AND_PIECEWISE the default cudagraph mode, vllm PR #25444), a part for the full
# decode graph. Least squares over the logs of dense models that print "Graph capturing finished ...
# took N GiB" (37 at 0.19 on H100, 22 models, 51 capture sizes each): 300 MiB + 17.3 MiB per piece in
# all at 0.19; the 0.10.1 logs (Qwen2-7B, A100, TP 1: 0.50 GiB) match the per-piece part alone.
# `python benchmarks/estimator_calibration.py` gives the leave-one-model-out errors (docs/sizing-vllm.md).
CUDAGRAPH_MIB_PER_SIZE = 5.9
CUDAGRAPH_MIB_PER_PIECE = 0.34
FULL_CUDAGRAPHS_SINCE = EngineVersion(0, 11)


@dataclass(frozen=True)
class ProfileConstants:
    """What the code cannot give, measured from start-up logs, per range of versions (MiB, bytes).

    The benchmark (benchmarks/estimator_calibration.py) refits them leaving one model out.
    """

    # Dummy sampler pass: bytes alive per logit element (rows x vocab) at its peak.
    sampler_bytes_per_logit: float
    # Memory outside torch allocated while profiling: workspaces at TP 1 (GPUs >= 70 GiB and
    # smaller ones), NCCL / custom all-reduce buffers per rank at TP > 1.
    non_torch_tp1_mib: float
    non_torch_tp1_small_gpu_mib: float
    non_torch_tp_many_mib: float
    # CUDA graphs per captured batch size: per graph, and per piece.
    cuda_graph_mib_per_size: float = CUDAGRAPH_MIB_PER_SIZE
    cuda_graph_mib_per_piece: float = CUDAGRAPH_MIB_PER_PIECE


# V0 (sampler with logprobs over max_num_seqs rows): its one log (0.7, RTX 4060, 256 rows) implies
# 38.4 B per logit, the figure of the 0.11-0.16 sampler below; non-torch 0.03 GiB at TP 1 (1 row, the
# only consumer-card log with a non-torch line); the 400 MiB at TP > 1 is not measured (0 rows).
V0_CONSTANTS = ProfileConstants(38.5, 31.0, 31.0, 400.0)
# Non-torch at TP 1 on GPUs below 70 GiB before 0.18: the RTX 4060 log's 0.03 GiB (1 row).
SMALL_GPU_NON_TORCH_TP1_MIB = 31.0
# 0.8-0.10: the sampler warm-up costs 10.2 B per logit, the median of what the KV pools of the 0.10.1
# logs imply (4 logs, 2 models, A100: 4.7-27.3; they print no activation line, so this is requested -
# weights - KV - non-torch). Non-torch as logged from 0.11 (no earlier V1 log prints it).
HEAVY_SAMPLER_SINCE = EngineVersion(0, 11)
MR1_010_CONSTANTS = ProfileConstants(10.2, 133.0, SMALL_GPU_NON_TORCH_TP1_MIB, 553.0)
# Model Runner V1, 0.11-0.16: the dummy sampler pass upcasts, sorts for top-k/top-p and applies the
# penalties over max_num_seqs rows: 38.5 B per logit (median of 14 logs of 9 models, 0.11-0.16 on
# H100, vocabularies of 128K-201K). Non-torch 0.13 GiB at TP 1 (12 logs, 8 models), 0.54 GiB per
# rank at TP 2 (2 logs). Counts: `python benchmarks/estimator_calibration.py`.
MR1_EARLY_CONSTANTS = ProfileConstants(38.5, 133.0, SMALL_GPU_NON_TORCH_TP1_MIB, 553.0)
# From 0.17 the sampler warm-up costs 15 B per logit (48 logs of 29 models, 0.17-0.19, H100); from
# 0.18 non-torch is 0.25 GiB at TP 1 (33 logs, 24 models; no log of a smaller GPU) and 2.09 GiB per
# rank at TP >= 2 (15 logs, 10 models: NCCL / custom all-reduce buffers). Where between the logged
# versions each change happened is set by the Qwen3-14B logs of 0.15-0.18 (one per version).
LIGHTER_SAMPLER_SINCE = EngineVersion(0, 17)
NON_TORCH_GROWS_SINCE = EngineVersion(0, 18)
MR1_LATE_CONSTANTS = ProfileConstants(15.0, 256.0, 256.0, 2140.0)
# Model Runner V2 (dense models): logits in the model dtype only (2 B, from the code).
MR2_SAMPLER_BYTES_PER_LOGIT = 2.0
LARGE_GPU_MIB = 70 * 1024  # vLLM's own threshold for its large-GPU batch defaults


def uses_model_runner_v2(version: EngineVersion, arch: ModelArchitecture) -> bool:
    """MR V2 runs dense models by default from 0.28; MoE and hybrid (mamba) models stay on V1."""
    hybrid = any(kind in STATE_LAYER_KINDS for kind in arch.layer_kinds())
    return version >= MODEL_RUNNER_V2_SINCE and not arch.is_moe and not hybrid


def profile_constants(version: EngineVersion, arch: ModelArchitecture) -> ProfileConstants:
    """The measured constants for this version (and this model's model runner)."""
    if version < V1_ENGINE_SINCE:
        return V0_CONSTANTS
    if version < HEAVY_SAMPLER_SINCE:
        return MR1_010_CONSTANTS
    if version < LIGHTER_SAMPLER_SINCE:
        return MR1_EARLY_CONSTANTS
    if version < NON_TORCH_GROWS_SINCE:
        return replace(MR1_EARLY_CONSTANTS, sampler_bytes_per_logit=MR1_LATE_CONSTANTS.sampler_bytes_per_logit)
    if uses_model_runner_v2(version, arch):
        return replace(MR1_LATE_CONSTANTS, sampler_bytes_per_logit=MR2_SAMPLER_BYTES_PER_LOGIT)
    return MR1_LATE_CONSTANTS


# Hidden-sized tensors alive in a decoder layer next to the MLP/attention intermediates
# (residual, normed input, output and one temporary).
HIDDEN_COPIES = 4
# Fused-MoE kernels process at most this many tokens at once (VLLM_FUSED_MOE_CHUNK_SIZE).
FUSED_MOE_CHUNK_TOKENS = 32768
# Fused-MoE workspaces kept between calls in buffers shared by all layers (0.11's modular kernel).
MOE_SHARED_WORKSPACE_SINCE = EngineVersion(0, 11)
# The attention kernels need KV blocks in multiples of this many tokens (page alignment for
# mamba hybrids).
KERNEL_BLOCK_ALIGNMENT = 16


@dataclass(frozen=True)
class VllmSettings:
    """Engine arguments that change memory. None = vLLM's default for the version and GPU."""

    engine_version: str = DEFAULT_ENGINE_VERSION
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    dtype: str = "auto"
    # "serve" (OpenAI server) or "llm" (the offline LLM class): their batch defaults differ.
    usage_context: str = "serve"
    enforce_eager: bool = False
    # Override VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS; None = the version's default.
    subtract_cuda_graphs: bool | None = None
    # VLLM_ALLOW_LONG_MAX_MODEL_LEN: accept a max_model_len beyond the model's context.
    allow_long_max_model_len: bool = False


@dataclass(frozen=True)
class BatchDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int


def batch_defaults(
    version: EngineVersion, max_model_len: int, gpu_total_mib: float, gpu_name: str = "", usage_context: str = "serve"
) -> BatchDefaults:
    """vLLM's defaults for max_num_seqs / max_num_batched_tokens.

    V1: GPUs with >= 70 GiB (except A100) get 1024 seqs and 8192 tokens for `vllm serve`
    (16384 for the LLM class); smaller GPUs 256 seqs and 2048 tokens (8192 for LLM).
    V0: 256 seqs; chunked prefill (2048 tokens, 512 before 0.7) only when max_model_len >
    32K, otherwise one whole prompt per step: max(max_model_len, 2048).
    """
    if usage_context not in ("serve", "llm"):
        raise SizingError(f"usage context {usage_context!r} is not serve or llm", field="usageContext")
    if version >= V1_ENGINE_SINCE:
        large = gpu_total_mib >= 70 * 1024 and "a100" not in gpu_name.lower()
        if large:
            return BatchDefaults(1024, 8192 if usage_context == "serve" else 16384)
        return BatchDefaults(256, 2048 if usage_context == "serve" else 8192)
    if max_model_len > 32768:
        return BatchDefaults(256, 2048 if version >= EngineVersion(0, 7) else 512)
    return BatchDefaults(256, max(max_model_len, 2048))


@dataclass(frozen=True)
class VllmProfile:
    """What vLLM measures before it sizes the KV cache, per tensor-parallel rank (MiB)."""

    engine_version: str
    is_v1: bool
    weights_mib: float
    activation_mib: float
    non_torch_mib: float
    cuda_graph_mib: float
    cuda_graph_subtracted: bool
    # Pre-0.6.4 profiling counts other processes' memory as part of the peak.
    counts_foreign_memory: bool
    startup_check: bool
    kv_bytes_per_token: int
    block_size: int
    # One block of one layer; identical for all layers (mamba pages padded to it).
    page_bytes: int
    num_groups: int
    group_size: int
    full_layers: int
    sliding_layers: int
    state_layers: int
    sliding_window: int | None
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    tensor_parallel_size: int
    source: str = "config"

    @property
    def non_kv_mib(self) -> float:
        graphs = self.cuda_graph_mib if self.cuda_graph_subtracted else 0.0
        return self.weights_mib + self.activation_mib + self.non_torch_mib + graphs

    @property
    def graphs_outside_mib(self) -> float:
        """CUDA graphs captured after the KV cache, beyond `utilization x total` (versions that do not
        subtract them first: before 0.21, or with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0)."""
        return 0.0 if self.cuda_graph_subtracted else self.cuda_graph_mib

    @property
    def block_bytes(self) -> int:
        """Memory of one block id: one page in each of the group_size shared tensors."""
        return self.page_bytes * self.group_size


@dataclass(frozen=True)
class VllmFit:
    """What vLLM would do at one utilization on one GPU (memory per rank, MiB)."""

    utilization: float
    weights_mib: float
    activation_mib: float
    non_torch_mib: float
    cuda_graph_mib: float
    cuda_graph_subtracted: bool
    kv_cache_mib: float
    kv_cache_tokens: int
    num_blocks: int
    kv_bytes_per_token: int
    max_concurrency: float
    min_utilization: float
    recommended_utilization: float
    fits: bool
    reason: str
    message: str
    source: str
    max_fitting_model_len: int | None = None

    def to_contract(self) -> dict[str, object]:
        """The `vram-operator estimate` JSON keys."""
        return {
            "weightsMiB": round(self.weights_mib, 1),
            "activationMiB": round(self.activation_mib, 1),
            "nonTorchMiB": round(self.non_torch_mib, 1),
            "cudaGraphMiB": round(self.cuda_graph_mib, 1),
            "kvCacheMiB": round(self.kv_cache_mib, 1),
            "kvCacheTokens": self.kv_cache_tokens,
            "kvBytesPerToken": self.kv_bytes_per_token,
            "maxConcurrency": round(self.max_concurrency, 2),
            "minUtilization": self.min_utilization,
            "recommendedUtilization": self.recommended_utilization,
            "fits": self.fits,
            "reason": self.reason,
            "source": self.source,
        }


# --- weights ---------------------------------------------------------------------------------


def weights_per_rank(total_bytes: int, arch: ModelArchitecture, tensor_parallel_size: int) -> int:
    """Weights one rank holds: an even share, plus what every rank keeps whole.

    Norms are replicated; when there are fewer KV heads than ranks, each rank keeps a full
    copy of one KV head's K/V projection.
    """
    tp = _check_tp(arch, tensor_parallel_size)
    if tp == 1:
        return total_bytes
    params = arch.total_params()
    bytes_per_param = total_bytes / params if params else 0.0
    replicated = (2 * arch.num_layers + 1) * arch.hidden_size * (1 - 1 / tp)
    if not arch.is_mla and arch.num_kv_heads < tp:
        kv_proj = 2 * arch.hidden_size * arch.head_dim * _attention_layers(arch)
        replicated += kv_proj * (1 - arch.num_kv_heads / tp)
    return round(total_bytes / tp + replicated * bytes_per_param)


def _attention_layers(arch: ModelArchitecture) -> int:
    return sum(1 for kind in arch.layer_kinds() if kind in KV_LAYER_KINDS)


def _check_tp(arch: ModelArchitecture, tensor_parallel_size: int) -> int:
    tp = tensor_parallel_size
    if tp < 1:
        raise SizingError(f"tensor parallel size {tp} must be >= 1", field="tensorParallelSize")
    if arch.num_attention_heads % tp:
        raise SizingError(
            f"total number of attention heads ({arch.num_attention_heads}) must be divisible by "
            f"tensor parallel size ({tp})",
            field="tensorParallelSize",
        )
    kv = arch.num_kv_heads
    if not arch.is_mla and (kv % tp if kv >= tp else tp % kv):
        raise SizingError(f"{kv} KV heads cannot be split over tensor parallel size {tp}", field="tensorParallelSize")
    return tp


def check_context(arch: ModelArchitecture, max_model_len: int) -> None:
    """vLLM refuses to start with a max_model_len beyond the model's context: a spec that can never work."""
    context = arch.max_context
    if context is not None and max_model_len > context:
        raise SizingError(
            f"maxModelLen {max_model_len} exceeds the model's context ({context}); vLLM refuses to start "
            "(set maxModelLen <= the context, or env VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to force it)",
            field="maxModelLen",
        )


# --- KV cache layout -------------------------------------------------------------------------


def kv_bytes_per_token_per_layer(arch: ModelArchitecture, tensor_parallel_size: int, kv_bytes: int) -> int:
    """K and V of one token in one attention layer on one rank.

    KV heads are split over the ranks, one head replicated per rank when there are fewer;
    MLA stores one latent (kv_lora_rank + rope dims) per token, the same on every rank.
    """
    if arch.is_mla:
        return (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_bytes
    heads = max(1, arch.num_kv_heads // tensor_parallel_size)
    return 2 * heads * arch.head_dim * kv_bytes


def _state_bytes_per_sequence(arch: ModelArchitecture, tensor_parallel_size: int, state_bytes: int) -> int:
    elements = arch.state_conv_elements + arch.state_ssm_elements
    return math.ceil(elements / tensor_parallel_size) * state_bytes


@dataclass(frozen=True)
class _Layout:
    block_size: int
    page_bytes: int
    num_groups: int
    group_size: int
    full_layers: int
    sliding_layers: int
    state_layers: int
    # Recurrent state kept outside the KV pool (V0): counted with the activations.
    outside_state_bytes: int


def _group_shape(counts: list[int]) -> tuple[int, int]:
    """vLLM's grouping of same-spec layers into groups of equal size (uniform page size)."""
    smallest, largest = min(counts), max(counts)
    # Groups of the smallest type size; avoid many padding layers when sizes are close.
    size = largest if largest < smallest * 1.25 else smallest
    return sum(-(-n // size) for n in counts), size


def _layout(
    arch: ModelArchitecture,
    version: EngineVersion,
    *,
    tp: int,
    kv_bytes: int,
    state_dtype_bytes: int,
    block_size: int,
    max_num_seqs: int,
) -> _Layout:
    kinds = arch.layer_kinds()
    full = sum(1 for kind in kinds if kind == FULL_ATTENTION)
    sliding = sum(1 for kind in kinds if kind == SLIDING_ATTENTION)
    state = sum(1 for kind in kinds if kind in STATE_LAYER_KINDS)
    token_bytes = kv_bytes_per_token_per_layer(arch, tp, kv_bytes)
    state_bytes = _state_bytes_per_sequence(arch, tp, state_dtype_bytes)
    hybrid = version >= HYBRID_KV_SINCE
    if not hybrid:
        # V0 and early V1 give every attention layer a full-length cache; mamba state lives
        # in a separate per-sequence cache allocated during profiling.
        full, sliding = (full + sliding, 0) if (full or version < V1_ENGINE_SINCE) else (0, sliding)
        outside = state * state_bytes * max_num_seqs
        state = 0
    else:
        outside = 0
    if state and (full or sliding):
        # Attention blocks grow until one attention page holds a whole mamba state; the
        # mamba page is then padded to the attention page.
        aligned = KERNEL_BLOCK_ALIGNMENT * -(-state_bytes // (KERNEL_BLOCK_ALIGNMENT * token_bytes))
        block_size = max(block_size, aligned)
    page = block_size * token_bytes if (full or sliding) else state_bytes
    counts = [n for n in (full, sliding, state) if n]
    if not counts:
        raise SizingError("model has no layer that vLLM caches", field="layer_types")
    groups, size = _group_shape(counts)
    return _Layout(block_size, page, groups, size, full, sliding, state, outside)


# --- activations and other non-KV memory --------------------------------------------------


def _forward_peak_elements(arch: ModelArchitecture, tp: int, tokens: int) -> int:
    """Elements alive at the widest point of one decoder layer for `tokens` tokens."""
    h = arch.hidden_size
    base = HIDDEN_COPIES * h * tokens
    heads = arch.num_attention_heads // tp
    if arch.is_mla:
        per_token = heads * (2 * (arch.qk_nope_head_dim + arch.qk_rope_head_dim) + arch.v_head_dim)
        per_token += arch.kv_lora_rank + arch.qk_rope_head_dim
    else:
        kv_heads = max(1, arch.num_kv_heads // tp)
        per_token = (2 * heads + 2 * kv_heads) * arch.head_dim  # q,k,v out + attention out
    stages = [tokens * per_token]
    if arch.num_moe_layers < arch.num_layers:
        stages.append(tokens * 3 * arch.intermediate_size // tp)  # gate_up out + activation out
    if arch.is_moe:
        chunk = min(tokens, FUSED_MOE_CHUNK_TOKENS)
        per_routed = 3 * arch.expert_intermediate_size // tp + h
        stages.append(chunk * arch.num_experts_per_tok * per_routed)
    if any(kind in STATE_LAYER_KINDS for kind in arch.layer_kinds()):
        stages.append(tokens * 2 * (arch.state_mixer_params // h) // tp)
    return base + max(stages)


def moe_workspace_bytes(arch: ModelArchitecture, version: EngineVersion, tp: int, tokens: int, act_bytes: int) -> int:
    """The fused-MoE workspaces still allocated after the forward pass over `tokens` tokens.

    From 0.11 the modular fused-MoE kernel keeps its two workspaces in buffers shared by all layers
    that persist between calls (`FusedMoEModularKernel.shared_buffers`): workspace13 of chunk x top-k x
    max(I, H) and workspace2 of chunk x top-k x max(2I, H) elements in the activation dtype (I: the
    expert's intermediate size per rank, H: hidden). MXFP4 checkpoints (gpt-oss) run other kernels,
    whose logs show no such memory.
    """
    if not arch.is_moe or arch.quantization == "mxfp4" or version < MOE_SHARED_WORKSPACE_SINCE:
        return 0
    chunk = min(tokens, FUSED_MOE_CHUNK_TOKENS)
    inter, hidden = arch.expert_intermediate_size // tp, arch.hidden_size
    return chunk * arch.num_experts_per_tok * (max(inter, hidden) + max(2 * inter, hidden)) * act_bytes


def cuda_graph_capture_sizes(version: EngineVersion, max_num_seqs: int) -> int:
    """How many batch sizes vLLM captures CUDA graphs for (its default capture sizes up to its cap)."""
    if version >= V1_ENGINE_SINCE:
        cap = min(2 * max_num_seqs, 512)
        sizes = [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]
    else:
        cap = min(max_num_seqs, 256)
        sizes = [1, 2, 4, *range(8, 257, 8)]
    return sum(1 for size in sizes if size <= cap)


def profile(
    arch: ModelArchitecture,
    weights_bytes_per_rank: int,
    settings: VllmSettings,
    gpu_total_mib: float,
    *,
    gpu_name: str = "",
    source: str = "config",
    constants: ProfileConstants | None = None,
) -> VllmProfile:
    """What vLLM's start-up profiling would measure for this model on this GPU."""
    if weights_bytes_per_rank < 0:
        raise SizingError("weights must not be negative", field="weightsMiB")
    if gpu_total_mib <= 0:
        raise SizingError("GPU memory must be positive", field="gpuMemoryMiB")
    version = EngineVersion.parse(settings.engine_version)
    is_v1 = version >= V1_ENGINE_SINCE
    tp = _check_tp(arch, settings.tensor_parallel_size)
    if settings.block_size <= 0:
        raise SizingError("block size must be positive", field="blockSize")
    max_model_len = settings.max_model_len or arch.max_position_embeddings
    if not max_model_len or max_model_len <= 0:
        raise SizingError("max model length is unknown: set maxModelLen", field="maxModelLen")
    if not settings.allow_long_max_model_len:
        check_context(arch, max_model_len)
    defaults = batch_defaults(version, max_model_len, gpu_total_mib, gpu_name, settings.usage_context)
    max_num_seqs = settings.max_num_seqs or defaults.max_num_seqs
    batched = settings.max_num_batched_tokens or defaults.max_num_batched_tokens
    if max_num_seqs <= 0 or batched <= 0:
        raise SizingError("max_num_seqs and max_num_batched_tokens must be positive", field="maxNumSeqs")

    model_dtype = resolve_dtype(settings.dtype, arch.torch_dtype)
    act_bytes = dtype_bytes(model_dtype)
    kv_bytes = kv_cache_dtype_bytes(settings.kv_cache_dtype, model_dtype)
    layout = _layout(
        arch,
        version,
        tp=tp,
        kv_bytes=kv_bytes,
        state_dtype_bytes=act_bytes,
        block_size=settings.block_size,
        max_num_seqs=max_num_seqs,
    )

    # Dummy forward over `batched` tokens, then the sampler over one logit row per request.
    known = constants or profile_constants(version, arch)
    rows = min(batched, max_num_seqs) if is_v1 else max_num_seqs
    forward = _forward_peak_elements(arch, tp, batched) * act_bytes
    sampler = rows * arch.vocab_size * known.sampler_bytes_per_logit + batched * arch.hidden_size * act_bytes
    # The fused-MoE workspaces outlive the forward pass: the sampler pass runs on top of them.
    sampler += moe_workspace_bytes(arch, version, tp, batched, act_bytes)
    if not arch.holds_lm_head:
        # Pooling models and pipeline stages before the last compute no logits: no sampler pass.
        sampler = 0
    activation = max(forward, sampler) + layout.outside_state_bytes
    if tp > 1:
        non_torch = known.non_torch_tp_many_mib
    elif gpu_total_mib >= LARGE_GPU_MIB:
        non_torch = known.non_torch_tp1_mib
    else:
        non_torch = known.non_torch_tp1_small_gpu_mib

    graphs = 0.0
    if not settings.enforce_eager:
        pieces = arch.num_layers + 1 if is_v1 else arch.num_layers
        per_size = known.cuda_graph_mib_per_size if version >= FULL_CUDAGRAPHS_SINCE else 0.0
        graphs = cuda_graph_capture_sizes(version, max_num_seqs) * (per_size + pieces * known.cuda_graph_mib_per_piece)
    subtract = settings.subtract_cuda_graphs
    if subtract is None:
        subtract = version >= CUDAGRAPH_SUBTRACT_SINCE
    subtract = subtract and version >= CUDAGRAPH_ESTIMATE_SINCE and not settings.enforce_eager

    kv_layers = layout.full_layers + layout.sliding_layers
    return VllmProfile(
        engine_version=str(version),
        is_v1=is_v1,
        weights_mib=weights_bytes_per_rank / MIB,
        activation_mib=activation / MIB,
        non_torch_mib=non_torch,
        cuda_graph_mib=graphs,
        cuda_graph_subtracted=subtract,
        counts_foreign_memory=version < BASELINE_PROFILING_SINCE,
        startup_check=version >= STARTUP_CHECK_SINCE,
        kv_bytes_per_token=kv_layers * kv_bytes_per_token_per_layer(arch, tp, kv_bytes),
        block_size=layout.block_size,
        page_bytes=layout.page_bytes,
        num_groups=layout.num_groups,
        group_size=layout.group_size,
        full_layers=layout.full_layers,
        sliding_layers=layout.sliding_layers,
        state_layers=layout.state_layers,
        sliding_window=arch.sliding_window if layout.sliding_layers else None,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched,
        tensor_parallel_size=tp,
        source=source,
    )


# --- the KV cache vLLM would allocate ---------------------------------------------------------


def _layer_blocks_per_request(profile: VllmProfile, max_model_len: int) -> tuple[int, int, int]:
    """Blocks one request needs in one full, one sliding and one state layer."""
    bs = profile.block_size
    full = -(-max_model_len // bs)
    sliding = 0
    if profile.sliding_window:
        # The window plus the tokens scheduled in one step, plus one partly filled block.
        window_tokens = min(profile.sliding_window - 1 + profile.max_num_batched_tokens, max_model_len)
        sliding = -(-window_tokens // bs) + 1
    return full, sliding, 1


def request_kv_bytes(profile: VllmProfile, max_model_len: int) -> int:
    """KV memory one request of `max_model_len` tokens needs (vLLM's check before start)."""
    full, sliding, state = _layer_blocks_per_request(profile, max_model_len)
    layers = profile.full_layers * full + profile.sliding_layers * sliding + profile.state_layers * state
    return layers * profile.page_bytes


def _blocks_per_request(profile: VllmProfile) -> int:
    """Block ids one request occupies: per group, what one of its layers needs."""
    full, sliding, state = _layer_blocks_per_request(profile, profile.max_model_len)
    total = 0
    for layers, blocks in (
        (profile.full_layers, full),
        (profile.sliding_layers, sliding),
        (profile.state_layers, state),
    ):
        if layers:
            total += -(-layers // profile.group_size) * blocks
    return total


def logged_kv_tokens(profile: VllmProfile, num_blocks: int) -> int:
    """vLLM's "GPU KV cache size: N tokens": blocks per group times the block size."""
    return num_blocks // profile.num_groups * profile.block_size


def _max_fitting_model_len(profile: VllmProfile, available_bytes: float) -> int:
    if not profile.is_v1:
        return int(available_bytes // profile.block_bytes) * profile.block_size
    low, high = 0, profile.max_model_len
    while low < high:
        middle = (low + high + 1) // 2
        if request_kv_bytes(profile, middle) <= available_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def _check_inputs(gpu_total_mib: float, utilization: float, gpu_free_mib: float | None) -> None:
    if gpu_total_mib <= 0:
        raise SizingError("GPU memory must be positive", field="gpuMemoryMiB")
    if not 0 < utilization <= 1:
        raise SizingError(f"utilization {utilization} must be in (0, 1]", field="gpuMemoryUtilization")
    if gpu_free_mib is not None and not 0 <= gpu_free_mib <= gpu_total_mib:
        raise SizingError(f"free memory {gpu_free_mib} MiB must be within 0..total", field="gpuFreeMiB")


def fit(profile: VllmProfile, gpu_total_mib: float, utilization: float, gpu_free_mib: float | None = None) -> VllmFit:
    """What vLLM does at start-up with this utilization: the KV cache it gets, or the failure."""
    _check_inputs(gpu_total_mib, utilization, gpu_free_mib)
    requested = utilization * gpu_total_mib
    room = gpu_total_mib if gpu_free_mib is None else gpu_free_mib
    non_kv = profile.non_kv_mib
    if profile.counts_foreign_memory and gpu_free_mib is not None:
        non_kv += gpu_total_mib - gpu_free_mib
    kv_mib = requested - non_kv
    kv_bytes = kv_mib * MIB
    num_blocks = max(0, int(kv_bytes // profile.block_bytes))
    tokens = logged_kv_tokens(profile, num_blocks)
    reason, message, fitting_len = "Fits", "", None
    if profile.startup_check and gpu_free_mib is not None and gpu_free_mib < requested:
        reason = "StartupFreeMemory"
        message = (
            f"Free memory on device ({gpu_free_mib / 1024:.2f}/{gpu_total_mib / 1024:.2f} GiB) on startup is "
            f"less than desired GPU memory utilization ({utilization}, {requested / 1024:.2f} GiB). "
            "Decrease GPU memory utilization or reduce GPU memory used by other processes."
        )
    elif kv_mib <= 0 or (not profile.is_v1 and num_blocks == 0):
        reason = "NoCacheBlocks"
        # vLLM's own words, then the arithmetic it does not print.
        message = (
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            f"when initializing the engine. ({utilization} x {gpu_total_mib:.0f} MiB = {requested:.0f} MiB, but "
            f"weights {profile.weights_mib:.0f} + activation {profile.activation_mib:.0f} + non-torch "
            f"{profile.non_torch_mib:.0f} MiB already take {non_kv:.0f} MiB; one {profile.max_model_len}-token "
            f"request needs at least {min_utilization(profile, gpu_total_mib)} utilization.)"
        )
    elif (profile.is_v1 and request_kv_bytes(profile, profile.max_model_len) > kv_bytes) or (
        not profile.is_v1 and profile.max_model_len > tokens
    ):
        reason = "MaxModelLenTooLarge"
        fitting_len = _max_fitting_model_len(profile, kv_bytes)
        needed = request_kv_bytes(profile, profile.max_model_len)
        message = (
            f"To serve at least one request with the model's max seq len ({profile.max_model_len}), "
            f"{needed / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache "
            f"memory ({kv_bytes / GIB:.2f} GiB). Based on the available memory, the estimated maximum "
            f"model length is {fitting_len}. Try increasing `gpu_memory_utilization` or decreasing "
            "`max_model_len` when initializing the engine."
        )
    elif (
        not profile.counts_foreign_memory
        and not profile.startup_check
        and gpu_free_mib is not None
        and requested - profile.activation_mib > gpu_free_mib
    ):
        # Before the start-up check, vLLM sized the pool without looking at free memory and
        # failed when allocating it (the activations are freed by then).
        reason = "OutOfMemory"
        message = (
            f"CUDA out of memory: the KV cache of {kv_mib / 1024:.2f} GiB does not fit in the "
            f"{gpu_free_mib / 1024:.2f} GiB free at start-up."
        )
    elif not profile.counts_foreign_memory and footprint_mib(profile, gpu_total_mib, utilization) > room:
        # The graphs are captured after the pool, in what is left of the GPU beyond utilization x total.
        reason = "CudaGraphsOutOfMemory"
        where = "free at start-up" if gpu_free_mib is not None else "of the GPU"
        message = (
            f"CUDA out of memory while capturing CUDA graphs: {utilization} x {gpu_total_mib:.0f} MiB = "
            f"{requested:.0f} MiB plus {profile.graphs_outside_mib:.0f} MiB of CUDA graphs (captured outside "
            f"gpu_memory_utilization before vLLM 0.21) is more than the {room:.0f} MiB {where}. Decrease "
            "`gpu_memory_utilization`, or pass --enforce-eager."
        )
    if profile.is_v1:
        concurrency = num_blocks / _blocks_per_request(profile)
    else:
        concurrency = num_blocks * profile.block_size / profile.max_model_len
    minimum = min_utilization(profile, gpu_total_mib)
    return VllmFit(
        utilization=utilization,
        weights_mib=profile.weights_mib,
        activation_mib=profile.activation_mib,
        non_torch_mib=profile.non_torch_mib,
        cuda_graph_mib=profile.cuda_graph_mib,
        cuda_graph_subtracted=profile.cuda_graph_subtracted,
        kv_cache_mib=kv_mib,
        kv_cache_tokens=tokens,
        num_blocks=num_blocks,
        kv_bytes_per_token=profile.kv_bytes_per_token,
        max_concurrency=concurrency,
        min_utilization=minimum,
        recommended_utilization=recommended_utilization(profile, gpu_total_mib, gpu_free_mib),
        fits=reason == "Fits",
        reason=reason,
        message=message,
        source=profile.source,
        max_fitting_model_len=fitting_len,
    )


def kv_memory_bytes_for_tokens(profile: VllmProfile, kv_tokens: int) -> int:
    """KV pool bytes for vLLM to log at least `kv_tokens` tokens and admit one full request."""
    if kv_tokens < 0:
        raise SizingError("KV tokens must not be negative", field="kvCacheTokens")
    blocks = -(-kv_tokens // profile.block_size) * profile.num_groups
    return max(blocks * profile.block_bytes, request_kv_bytes(profile, profile.max_model_len))


def memory_for_tokens(profile: VllmProfile, kv_tokens: int) -> float:
    """MiB vLLM must be allowed (utilization x total) to get `kv_tokens` of KV cache."""
    return profile.non_kv_mib + kv_memory_bytes_for_tokens(profile, kv_tokens) / MIB


# --- what vLLM holds on the GPU: the reservation ------------------------------------------------


def footprint_mib(profile: VllmProfile, gpu_total_mib: float, utilization: float) -> float:
    """What vLLM holds on a GPU at `utilization`: its share, plus the CUDA graphs captured outside it.

    The one rule for what a vLLM server reserves per GPU.
    """
    return utilization * gpu_total_mib + profile.graphs_outside_mib


def reservation_for_tokens(profile: VllmProfile, kv_tokens: int) -> float:
    """MiB to reserve per GPU for vLLM to get `kv_tokens` of KV cache: its share and the graphs outside it."""
    return memory_for_tokens(profile, kv_tokens) + profile.graphs_outside_mib


def graphs_term(profile: VllmProfile) -> str:
    """The CUDA graphs as a term of a sum of what vLLM holds: within its utilization share, or beyond it."""
    if not profile.cuda_graph_mib:
        return ""
    beyond = "" if profile.cuda_graph_subtracted else " beyond its utilization share"
    return f" + CUDA graphs {profile.cuda_graph_mib:.0f} MiB{beyond}"


def utilization_within(profile: VllmProfile, gpu_total_mib: float, reservation_mib: float) -> float:
    """The largest utilization (in hundredths) whose footprint stays within `reservation_mib` (<= 0: none)."""
    if gpu_total_mib <= 0:
        raise SizingError("GPU memory must be positive", field="gpuMemoryMiB")
    return math.floor((reservation_mib - profile.graphs_outside_mib) / gpu_total_mib * 100 + 1e-9) / 100


def min_utilization(profile: VllmProfile, gpu_total_mib: float, kv_tokens: int = 0) -> float:
    """Smallest utilization (rounded up to 0.01) giving >= kv_tokens and one max_model_len request.

    Above 1.0 when the GPU is too small at any utilization.
    """
    if gpu_total_mib <= 0:
        raise SizingError("GPU memory must be positive", field="gpuMemoryMiB")
    needed = memory_for_tokens(profile, kv_tokens)
    # Round up in hundredths; the epsilon keeps an exact hundredth from rounding up once more.
    hundredths = math.ceil(needed / gpu_total_mib * 100 - 1e-9)
    while hundredths * gpu_total_mib / 100 < needed:
        hundredths += 1
    # Before vLLM 0.21 the CUDA graphs are captured beyond the share: a GPU that cannot hold both at
    # that share is too small at any utilization.
    if hundredths * gpu_total_mib / 100 + profile.graphs_outside_mib > gpu_total_mib:
        return max(hundredths, 101) / 100
    return hundredths / 100


# vLLM's own default; the recommendation never asks for more.
DEFAULT_UTILIZATION = 0.9


def recommended_utilization(profile: VllmProfile, gpu_total_mib: float, gpu_free_mib: float | None = None) -> float:
    """The largest utilization up to vLLM's default 0.9 whose footprint (CUDA graphs outside it
    included) fits the GPU, or its free memory: it passes the start-up check and captures its graphs.

    Never below the minimum: when even that exceeds the free memory, the minimum is returned
    and `fit` reports why it cannot start.
    """
    room = gpu_total_mib if gpu_free_mib is None else gpu_free_mib
    ceiling = min(DEFAULT_UTILIZATION, utilization_within(profile, gpu_total_mib, room))
    return max(ceiling, min_utilization(profile, gpu_total_mib))
