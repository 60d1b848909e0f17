"""Facts about the GPUs of a run, and how to read them off a pod: pure, shared by the twins and the
invariants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuTruth:
    node: str
    index: int
    uuid: str
    total_mib: float
    foreign_mib: float  # held by processes that are no pod's
    healthy: bool
    agent_live: bool  # False while the node's agent is stalled: the API shows old data


@dataclass(frozen=True)
class EngineUse:
    """What one running pod's engine holds on one GPU."""

    pod: str  # "namespace/name"
    uuid: str
    mib: float


def engine_reservation(pod: dict[str, Any], total_mib: float) -> float:
    """What the engine in a pod reserves on each of its GPUs: vLLM utilization x total, else the
    budget the operator gave it (llama.cpp's layers and context are sized to it; generic reads it)."""
    container = pod["spec"]["containers"][0]
    args = [str(a) for a in container.get("args") or []]
    if "--gpu-memory-utilization" in args:
        return float(args[args.index("--gpu-memory-utilization") + 1]) * total_mib
    annotations = pod["metadata"].get("annotations") or {}
    return float(annotations.get("vram.dev/budget-mib", 0))


def pod_gpus(pod: dict[str, Any]) -> list[str]:
    env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}
    return [u for u in env.get("NVIDIA_VISIBLE_DEVICES", "").split(",") if u]


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
