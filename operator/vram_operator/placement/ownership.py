"""Who owns a GPU process, and how much of a GPU is not ours: one rule for planner, healer, operator and plugin.

A process belongs to a server when its pod UID is one of that server's pods' UIDs (the operator knows
them from its pod index, the kubectl plugin from the pods carrying the server label). Only where no
UID can be matched - a process reported without one, or offline planning where the pods are unknown
(`pod_uids` None) - a pod named "<server name>-..." in the server's namespace belongs to it (the
longest name wins). Memory that is not ours is then the same everywhere: processes of no server,
used memory no process accounts for (unattributed) and driver-reserved memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuProcess


@dataclass(frozen=True)
class ProcessOwners:
    """The servers a GPU process may belong to; `pod_uids` maps "namespace/name" to its pods' UIDs."""

    servers: tuple[str, ...] = ()
    pod_uids: Mapping[str, Collection[str]] | None = None
    _by_uid: dict[str, str] = field(init=False, repr=False, compare=False)
    _names: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_uid = {uid: server for server, uids in (self.pod_uids or {}).items() for uid in uids}
        names: dict[str, list[str]] = {}
        for key in dict.fromkeys((*self.servers, *(self.pod_uids or {}))):
            namespace, _, name = key.partition("/")
            names.setdefault(namespace, []).append(name)
        object.__setattr__(self, "_by_uid", by_uid)
        object.__setattr__(
            self, "_names", {ns: tuple(sorted(found, key=lambda n: (-len(n), n))) for ns, found in names.items()}
        )

    @classmethod
    def of(cls, servers: Iterable[str], pod_uids: Mapping[str, Collection[str]] | None = None) -> ProcessOwners:
        return cls(tuple(servers), pod_uids)

    def owner_of(self, process: GpuProcess) -> str | None:
        """The "namespace/name" of the server owning the process, or None (not ours)."""
        if process.pod_uid and self.pod_uids is not None:
            return self._by_uid.get(process.pod_uid)
        if not process.pod_namespace or not process.pod_name:
            return None
        for name in self._names.get(process.pod_namespace, ()):
            if process.pod_name.startswith(name + "-"):
                return f"{process.pod_namespace}/{name}"
        return None


@dataclass(frozen=True)
class NotOurs:
    """Memory of one GPU that no server of ours holds, with what it is made of (for explanations)."""

    mib: float
    detail: tuple[str, ...] = ()


def not_ours(gpu: GpuDeviceStatus, owners: ProcessOwners) -> NotOurs:
    """Processes of no server + unattributed + driver reserved: what counts against a GPU like a reservation."""
    total = 0.0
    detail: list[str] = []
    for process in gpu.processes:
        if process.used_mib and owners.owner_of(process) is None:
            total += process.used_mib
            who = process.name or (f"{process.pod_namespace}/{process.pod_name}" if process.pod_name else "")
            detail.append(f"{who or 'pid ' + str(process.pid)} {process.used_mib:.0f}MiB")
    for what, mib in (("unattributed", gpu.unattributed_mib), ("driver reserved", gpu.memory_reserved_mib)):
        if mib > 0:
            total += mib
            detail.append(f"{what} {mib:.0f}MiB")
    return NotOurs(total, tuple(detail))
