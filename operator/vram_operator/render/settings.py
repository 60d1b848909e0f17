"""Operator-wide knobs that shape every rendered workload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from vram_operator.render.errors import RenderError
from vram_operator.render.tolerations import DEFAULT_TOLERATIONS

PinningMode = Literal["envvar", "dra"]
PINNING_MODES: tuple[PinningMode, ...] = ("envvar", "dra")
ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]


@dataclass(frozen=True)
class ProbeTimings:
    """Seconds and counts of one Kubernetes probe."""

    period_seconds: int
    failure_threshold: int
    timeout_seconds: int = 5
    initial_delay_seconds: int = 0


@dataclass(frozen=True)
class RenderSettings:
    """How the operator renders workloads; one instance per operator process."""

    pinning_mode: PinningMode = "envvar"
    # envvar mode: the NVIDIA container runtime reads NVIDIA_VISIBLE_DEVICES only under this class.
    runtime_class_name: str = "nvidia"
    # dra mode: the DeviceClass the NVIDIA DRA driver installs for whole GPUs.
    device_class: str = "gpu.nvidia.com"
    # dra mode: the DeviceClass the NVIDIA DRA driver installs for MIG devices.
    mig_device_class: str = "mig.nvidia.com"
    # The attribute domain the NVIDIA DRA driver publishes its device attributes under.
    device_attribute_domain: str = "gpu.nvidia.com"
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    # Pod tolerations for the GPU nodes' taints, as Kubernetes spells them; a server's own
    # spec.tolerations are added to these (--server-tolerations, chart operator.serverTolerations).
    tolerations: tuple[Mapping[str, Any], ...] = DEFAULT_TOLERATIONS
    # Labels added to every rendered object (e.g. a Helm release label); ours win on conflict.
    extra_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    vllm_command: tuple[str, ...] = ("vllm", "serve")
    # The official llama.cpp server image keeps the binary in /app, which is not on PATH.
    llamacpp_command: tuple[str, ...] = ("/app/llama-server",)
    vllm_port: int = 8000
    llamacpp_port: int = 8080
    # Generic services expose this port through the Service; probed over TCP only when asked,
    # because many of them (batch detectors, model zoos) listen on nothing at all.
    generic_port: int = 8080
    generic_tcp_probe: bool = False
    # Loading a large model can take many minutes: the startup probe allows it (period x threshold)
    # before the liveness probe starts killing the container.
    startup_probe: ProbeTimings = ProbeTimings(period_seconds=10, failure_threshold=180)
    readiness_probe: ProbeTimings = ProbeTimings(period_seconds=10, failure_threshold=3)
    liveness_probe: ProbeTimings = ProbeTimings(period_seconds=20, failure_threshold=3, timeout_seconds=10)
    # Pods may reach the host (hostPath volumes, privileged, host namespaces) only when the cluster
    # admin says so (`--allow-host-access`, chart value admission.allowHostAccess): see host_access.py.
    allow_host_access: bool = False
    # A NetworkPolicy per server admitting in-cluster clients to the engine port only (network_policy.py).
    server_network_policy: bool = True

    def __post_init__(self) -> None:
        # Settings come from flags and environment variables: reject a typo before it renders anything.
        if self.pinning_mode not in PINNING_MODES:
            raise RenderError(
                f"{self.pinning_mode!r} is not a pinning mode (expected {' or '.join(PINNING_MODES)})",
                field="pinningMode",
            )
