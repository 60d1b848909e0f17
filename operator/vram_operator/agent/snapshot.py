"""What one read of the node's GPUs returns: plain frozen dataclasses, independent of the backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

BackendName = Literal["nvml", "simulated"]


@dataclass(frozen=True)
class KnownOwner:
    """A process owner a backend already knows (the simulated profile); NVML never sets it."""

    pod_uid: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    container: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ProcessSample:
    """A process holding memory on a GPU; used_mib is None when the driver cannot tell."""

    pid: int
    used_mib: float | None
    owner: KnownOwner | None = None


@dataclass(frozen=True)
class GpuSample:
    """One GPU or MIG device. An unhealthy device keeps its identity; its figures may be zero."""

    index: int
    uuid: str
    name: str = ""
    total_mib: float = 0.0
    used_mib: float = 0.0
    free_mib: float = 0.0
    reserved_mib: float = 0.0
    compute_capability: str | None = None
    healthy: bool = True
    problem: str | None = None
    mig_enabled: bool = False  # a physical GPU in MIG mode (its MIG devices are listed after it)
    mig: bool = False
    parent_uuid: str | None = None
    processes: tuple[ProcessSample, ...] = ()


@dataclass(frozen=True)
class NodeSnapshot:
    """All GPUs of the node at one instant.

    available is False when the backend could not read anything at all (no driver, no library);
    problem_reason (CamelCase) and problem then say why, and gpus is empty. errors lists the calls
    that failed without making the whole read fail (counted by the exporter).
    """

    backend: BackendName
    gpus: tuple[GpuSample, ...] = ()
    driver_version: str | None = None
    available: bool = True
    problem_reason: str | None = None
    problem: str | None = None
    errors: tuple[str, ...] = ()


class GpuBackend(Protocol):
    """A source of node snapshots. snapshot() never raises for device trouble: it reports it."""

    name: BackendName

    def snapshot(self) -> NodeSnapshot: ...
