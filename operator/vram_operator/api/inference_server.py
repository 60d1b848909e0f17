"""InferenceServer: one inference service (vLLM, llama.cpp or a generic GPU service)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from vram_operator.api.base import (
    LIST_MAX,
    MESSAGE_MAX,
    NAME_MAX,
    PASS_THROUGH,
    TEXT_MAX,
    ApiModel,
    BoundedText,
    Condition,
    IntOrString,
    Message,
    ObjectMeta,
    PassThrough,
    Resource,
    cel_rule,
    config_with_cel,
)
from vram_operator.api.owned_flags import owned_flag_cel_rules, owned_flag_errors
from vram_operator.api.quantity import budget_schema, quantity_mib

Engine = Literal["vllm", "llamacpp", "generic"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Phase = Literal["Pending", "Placed", "Running", "Degraded", "Failed"]
EstimateSource = Literal["config", "safetensors", "gguf", "name", "catalog", "default", "measured"]

# A server's name is its Service's name: a DNS-1035 label (a Deployment would take more).
SERVER_NAME_MAX = 63
SERVER_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SERVER_NAME_MESSAGE = (
    f"metadata.name must be a DNS-1035 label (at most {SERVER_NAME_MAX} lower-case letters, digits or '-', "
    "starting with a letter, no dots): it also names the server's Service"
)
UTILIZATION_MIN = 0.05
UTILIZATION_MAX = 0.99
UTILIZATION_USUAL = (0.5, 0.95)
# GPUs one replica may take (tensor x pipeline parallel): the most GPUs one node has.
MAX_GPUS_PER_REPLICA = 64


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the server's namespace."""

    name: str = Field(max_length=NAME_MAX, description="ConfigMap name.")
    key: str = Field(default="config.json", max_length=NAME_MAX, description="Key holding config.json.")


class ArchitectureOverride(ApiModel):
    """Inline architecture facts; any field given here wins over config.json."""

    num_layers: int | None = Field(default=None, ge=1, le=1024, description="Transformer layers.")
    num_kv_heads: int | None = Field(default=None, ge=1, le=1024, description="Key/value heads (GQA).")
    head_dim: int | None = Field(default=None, ge=1, le=4096, description="Dimension of one attention head.")
    hidden_size: int | None = Field(default=None, ge=1, le=262144, description="Model hidden size.")
    intermediate_size: int | None = Field(default=None, ge=1, le=1048576, description="MLP inner size.")
    vocab_size: int | None = Field(default=None, ge=1, le=4194304, description="Vocabulary size.")
    params_b: float | None = Field(default=None, gt=0, le=10000, description="Total parameters in billions (e.g. 7.6).")


class ModelSpec(ApiModel):
    """What model the server loads and how to learn its size."""

    name: str | None = Field(
        default=None,
        max_length=NAME_MAX,
        description="Hugging Face id or label, e.g. Qwen/Qwen2.5-7B-Instruct.",
    )
    path: str | None = Field(default=None, max_length=TEXT_MAX, description="Model path inside the container.")
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the model's config.json."
    )
    architecture: ArchitectureOverride | None = Field(
        default=None, description="Inline architecture override (wins over config.json)."
    )
    quantization: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^(none|fp8|int8|awq|gptq|mxfp4|bitsandbytes|gguf-[A-Za-z0-9_]+)$",
        description="Weight quantization: none, fp8, int8, awq, gptq, mxfp4, bitsandbytes or gguf-<type>.",
    )
    dtype: Dtype = Field(default="auto", description="Weight/activation dtype; auto uses config.json.")
    weights_mib: int | None = Field(
        default=None, ge=1, le=4_000_000, description="Explicit weights size in MiB (wins over estimates)."
    )


class ManualPlacement(ApiModel):
    """A manual pin to a node and GPUs."""

    node: str | None = Field(default=None, max_length=NAME_MAX, description="Node name.")
    gpus: list[IntOrString] = Field(
        default_factory=list, max_length=64, description="GPU indices or UUIDs on that node."
    )


class InferenceServerSpec(ApiModel):
    """Desired state of an inference server."""

    model_config = config_with_cel(
        cel_rule("self.engine == 'generic' || has(self.model)", "model is required for vllm and llamacpp"),
        cel_rule("self.engine != 'generic' || has(self.vramBudget)", "vramBudget is required for generic"),
        cel_rule(
            "!has(self.placement) || !has(self.placement.gpus) || size(self.placement.gpus) == 0"
            " || size(self.placement.gpus) == (has(self.tensorParallelSize) ? self.tensorParallelSize : 1)"
            " * (has(self.pipelineParallelSize) ? self.pipelineParallelSize : 1)",
            "placement.gpus must list exactly tensorParallelSize x pipelineParallelSize GPUs",
        ),
        cel_rule(
            "(has(self.tensorParallelSize) ? self.tensorParallelSize : 1)"
            " * (has(self.pipelineParallelSize) ? self.pipelineParallelSize : 1) <= 64",
            "tensorParallelSize x pipelineParallelSize must be at most 64 GPUs (one node)",
        ),
        cel_rule(
            "!has(self.pipelineParallelSize) || self.pipelineParallelSize == 1 || self.engine == 'vllm'",
            "pipelineParallelSize is for vllm only",
        ),
        cel_rule(
            "!has(self.gpuMemoryUtilization) || self.gpuMemoryUtilization == 0.0 || self.gpuMemoryUtilization >= 0.05",
            "gpuMemoryUtilization must be 0 (auto) or between 0.05 and 0.99",
        ),
        *owned_flag_cel_rules(),
    )

    engine: Engine = Field(description="Inference engine: vllm, llamacpp or generic.")
    model: ModelSpec | None = Field(default=None, description="The model (required for vllm and llamacpp).")
    image: str = Field(min_length=1, max_length=TEXT_MAX, description="Container image.")
    replicas: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "Replicas; each is a placement of its own (its own GPU(s), budget and pinning), spread over "
            "GPUs, then nodes. 0 keeps one placement reserved and runs no pod."
        ),
    )
    args: list[BoundedText] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description=(
            "Extra engine arguments, appended after the ones the operator sets; flags the operator owns "
            "(utilization, parallel sizes, max model len, KV cache, llama.cpp -ngl/-c/--parallel, ...) are "
            "refused in every spelling, with the spec field to use instead."
        ),
    )
    env: list[PassThrough] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Container environment (Kubernetes EnvVar list), passed through.",
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Container resources (CPU/memory), passed through; never nvidia.com/gpu. Requests default to one CPU "
            "per GPU rank and host memory sized from the model (weights + 2Gi per rank); each key given wins."
        ),
        json_schema_extra=PASS_THROUGH,
    )
    volumes: list[PassThrough] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Pod volumes, passed through.",
    )
    security_context: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Engine container securityContext; its fields replace the operator's defaults "
            "(allowPrivilegeEscalation false, capabilities drop ALL). Privileged or added capabilities "
            "are refused unless the operator allows host access."
        ),
        json_schema_extra=PASS_THROUGH,
    )
    pod_security_context: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Pod securityContext (e.g. runAsUser for an image that runs as another user); its fields "
            "replace the operator's default (seccompProfile RuntimeDefault)."
        ),
        json_schema_extra=PASS_THROUGH,
    )
    volume_mounts: list[PassThrough] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description="Container volume mounts, passed through.",
    )
    tolerations: list[PassThrough] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description=(
            "Pod tolerations (Kubernetes Toleration list), passed through after the operator's own "
            "(--server-tolerations; default: nvidia.com/gpu Exists NoSchedule)."
        ),
    )
    max_model_len: int | None = Field(
        default=None, ge=16, le=16_777_216, description="Longest request (prompt + output) in tokens."
    )
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536, description="Concurrent sequences.")
    max_num_batched_tokens: int | None = Field(
        default=None, ge=16, le=16_777_216, description="Tokens per scheduler step (vLLM)."
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="GPUs each pipeline stage splits its layers over (tensor parallel)."
    )
    pipeline_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "vLLM pipeline stages, each holding its share of the layers on tensorParallelSize GPUs. A replica "
            "takes tensorParallelSize x pipelineParallelSize GPUs, all on one node."
        ),
    )
    kv_cache_dtype: str = Field(
        default="auto",
        pattern=r"^(auto|fp8|fp8_e4m3|fp8_e5m2|f16|q8_0|q4_0)$",
        max_length=16,
        description="KV cache dtype: auto, fp8 (vLLM) or f16/q8_0/q4_0 (llama.cpp).",
    )
    engine_version: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^v?[0-9]+(\.[0-9]+){0,2}([.+-][0-9A-Za-z.]+)?$",
        description="Engine version (e.g. 0.19.0); selects the memory model.",
    )
    gpu_memory_utilization: float = Field(
        default=0.0,
        ge=0.0,
        le=UTILIZATION_MAX,
        description="vLLM --gpu-memory-utilization; 0 or absent = auto (computed from the model and the GPU).",
    )
    vram_budget: int | str | None = Field(
        default=None,
        description=(
            "Whole-process VRAM footprint for generic servers, as nvidia-smi shows it: a quantity from 1Mi "
            "to 16Ti (e.g. 650Mi, 1.5Gi, 6.8G) or bytes."
        ),
        json_schema_extra=budget_schema(bound_strings=True),
    )
    vram_budget_min: int | str | None = Field(
        default=None,
        description=(
            "Smallest budget a generic server still works with (it reads VRAM_BUDGET_GB and adapts); "
            "lets the planner shrink it onto a smaller GPU, with a warning. A quantity like vramBudget."
        ),
        json_schema_extra=budget_schema(bound_strings=True),
    )
    latency_critical: bool = Field(default=False, description="Prefer the fastest/largest GPU.")
    isolation: Literal["shared", "dedicated"] = Field(
        default="shared", description="shared, or dedicated (a GPU alone)."
    )
    placement: ManualPlacement | None = Field(default=None, description="Manual pin to a node and GPUs.")

    @field_validator("vram_budget", "vram_budget_min")
    @classmethod
    def _budget_is_quantity(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            quantity_mib(value)
        return value

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _utilization_range(cls, value: float) -> float:
        if value != 0.0 and not UTILIZATION_MIN <= value <= UTILIZATION_MAX:
            raise ValueError(f"gpuMemoryUtilization {value} must be 0 (auto) or within 0.05-0.99")
        return value

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica runs on, all on one node: one per tensor-parallel rank of each pipeline stage."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @model_validator(mode="after")
    def _cross_field(self) -> InferenceServerSpec:
        if self.engine != "generic" and self.model is None:
            raise ValueError("model is required for vllm and llamacpp")
        if self.engine == "generic" and self.vram_budget is None:
            raise ValueError("vramBudget is required for generic")
        if self.gpus_per_replica > MAX_GPUS_PER_REPLICA:
            raise ValueError(
                f"tensorParallelSize x pipelineParallelSize must be at most {MAX_GPUS_PER_REPLICA} GPUs (one node), "
                f"got {self.tensor_parallel_size} x {self.pipeline_parallel_size}"
            )
        if self.pipeline_parallel_size > 1 and self.engine != "vllm":
            raise ValueError("pipelineParallelSize is for vllm only")
        pinned = self.placement.gpus if self.placement else []
        if pinned and len(pinned) != self.gpus_per_replica:
            raise ValueError("placement.gpus must list exactly tensorParallelSize x pipelineParallelSize GPUs")
        owned = owned_flag_errors(self.engine, self.args)
        if owned:
            raise ValueError("; ".join(owned))
        return self


class EstimateStatus(ApiModel):
    """What the server needs, per GPU (per tensor-parallel rank)."""

    weights_mib: float = Field(default=0, ge=0, description="Model weights per GPU.")
    activation_mib: float = Field(default=0, ge=0, description="Peak activation memory.")
    overhead_mib: float = Field(default=0, ge=0, description="Non-torch memory, CUDA graphs, context.")
    kv_cache_mib: float = Field(default=0, ge=0, description="KV cache pool.")
    total_mib: float = Field(default=0, ge=0, description="Everything: the budget reserved per GPU.")
    kv_bytes_per_token: int = Field(default=0, ge=0, description="KV cache bytes per token per GPU.")
    kv_cache_tokens: int = Field(default=0, ge=0, description="KV cache size in tokens.")
    max_concurrency: float = Field(default=0, ge=0, description="Full-length requests that fit at once.")
    min_utilization: float = Field(default=0, ge=0, description="Smallest utilization that starts.")
    source: EstimateSource = Field(default="default", description="Where the weights size came from.")


class EngineReportStatus(ApiModel):
    """What the engine itself reported at start (its log), per GPU: beside `estimate`, for comparison."""

    weights_mib: float | None = Field(default=None, ge=0, description="Model weights the engine loaded.")
    kv_cache_mib: float | None = Field(default=None, ge=0, description="KV cache pool the engine allocated.")
    kv_cache_tokens: int | None = Field(default=None, ge=0, description="KV cache size in tokens.")
    max_concurrency: float | None = Field(default=None, ge=0, description="Full-length requests that fit at once.")
    engine_version: str = Field(default="", max_length=64, description="Engine version the log names.")
    pod: str = Field(default="", max_length=NAME_MAX, description="The pod whose log this was read from.")
    reported_at: str | None = Field(
        default=None, description="When the log was read.", json_schema_extra={"format": "date-time"}
    )


class PlacedGpu(ApiModel):
    """One physical GPU a server is placed on."""

    index: int = Field(ge=0, le=1024, description="GPU index on the node.")
    uuid: str = Field(max_length=128, description="GPU UUID.")
    name: str = Field(default="", max_length=128, description="GPU product name.")
    total_mib: float = Field(default=0, ge=0, description="GPU memory in MiB.")
    mig: bool = Field(default=False, description="A MIG device (uuid MIG-...); index is its parent GPU's.")


class PlacementStatus(ApiModel):
    """Where the server runs and why."""

    node: str = Field(max_length=NAME_MAX, description="Node name.")
    gpus: list[PlacedGpu] = Field(default_factory=list, max_length=64, description="GPUs used.")
    gpu_summary: str = Field(default="", max_length=256, description="GPU indices, for printing.")
    budget_mib: float = Field(default=0, ge=0, description="VRAM reserved per GPU.")
    strategy: str = Field(default="", max_length=32, description="Strategy that placed it.")
    assignment: str = Field(default="", max_length=NAME_MAX, description="GpuAssignment that placed it.")
    reason: str = Field(default="", max_length=MESSAGE_MAX, description="Why here, and why not elsewhere.")


class ReplicaPlacementStatus(PlacementStatus):
    """Where one replica runs: its own GPU(s), budget and utilization."""

    replica: int = Field(ge=0, le=63, description="Replica index (0 is also status.placement).")
    gpu_memory_utilization: float | None = Field(
        default=None, ge=0, le=1, description="This replica's vLLM --gpu-memory-utilization."
    )


class MeasuredGpuMemory(ApiModel):
    """Measured memory of this server on one GPU."""

    uuid: str = Field(max_length=128, description="GPU UUID.")
    used_mib: float = Field(ge=0, description="Memory this server's processes use on the GPU.")
    total_mib: float = Field(ge=0, description="GPU memory.")


class MeasuredMemory(ApiModel):
    """What the server really uses, from the node agents."""

    used_mib: float = Field(ge=0, description="Sum over the server's GPUs.")
    total_mib: float = Field(ge=0, description="Sum of the GPUs' memory.")
    percent: float = Field(ge=0, description="used / total, percent.")
    per_gpu: list[MeasuredGpuMemory] = Field(default_factory=list, max_length=64, description="Per GPU.")
    measured_at: str | None = Field(
        default=None, description="When the agent measured it.", json_schema_extra={"format": "date-time"}
    )
    display: str = Field(default="", max_length=128, description='E.g. "Memory: 6134MiB / 12288MiB (49.9%)".')
    summary: str = Field(
        default="", max_length=128, description='display without its "Memory: " prefix (the printer column).'
    )


class InferenceServerStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    phase: Phase = Field(default="Pending", description="Pending, Placed, Running, Degraded or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Estimated, Placed, MemoryFits, Ready, Degraded, EstimateAccurate.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    estimate: EstimateStatus | None = Field(default=None, description="VRAM the server needs.")
    engine_report: EngineReportStatus | None = Field(
        default=None, description="What the engine reported at start (its own log), beside the estimate."
    )
    placement: PlacementStatus | None = Field(default=None, description="Where it runs (replica 0).")
    replica_placements: list[ReplicaPlacementStatus] = Field(
        default_factory=list,
        max_length=64,
        description="Where every placed replica runs, replica 0 first; each holds its own budget.",
    )
    gpu_memory_utilization: float | None = Field(
        default=None, ge=0, le=1, description="Effective vLLM --gpu-memory-utilization."
    )
    utilization_mode: Literal["auto", "manual"] | None = Field(default=None, description="auto or manual.")
    utilization_tier: Literal["conservative", "standard", "aggressive"] | None = Field(
        default=None, description="Auto mode's head-room tier: conservative, standard or aggressive."
    )
    utilization_explanation: list[Message] = Field(
        default_factory=list, max_length=16, description="How the utilization was chosen, number by number."
    )
    memory: MeasuredMemory | None = Field(default=None, description="Measured memory.")
    warnings: list[Message] = Field(default_factory=list, max_length=64, description="Things the user should know.")

    def placed_replicas(self) -> list[ReplicaPlacementStatus]:
        """Every replica's placement (each holds a reservation): replicaPlacements, or for a status
        written before replicas had placements of their own, `placement` as replica 0."""
        if self.replica_placements:
            return list(self.replica_placements)
        if self.placement is None:
            return []
        return [
            ReplicaPlacementStatus(
                **self.placement.model_dump(), replica=0, gpu_memory_utilization=self.gpu_memory_utilization
            )
        ]


class InferenceServer(Resource):
    """An inference server placed on GPUs by VRAM."""

    kind_name: ClassVar[str] = "InferenceServer"
    plural: ClassVar[str] = "inferenceservers"
    short_names: ClassVar[tuple[str, ...]] = ("infs",)
    namespaced: ClassVar[bool] = True

    root_rules: ClassVar[tuple[dict[str, JsonValue], ...]] = (
        cel_rule(
            f"size(self.metadata.name) <= {SERVER_NAME_MAX} && self.metadata.name.matches(r'{SERVER_NAME_PATTERN}')",
            SERVER_NAME_MESSAGE,
        ),
    )

    kind: Literal["InferenceServer"] = "InferenceServer"
    spec: InferenceServerSpec
    status: InferenceServerStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _name_is_a_service_name(cls, metadata: ObjectMeta) -> ObjectMeta:
        name = metadata.name
        if len(name) > SERVER_NAME_MAX or not re.fullmatch(SERVER_NAME_PATTERN, name):
            raise ValueError(f"{name!r}: {SERVER_NAME_MESSAGE}")
        return metadata

    @property
    def key(self) -> str:
        """The "namespace/name" used across plans and ledgers."""
        return f"{self.metadata.namespace or 'default'}/{self.metadata.name}"
