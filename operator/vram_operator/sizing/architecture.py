"""Model architecture: the config.json fields a memory model needs, normalised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vram_operator.sizing.errors import SizingError

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
LINEAR_ATTENTION = "linear_attention"
MAMBA = "mamba"
# A layer with neither KV cache nor recurrent state (e.g. an MLP-only layer of Nemotron-H).
NO_CACHE = "none"

# Layer kinds that keep per-sequence recurrent state instead of a per-token KV cache.
STATE_LAYER_KINDS = frozenset({LINEAR_ATTENTION, MAMBA})
KV_LAYER_KINDS = frozenset({FULL_ATTENTION, SLIDING_ATTENTION})

_LAYER_KIND_ALIASES = {
    "full_attention": FULL_ATTENTION,
    "attention": FULL_ATTENTION,
    "global": FULL_ATTENTION,
    "sliding_attention": SLIDING_ATTENTION,
    "sliding_window": SLIDING_ATTENTION,
    "local": SLIDING_ATTENTION,
    "linear_attention": LINEAR_ATTENTION,
    "mamba": MAMBA,
    "mamba2": MAMBA,
}


@dataclass(frozen=True)
class ModelArchitecture:
    """Architecture facts of one (text) model, independent of where they were read.

    Attention layers are described per layer kind so that sliding-window and hybrid
    (attention + linear/mamba) models size their KV cache correctly.
    """

    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    # Total parameters in billions when known (config, safetensors, GGUF or catalog).
    params_b: float | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int | None = None
    # The longest request vLLM accepts: max_position_embeddings scaled by RoPE scaling (None: unknown).
    context_length: int | None = None
    torch_dtype: str | None = None
    # Mixture of experts.
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    # Dense-MLP layers of an MoE model (DeepSeek first_k_dense_replace, Jamba's non-expert layers).
    first_k_dense_layers: int = 0
    # Multi-head latent attention (DeepSeek V2/V3): one compressed KV per token per layer.
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    # Sliding window: window size and which layers use it ("full_attention",
    # "sliding_attention", or a non-attention kind such as "linear_attention"/"mamba").
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = field(default_factory=tuple)
    # Quantization declared by the checkpoint (config.json quantization_config.quant_method).
    quantization: str | None = None
    # Total intermediate size of the always-on shared expert(s) (Qwen2-MoE, DeepSeek).
    shared_expert_intermediate_size: int = 0
    # MLA projection shapes (DeepSeek): q LoRA rank (0 = plain q projection), per-head dims.
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # Recurrent state of one linear-attention/mamba layer for one sequence, in elements
    # (conv state + SSM/delta-rule state), before tensor-parallel splitting.
    state_conv_elements: int = 0
    state_ssm_elements: int = 0
    # Parameters of one linear-attention/mamba mixer (replaces attention in those layers).
    state_mixer_params: int = 0
    # Parameters outside the language model: vision/audio tower and projector.
    extra_params: int = 0
    # Whether the loaded model holds the input embedding and the LM head. A pooling (embedding,
    # classification) model has no LM head and runs no sampler; a pipeline stage holds the
    # embedding only when it is the first and the LM head only when it is the last.
    holds_embedding: bool = True
    holds_lm_head: bool = True
    # Matrices of one MLP: gate, up and down (SwiGLU/GeGLU), or up and down (GELU MLPs of Phi-2,
    # GPT-2/NeoX, Falcon, StarCoder2, ...).
    mlp_matrices: int = 3
    # Elements of the rotary cos/sin tables vLLM keeps next to the weights on every GPU: positions
    # (the context, RoPE scaling included) x rotary dimensions, per distinct rotary embedding.
    rope_cache_elements: int = 0

    def kind_of_layer(self, index: int) -> str:
        """Layer kind; without explicit layer_types every layer is full (or sliding) attention."""
        if self.layer_types:
            return self.layer_types[index]
        return SLIDING_ATTENTION if self.sliding_window else FULL_ATTENTION

    def layer_kinds(self) -> tuple[str, ...]:
        return tuple(self.kind_of_layer(i) for i in range(self.num_layers))

    @property
    def max_context(self) -> int | None:
        """The longest request the model takes (vLLM refuses a larger max_model_len); None when unknown."""
        return self.context_length or self.max_position_embeddings

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_k_dense_layers if self.is_moe else 0

    def param_breakdown(self) -> ParamBreakdown:
        return _param_breakdown(self)

    def total_params(self) -> int:
        """Parameter count: the given params_b when known, else computed from the shapes."""
        if self.params_b is not None:
            return round(self.params_b * 1e9)
        return self.param_breakdown().total


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameters by role: quantization methods treat these parts differently."""

    embedding: int
    lm_head: int
    attention: int
    dense_mlp: int
    experts: int
    shared_experts: int
    state_mixers: int
    norms: int
    extra: int

    @property
    def total(self) -> int:
        return (
            self.embedding
            + self.lm_head
            + self.attention
            + self.dense_mlp
            + self.experts
            + self.shared_experts
            + self.state_mixers
            + self.norms
            + self.extra
        )

    @property
    def linear(self) -> int:
        """Weights of the linear layers inside the decoder blocks (what AWQ/GPTQ/FP8 quantize)."""
        return self.attention + self.dense_mlp + self.experts + self.shared_experts + self.state_mixers


def _attention_params(arch: ModelArchitecture) -> int:
    h = arch.hidden_size
    if arch.is_mla:
        qk_head = arch.qk_nope_head_dim + arch.qk_rope_head_dim
        if arch.q_lora_rank:
            q = h * arch.q_lora_rank + arch.q_lora_rank + arch.q_lora_rank * arch.num_attention_heads * qk_head
        else:
            q = h * arch.num_attention_heads * qk_head
        kv_a = h * (arch.kv_lora_rank + arch.qk_rope_head_dim) + arch.kv_lora_rank
        kv_b = arch.kv_lora_rank * arch.num_attention_heads * (arch.qk_nope_head_dim + arch.v_head_dim)
        o = arch.num_attention_heads * arch.v_head_dim * h
        return q + kv_a + kv_b + o
    q_out = arch.num_attention_heads * arch.head_dim
    kv_out = arch.num_kv_heads * arch.head_dim
    return h * (q_out + 2 * kv_out) + q_out * h


def _param_breakdown(arch: ModelArchitecture) -> ParamBreakdown:
    h = arch.hidden_size
    kinds = arch.layer_kinds()
    attention_layers = sum(1 for kind in kinds if kind in KV_LAYER_KINDS)
    state_layers = sum(1 for kind in kinds if kind in STATE_LAYER_KINDS)
    gated_mlp = arch.mlp_matrices
    if arch.is_moe:
        dense_layers = arch.first_k_dense_layers
        moe_layers = arch.num_layers - dense_layers
        per_expert = gated_mlp * h * arch.expert_intermediate_size
        experts = moe_layers * (arch.num_experts * per_expert + h * arch.num_experts)  # + router
        shared = moe_layers * gated_mlp * h * arch.shared_expert_intermediate_size
    else:
        dense_layers, experts, shared = arch.num_layers, 0, 0
    embedding = arch.vocab_size * h
    # A tied LM head reuses the input embedding; a stage without the embedding keeps its own copy.
    shares_embedding = arch.tie_word_embeddings and arch.holds_embedding
    return ParamBreakdown(
        embedding=embedding if arch.holds_embedding else 0,
        lm_head=embedding if arch.holds_lm_head and not shares_embedding else 0,
        attention=attention_layers * _attention_params(arch),
        dense_mlp=dense_layers * gated_mlp * h * arch.intermediate_size,
        experts=experts,
        shared_experts=shared,
        state_mixers=state_layers * arch.state_mixer_params,
        norms=(2 * arch.num_layers + 1) * h,
        extra=arch.extra_params,
    )


# --- config.json parsing -------------------------------------------------------------------

_TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config", "thinker_config")


def _text_part(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs keep the language model under a sub-config (Llava, Gemma3, Qwen2-VL)."""
    for key in _TEXT_CONFIG_KEYS:
        sub = config.get(key)
        if isinstance(sub, Mapping) and "hidden_size" in sub:
            return sub
    return config


def _get_int(cfg: Mapping[str, Any], *names: str, default: int | None = None) -> int:
    for name in names:
        value = cfg.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SizingError(f"config.json: field {name!r} must be a non-negative integer", field=name)
        return int(value)
    if default is None:
        raise SizingError(f"config.json: missing field {names[0]!r}", field=names[0])
    return default


def _get_positive(cfg: Mapping[str, Any], *names: str, default: int | None = None) -> int:
    value = _get_int(cfg, *names, default=default)
    if value <= 0:
        raise SizingError(f"config.json: field {names[0]!r} must be positive", field=names[0])
    return value


# RoPE scalings whose factor does not lengthen the context vLLM accepts (the position table already covers it).
_UNSCALED_ROPE = frozenset({"su", "longrope", "llama3"})


def _context_length(cfg: Mapping[str, Any], max_pos: int | None) -> int | None:
    """The longest max_model_len vLLM accepts for this config: the position table, times a RoPE scaling factor.

    YaRN scales the original (pre-extension) table; linear/dynamic scale max_position_embeddings.
    """
    scaling = cfg.get("rope_scaling")
    if not isinstance(scaling, Mapping):
        return max_pos
    kind = scaling.get("rope_type") or scaling.get("type")
    factor = scaling.get("factor")
    if kind in _UNSCALED_ROPE or isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
        return max_pos
    base = scaling.get("original_max_position_embeddings") if kind == "yarn" else max_pos
    if isinstance(base, bool) or not isinstance(base, int) or base <= 0:
        return max_pos
    return int(base * factor)


def _int_field(cfg: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _vision_params(config: Mapping[str, Any], text_hidden: int) -> int:
    """Vision tower + projector parameters; vLLM loads them with the language model (in its dtype).

    Per block: q, k, v, o projections (with biases) and the MLP, gated (three matrices) in
    Pixtral/Mistral3 and Qwen2.5-VL (SiLU), two matrices in SigLIP/CLIP and Qwen2-VL. The width is
    `embed_dim` where the config has one (Qwen2-VL: there `hidden_size` is the language model's).
    Then the patch embedding and the projector into the language model: Qwen-VL's merger
    (merge^2 patches -> MLP -> the language model width), Llava/Mistral3's two-layer MLP (plus
    Mistral3's patch merger), Gemma 3's single projection.
    """
    vision = config.get("vision_config")
    if not isinstance(vision, Mapping):
        return 0
    width = _int_field(vision, "embed_dim", "hidden_size", "width")
    layers = _int_field(vision, "num_hidden_layers", "depth", "layers")
    if width is None or layers is None:
        return 0
    inner = _int_field(vision, "intermediate_size")
    if inner is None:
        ratio = vision.get("mlp_ratio", 4)
        inner = int(width * (ratio if isinstance(ratio, int | float) and not isinstance(ratio, bool) else 4))
    architectures = config.get("architectures")
    first = architectures[0] if isinstance(architectures, list) and architectures else ""
    # Pixtral's encoder (Mistral3, and Pixtral checkpoints vLLM reads from params.json) gates its MLP.
    pixtral = vision.get("model_type") == "pixtral" or str(first).startswith(("Pixtral", "Mistral3"))
    gated = pixtral or vision.get("hidden_act") == "silu"
    mlp = (3 if gated else 2) * width * inner + inner + width
    attention = 4 * width * width + 4 * width
    blocks = layers * (attention + mlp + 4 * width)  # + two norms
    patch = _int_field(vision, "patch_size", "spatial_patch_size") or 14
    channels = _int_field(vision, "in_chans", "in_channels", "num_channels") or 3
    temporal = _int_field(vision, "temporal_patch_size") or 1
    patch_embedding = channels * temporal * patch * patch * width
    merge = _int_field(vision, "spatial_merge_size") or _int_field(config, "spatial_merge_size") or 1
    out = _int_field(vision, "out_hidden_size") or (
        _int_field(vision, "hidden_size") if "embed_dim" in vision else None
    )
    if out is not None:
        merged = merge * merge * width
        projector = merged * merged + merged * out
    elif "projector_hidden_act" in config or pixtral:
        projector = width * text_hidden + text_hidden * text_hidden
        if merge > 1:
            projector += merge * merge * width * width
    else:
        projector = width * text_hidden
    return blocks + patch_embedding + projector


def _layer_types(cfg: Mapping[str, Any], model_type: str, num_layers: int) -> tuple[str, ...]:
    """Per-layer kind from whichever convention the family uses; () = uniform."""
    explicit = cfg.get("layer_types") or cfg.get("layers_block_type")
    if isinstance(explicit, list) and explicit:
        kinds = []
        for value in explicit:
            kind = _LAYER_KIND_ALIASES.get(str(value).lower())
            if kind is None:
                raise SizingError(f"config.json: unknown layer type {value!r} in 'layer_types'", field="layer_types")
            kinds.append(kind)
        if len(kinds) != num_layers:
            raise SizingError(
                f"config.json: 'layer_types' has {len(kinds)} entries for {num_layers} layers",
                field="layer_types",
            )
        return tuple(kinds)
    pattern = cfg.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        # Nemotron-H: M = mamba, * = attention, - (MLP) and E (MoE) keep no cache.
        symbols = {"M": MAMBA, "*": FULL_ATTENTION}
        return tuple(symbols.get(symbol, NO_CACHE) for symbol in pattern[:num_layers])
    period = cfg.get("attn_layer_period")
    if isinstance(period, int) and period > 0:
        # Jamba: attention in layer i when i % period == offset, mamba elsewhere.
        offset = _get_int(cfg, "attn_layer_offset", default=0)
        return tuple(FULL_ATTENTION if i % period == offset else MAMBA for i in range(num_layers))
    interval = cfg.get("full_attention_interval")
    if isinstance(interval, int) and interval > 0:
        # Qwen3-Next before layer_types: every interval-th layer is full attention.
        return tuple(FULL_ATTENTION if (i + 1) % interval == 0 else LINEAR_ATTENTION for i in range(num_layers))
    if not cfg.get("sliding_window"):
        return ()
    if model_type == "gemma2":
        # Gemma 2 alternates, starting with a sliding layer.
        return tuple(SLIDING_ATTENTION if i % 2 == 0 else FULL_ATTENTION for i in range(num_layers))
    pattern_len = cfg.get("sliding_window_pattern")
    if model_type.startswith("gemma3") and not isinstance(pattern_len, int):
        pattern_len = 6
    if isinstance(pattern_len, int) and pattern_len > 0:
        # Every pattern_len-th layer is global, the others slide (Gemma 3, Cohere2).
        return tuple(FULL_ATTENTION if (i + 1) % pattern_len == 0 else SLIDING_ATTENTION for i in range(num_layers))
    return ()


def _sliding_window(cfg: Mapping[str, Any]) -> int | None:
    window = cfg.get("sliding_window")
    # Qwen2 configs carry a window that is off unless use_sliding_window is true.
    if cfg.get("use_sliding_window") is False:
        return None
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        return window
    return None


def _moe_fields(cfg: Mapping[str, Any], model_type: str, num_layers: int, intermediate: int) -> dict[str, int]:
    experts = _get_int(cfg, "num_local_experts", "n_routed_experts", "num_experts", default=0)
    if experts <= 1:
        return {}
    moe_intermediate = _get_int(cfg, "moe_intermediate_size", default=intermediate)
    shared_count = _get_int(cfg, "n_shared_experts", "num_shared_experts", default=0)
    if model_type.startswith("llama4"):
        shared_count = 1  # Llama 4: one always-on shared expert of the experts' size in every MoE layer
    shared_size = _get_int(cfg, "shared_expert_intermediate_size", default=shared_count * moe_intermediate)
    dense = _get_int(cfg, "first_k_dense_replace", default=0)
    step = cfg.get("interleave_moe_layer_step")
    if model_type.startswith("llama4") and isinstance(step, int) and step > 1:
        dense = sum(1 for i in range(num_layers) if (i + 1) % step)
    expert_period = cfg.get("expert_layer_period")
    if isinstance(expert_period, int) and expert_period > 1:
        offset = _get_int(cfg, "expert_layer_offset", default=0)
        dense = sum(1 for i in range(num_layers) if i % expert_period != offset)
    mlp_only = cfg.get("mlp_only_layers")
    if isinstance(mlp_only, list):
        dense += len(mlp_only)
    return {
        "num_experts": experts,
        "num_experts_per_tok": _get_int(
            cfg, "num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_topk", default=2
        ),
        "moe_intermediate_size": moe_intermediate,
        "num_shared_experts": shared_count or (1 if shared_size else 0),
        "shared_expert_intermediate_size": shared_size,
        "first_k_dense_layers": min(dense, num_layers),
    }


def _mla_fields(cfg: Mapping[str, Any]) -> dict[str, int]:
    rank = _get_int(cfg, "kv_lora_rank", default=0)
    if rank <= 0:
        return {}
    return {
        "kv_lora_rank": rank,
        "qk_rope_head_dim": _get_positive(cfg, "qk_rope_head_dim"),
        "qk_nope_head_dim": _get_positive(cfg, "qk_nope_head_dim"),
        "v_head_dim": _get_positive(cfg, "v_head_dim"),
        "q_lora_rank": _get_int(cfg, "q_lora_rank", default=0),
    }


def _state_fields(cfg: Mapping[str, Any], kinds: tuple[str, ...], hidden: int) -> dict[str, int]:
    """Per-layer recurrent state and mixer size of linear-attention / mamba layers."""
    if LINEAR_ATTENTION in kinds:
        # Gated DeltaNet (Qwen3-Next): conv over q,k,v channels; one dk x dv state per value head.
        nk = _get_positive(cfg, "linear_num_key_heads")
        nv = _get_positive(cfg, "linear_num_value_heads")
        dk = _get_positive(cfg, "linear_key_head_dim")
        dv = _get_positive(cfg, "linear_value_head_dim")
        kernel = _get_positive(cfg, "linear_conv_kernel_dim", default=4)
        conv_channels = 2 * nk * dk + nv * dv
        mixer = hidden * (2 * nk * dk + 2 * nv * dv) + hidden * 2 * nv + conv_channels * kernel + nv * dv * hidden
        return {
            "state_conv_elements": conv_channels * (kernel - 1),
            "state_ssm_elements": nv * dk * dv,
            "state_mixer_params": mixer,
        }
    if MAMBA not in kinds:
        return {}
    d_state = _get_positive(cfg, "mamba_d_state", "ssm_state_size", "state_size", default=16)
    d_conv = _get_positive(cfg, "mamba_d_conv", "conv_kernel", default=4)
    n_heads = _get_int(cfg, "mamba_n_heads", "mamba_num_heads", default=0)
    if n_heads:
        # Mamba2 (Granite-4, Nemotron-H, Zamba2): SSM state per head is head_dim x d_state.
        head_dim = _get_positive(cfg, "mamba_d_head", "mamba_head_dim")
        groups = _get_positive(cfg, "mamba_n_groups", "n_groups", default=1)
        inner = n_heads * head_dim
        conv_channels = inner + 2 * groups * d_state
        mixer = hidden * (2 * inner + 2 * groups * d_state + n_heads) + conv_channels * d_conv + inner * hidden
        return {
            "state_conv_elements": conv_channels * (d_conv - 1),
            "state_ssm_elements": n_heads * head_dim * d_state,
            "state_mixer_params": mixer,
        }
    # Mamba1 (Jamba): d_inner channels, each with a d_state SSM state.
    inner = _get_positive(cfg, "mamba_expand", "expand", default=2) * hidden
    dt_rank = _get_int(cfg, "mamba_dt_rank", "time_step_rank", default=-(-hidden // 16))
    mixer = hidden * 2 * inner + inner * d_conv + inner * (dt_rank + 2 * d_state) + dt_rank * inner
    mixer += inner * d_state + inner * hidden
    return {
        "state_conv_elements": inner * (d_conv - 1),
        "state_ssm_elements": inner * d_state,
        "state_mixer_params": mixer,
    }


# vLLM picks a runner from the architecture's class-name suffix (first match wins, in this order):
# generative classes keep the LM head; the others are pooling models without it (and without a
# sampler). A generative class served with --runner pooling / --task embed is a pooling model too.
_GENERATIVE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "ChatModel", "LMHeadModel")
_POOLING_SUFFIXES = (
    "ForTextEncoding",
    "EmbeddingModel",
    "ForSequenceClassification",
    "ClassificationModel",
    "ForRewardModeling",
    "RewardModel",
    "Model",
)


def is_pooling_architecture(config: Mapping[str, Any]) -> bool:
    """Whether vLLM runs this config.json's first architecture as a pooling model by default."""
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        return False
    name = architectures[0]
    for suffix in (*_GENERATIVE_SUFFIXES, *_POOLING_SUFFIXES):
        if name.endswith(suffix):
            return suffix in _POOLING_SUFFIXES
    return False


def _torch_dtype(config: Mapping[str, Any], cfg: Mapping[str, Any]) -> str | None:
    for source in (cfg, config):
        for key in ("torch_dtype", "dtype"):
            value = source.get(key)
            if isinstance(value, str):
                return value
    return None


def _quantization(config: Mapping[str, Any]) -> str | None:
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = quant.get("quant_method")
        if isinstance(method, str):
            return method.lower()
    return None


# Families whose MLP is up + down projections with a GELU between (no gate).
_UNGATED_MLP_TYPES = frozenset(
    {"phi", "phi-msft", "gpt2", "gpt_neox", "gptj", "falcon", "starcoder2", "gpt_bigcode", "bloom", "opt", "mpt"}
)


# Families without rotary embeddings (learned positions, ALiBi, or none at all).
_NO_ROPE_TYPES = frozenset({"jamba", "mamba", "mamba2", "bloom", "mpt", "gpt2", "opt", "gpt_bigcode"})


def _rope_cache_elements(cfg: Mapping[str, Any], model_type: str, head_dim: int, rope_dim: int | None) -> int:
    """Elements of vLLM's rotary cos/sin caches: one row per position the scaled table covers.

    Linear/dynamic/YaRN scaling tables cover the scaled length (the context the model accepts);
    Gemma 3 adds an unscaled local rotary embedding for its sliding layers.
    """
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    if model_type in _NO_ROPE_TYPES or not isinstance(max_pos, int) or isinstance(max_pos, bool) or max_pos <= 0:
        return 0
    if rope_dim is None:
        partial = cfg.get("partial_rotary_factor", 1.0)
        rotary = cfg.get("rotary_dim")
        if isinstance(rotary, int) and not isinstance(rotary, bool) and rotary > 0:
            rope_dim = rotary
        elif isinstance(partial, int | float) and not isinstance(partial, bool) and 0 < partial <= 1:
            rope_dim = int(head_dim * partial)
        else:
            rope_dim = head_dim
    positions = _context_length(cfg, max_pos) or max_pos
    elements = positions * rope_dim
    if model_type.startswith("gemma3"):
        elements += max_pos * rope_dim
    return elements


def from_config(config: Mapping[str, Any]) -> ModelArchitecture:
    """Parse a Hugging Face config.json (as a dict) into a ModelArchitecture.

    Raises SizingError naming the field when a required field is missing or malformed.
    """
    if not isinstance(config, Mapping):
        raise SizingError("config.json: expected a JSON object", field="config")
    cfg = _text_part(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "unknown")
    hidden = _get_positive(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get_positive(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get_positive(cfg, "num_attention_heads", "n_head")
    kv_heads = _get_positive(cfg, "num_key_value_heads", "num_kv_heads", default=heads)
    head_dim = _get_positive(cfg, "head_dim", default=hidden // heads)
    intermediate = _get_positive(cfg, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden)
    vocab = _get_positive(cfg, "vocab_size")
    kinds = _layer_types(cfg, model_type, layers)
    window = _sliding_window(cfg)
    if kinds and SLIDING_ATTENTION in kinds and window is None:
        raise SizingError("config.json: missing field 'sliding_window' for sliding layers", field="sliding_window")
    # transformers' default: Gemma ties input and output embeddings, most others do not.
    tie = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", model_type.startswith("gemma")))
    max_pos = cfg.get("max_position_embeddings")
    max_pos = max_pos if isinstance(max_pos, int) and max_pos > 0 else None
    arch = ModelArchitecture(
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        # Llama 4: intermediate_size is the experts'; dense layers use intermediate_size_mlp.
        intermediate_size=_get_positive(cfg, "intermediate_size_mlp", default=intermediate)
        if model_type.startswith("llama4")
        else intermediate,
        vocab_size=vocab,
        tie_word_embeddings=bool(tie),
        max_position_embeddings=max_pos,
        context_length=_context_length(cfg, max_pos),
        torch_dtype=_torch_dtype(config, cfg),
        sliding_window=window if (window and (not kinds or SLIDING_ATTENTION in kinds)) else None,
        layer_types=kinds,
        quantization=_quantization(config),
        extra_params=_vision_params(config, hidden),
        holds_embedding=True,
        holds_lm_head=not is_pooling_architecture(config),
        mlp_matrices=2 if model_type in _UNGATED_MLP_TYPES else 3,
        rope_cache_elements=_rope_cache_elements(
            cfg, model_type, head_dim, _get_positive(cfg, "qk_rope_head_dim") if cfg.get("kv_lora_rank") else None
        ),
        **_moe_fields(cfg, model_type, layers, intermediate),
        **_mla_fields(cfg),
        **_state_fields(cfg, kinds, hidden),
    )
    return replace(arch, params_b=arch.param_breakdown().total / 1e9)
