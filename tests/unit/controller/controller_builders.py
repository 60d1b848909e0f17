"""Builders shared by the controller tests: GPUs, GpuNodes, generic InferenceServers and a vLLM one."""

from __future__ import annotations

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeStatus, GpuProcess
from vram_operator.api.inference_server import InferenceServer, InferenceServerSpec

A5500 = "NVIDIA RTX A5500"
A5500_MIB = 24564
T0 = "2026-01-01T00:00:00Z"


def gpu(
    uuid: str, total: float = A5500_MIB, *, index: int | None = None, healthy: bool = True, foreign: float = 0.0
) -> GpuDeviceStatus:
    """An RTX A5500 (by default) with `foreign` MiB used by Xorg; the index defaults to the uuid's last digit."""
    return GpuDeviceStatus(
        index=int(uuid[-1]) if index is None else index,
        uuid=uuid,
        name=A5500,
        memory_total_mib=total,
        memory_used_mib=foreign,
        memory_free_mib=max(total - foreign, 0),
        healthy=healthy,
        processes=[GpuProcess(pid=9, used_mib=foreign, name="Xorg")] if foreign else [],
    )


def node(name: str, *gpus: GpuDeviceStatus, heartbeat: str = T0) -> GpuNode:
    return GpuNode(metadata=ObjectMeta(name=name), status=GpuNodeStatus(gpus=list(gpus), last_heartbeat=heartbeat))


def gpu_node(
    name: str,
    count: int = 1,
    *,
    total: float = A5500_MIB,
    healthy: bool = True,
    foreign: float = 0.0,
    heartbeat: str = T0,
) -> GpuNode:
    """A node with `count` alike GPUs, uuids "GPU-<name>-<index>"."""
    gpus = (gpu(f"GPU-{name}-{i}", total, index=i, healthy=healthy, foreign=foreign) for i in range(count))
    return node(name, *gpus, heartbeat=heartbeat)


def generic(
    name: str, budget: str = "4Gi", replicas: int = 1, *, annotations: dict[str, str] | None = None
) -> InferenceServer:
    """A generic-engine server in namespace "ns", uid "uid-<name>", generation 1."""
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ns", annotations=annotations or {}, generation=1, uid=f"uid-{name}"),
        spec=InferenceServerSpec(engine="generic", image="img", vram_budget=budget, replicas=replicas),
    )


def vllm_server() -> InferenceServer:
    """ns/llm: vLLM serving Qwen2.5-0.5B-Instruct, its config.json in the ConfigMap "cfg" (uid "u", generation 1)."""
    return InferenceServer(
        metadata=ObjectMeta(name="llm", namespace="ns", generation=1, uid="u"),
        spec=InferenceServerSpec.model_validate(
            {
                "engine": "vllm",
                "image": "vllm",
                "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "configMapRef": {"name": "cfg"}},
                "maxModelLen": 4096,
            }
        ),
    )
