"""GpuNode: what the node agent sees on one node's GPUs (cluster-scoped, name = node name)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vram_operator.api.base import NAME_MAX, ApiModel, Condition, Resource


class GpuProcess(ApiModel):
    """A process holding memory on a GPU, attributed to a pod where possible."""

    pid: int = Field(ge=0, le=4_194_304, description="Host PID.")
    used_mib: float | None = Field(
        default=None, ge=0, description="GPU memory the process uses; absent when NVML cannot tell."
    )
    pod_uid: str | None = Field(default=None, max_length=64, description="Owning pod UID, if any.")
    pod_namespace: str | None = Field(default=None, max_length=NAME_MAX, description="Owning pod namespace.")
    pod_name: str | None = Field(default=None, max_length=NAME_MAX, description="Owning pod name.")
    container: str | None = Field(default=None, max_length=NAME_MAX, description="Container name or ID.")
    name: str | None = Field(default=None, max_length=256, description="Process name (foreign processes).")


class GpuDeviceStatus(ApiModel):
    """One physical GPU (or MIG device) as the agent last saw it."""

    index: int = Field(ge=0, le=1024, description="Device index on the node.")
    uuid: str = Field(max_length=128, description="Device UUID (GPU-... or MIG-...).")
    name: str = Field(default="", max_length=128, description="Product name.")
    memory_total_mib: float = Field(ge=0, description="Total memory.")
    memory_used_mib: float = Field(ge=0, description="Used memory (all processes, driver included).")
    memory_free_mib: float = Field(ge=0, description="Free memory.")
    memory_reserved_mib: float = Field(default=0, ge=0, description="Driver/firmware reserved memory.")
    compute_capability: str | None = Field(default=None, max_length=16, description="E.g. 8.6.")
    healthy: bool = Field(default=True, description="False when the GPU is lost or in error.")
    mig_enabled: bool = Field(
        default=False, description="True for a physical GPU in MIG mode: its MIG devices, not it, take placements."
    )
    mig: bool = Field(default=False, description="True for a MIG device.")
    parent_uuid: str | None = Field(default=None, max_length=128, description="Parent GPU of a MIG device.")
    processes: list[GpuProcess] = Field(default_factory=list, max_length=1024, description="Processes.")
    unattributed_mib: float = Field(default=0, ge=0, description="Used memory that no listed process accounts for.")


class GpuNodeStatus(ApiModel):
    """Inventory and live usage of one node's GPUs."""

    gpus: list[GpuDeviceStatus] = Field(default_factory=list, max_length=64, description="GPUs.")
    gpu_count: int = Field(default=0, ge=0, description="Number of GPUs, for printing.")
    memory_total_mib: float = Field(default=0, ge=0, description="Sum of GPU memory, for printing.")
    memory_free_mib: float = Field(default=0, ge=0, description="Sum of free GPU memory, for printing.")
    driver_version: str | None = Field(default=None, max_length=64, description="NVIDIA driver version.")
    backend: Literal["nvml", "simulated"] = Field(default="nvml", description="nvml or simulated.")
    agent_version: str | None = Field(default=None, max_length=64, description="Agent version.")
    last_heartbeat: str | None = Field(
        default=None, description="Last agent report (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Ready, NvmlAvailable (written by the agent); Ready is set Unknown, reason HeartbeatStale, "
            "by the operator while the agent is silent."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class GpuNodeSpec(ApiModel):
    """Operator-side settings of a GPU node."""

    cordoned: bool = Field(default=False, description="Take no new placements on this node's GPUs.")


class GpuNode(Resource):
    """A node's GPUs as reported by the vram-operator agent."""

    kind_name: ClassVar[str] = "GpuNode"
    plural: ClassVar[str] = "gpunodes"
    short_names: ClassVar[tuple[str, ...]] = ("gpun",)
    namespaced: ClassVar[bool] = False

    kind: Literal["GpuNode"] = "GpuNode"
    spec: GpuNodeSpec = Field(default_factory=GpuNodeSpec)
    status: GpuNodeStatus | None = None
