"""Fake GPU nodes shaped like the reference fleet, as KWOK-managed Node objects.

Labels follow NVIDIA GPU feature discovery (product, per-GPU memory in MiB, count); a node
with mixed GPUs carries the first GPU's product and memory there, as GFD does, and the full
list in the `vram.dev/fake-gpus` annotation so tests and the simulated agent can read it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
FAKE_NODE_LABEL = "vram.dev/fake-node"
FAKE_GPUS_ANNOTATION = "vram.dev/fake-gpus"


@dataclass(frozen=True)
class FakeGpu:
    product: str  # as GFD writes it in nvidia.com/gpu.product
    memory_mib: int  # what the driver reports as total memory


@dataclass(frozen=True)
class FakeNode:
    name: str
    gpus: tuple[FakeGpu, ...]
    cpu: str = "32"
    memory: str = "256Gi"
    pods: str = "110"


RTX_A5500 = FakeGpu("NVIDIA-RTX-A5500", 24564)
RTX_A400 = FakeGpu("NVIDIA-RTX-A400", 4094)
H100_80GB = FakeGpu("NVIDIA-H100-80GB-HBM3", 81559)
RTX_3060_12GB = FakeGpu("NVIDIA-GeForce-RTX-3060", 12288)


def workstation(name: str = "workstation") -> FakeNode:
    """The reference workstation: an RTX A5500 (24 GB) next to an RTX A400 (4 GB)."""
    return FakeNode(name=name, gpus=(RTX_A5500, RTX_A400), cpu="16", memory="128Gi")


def desktop(name: str = "desktop") -> FakeNode:
    """A desktop PC with one GeForce RTX 3060 (12 GB), the card of examples/shared-12gb."""
    return FakeNode(name=name, gpus=(RTX_3060_12GB,), cpu="8", memory="32Gi")


def h100_rack(nodes: int, prefix: str = "h100") -> list[FakeNode]:
    """`nodes` servers with eight H100 80GB each."""
    return [FakeNode(name=f"{prefix}-{i}", gpus=(H100_80GB,) * 8, cpu="192", memory="2Ti") for i in range(nodes)]


def reference_fleet(h100_nodes: int = 2) -> list[FakeNode]:
    return [workstation(), *h100_rack(h100_nodes)]


def node_manifest(node: FakeNode) -> dict[str, Any]:
    """A Node object KWOK will adopt (by annotation) and turn Ready with this capacity."""
    first = node.gpus[0]
    resources = {
        "cpu": node.cpu,
        "memory": node.memory,
        "pods": node.pods,
        "nvidia.com/gpu": str(len(node.gpus)),
    }
    gpu_list = [
        {"index": i, "product": gpu.product, "memoryMiB": gpu.memory_mib, "uuid": fake_gpu_uuid(node.name, i)}
        for i, gpu in enumerate(node.gpus)
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "annotations": {
                KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
                FAKE_GPUS_ANNOTATION: json.dumps(gpu_list, separators=(",", ":")),
            },
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                FAKE_NODE_LABEL: "true",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": first.product,
                "nvidia.com/gpu.memory": str(first.memory_mib),
                "nvidia.com/gpu.count": str(len(node.gpus)),
            },
        },
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


# What the NVIDIA container toolkit (GPU operator) installs on a real GPU cluster; pods pinned by
# the operator name it, and admission refuses them without it.
NVIDIA_RUNTIME_CLASS: dict[str, Any] = {
    "apiVersion": "node.k8s.io/v1",
    "kind": "RuntimeClass",
    "metadata": {"name": "nvidia"},
    "handler": "nvidia",
}


def parse_fake_gpus(annotation: str) -> tuple[FakeGpu, ...]:
    """The GPUs listed in a node's FAKE_GPUS_ANNOTATION, in index order."""
    listed = sorted(json.loads(annotation), key=lambda gpu: int(gpu["index"]))
    return tuple(FakeGpu(product=str(gpu["product"]), memory_mib=int(gpu["memoryMiB"])) for gpu in listed)


def fake_gpu_uuid(node_name: str, index: int) -> str:
    """A stable id per (node, index) in NVML's GPU-<uuid> form, so tests can name a GPU."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{index}.{node_name}.fake-gpu.vram.dev')}"
