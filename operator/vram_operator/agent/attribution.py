"""Process -> owner: a pod's container, or a foreign process known by its name.

IdentityReader is the only I/O (it reads /proc under a configurable root: the DaemonSet mounts
the host's /proc); attribute() is pure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vram_operator.agent.cgroup import CgroupOwner, read_cgroup_owner, read_comm
from vram_operator.agent.pods import PodInfo
from vram_operator.agent.snapshot import ProcessSample
from vram_operator.api.gpu_node import GpuProcess


@dataclass(frozen=True)
class ProcessIdentity:
    """What /proc says about a host process; owner is None when the process is gone."""

    owner: CgroupOwner | None
    comm: str | None


class IdentityReader:
    """Reads /proc/<pid>/cgroup and comm under proc_root, cached per process.

    A process keeps its cgroup and name for life, so a poll re-reads only new processes: that is
    what keeps a poll of hundreds of GPU processes cheap. The /proc/<pid> inode time tells a new
    process that reuses a PID apart from the old one (a changed time only costs a re-read).
    """

    def __init__(self, proc_root: Path) -> None:
        self._root = str(proc_root)
        self._cache: dict[int, tuple[int, ProcessIdentity]] = {}

    def read(self, pids: Iterable[int]) -> dict[int, ProcessIdentity]:
        root = Path(self._root)
        fresh: dict[int, tuple[int, ProcessIdentity]] = {}
        for pid in set(pids):
            try:
                stamp = os.stat(f"{self._root}/{pid}").st_ctime_ns
            except OSError:
                fresh[pid] = (-1, ProcessIdentity(None, None))
                continue
            cached = self._cache.get(pid)
            if cached is None or cached[0] != stamp:
                cached = (stamp, ProcessIdentity(read_cgroup_owner(root, pid), read_comm(root, pid)))
            fresh[pid] = cached
        self._cache = fresh  # processes gone from the GPUs drop out of the cache
        return {pid: identity for pid, (_, identity) in fresh.items()}


def _round(mib: float | None) -> float | None:
    return None if mib is None else round(mib, 2)


def _pod_by_name(pods: Mapping[str, PodInfo], namespace: str, name: str) -> PodInfo | None:
    return next((p for p in pods.values() if p.namespace == namespace and p.name == name), None)


def attribute(sample: ProcessSample, identity: ProcessIdentity | None, pods: Mapping[str, PodInfo]) -> GpuProcess:
    """The API view of one GPU process.

    A backend-known owner (simulated profile) wins; otherwise the cgroup gives the pod UID and
    container ID and the pod index gives names. A pod not (yet) in the index keeps its UID and
    container ID. A process in no pod is foreign and keeps its /proc name.
    """
    used = _round(sample.used_mib)
    known = sample.owner
    if known is not None:
        pod = pods.get(known.pod_uid) if known.pod_uid else None
        if pod is None and known.pod_namespace and known.pod_name:
            pod = _pod_by_name(pods, known.pod_namespace, known.pod_name)
        return GpuProcess(
            pid=sample.pid,
            used_mib=used,
            pod_uid=known.pod_uid or (pod.uid if pod else None),
            pod_namespace=known.pod_namespace,
            pod_name=known.pod_name,
            container=known.container,
            name=known.name,
        )
    owner = identity.owner if identity else None
    name = identity.comm if identity else None
    if owner is None or owner.pod_uid is None:
        return GpuProcess(pid=sample.pid, used_mib=used, name=name)
    pod = pods.get(owner.pod_uid)
    container = owner.container_id
    if pod is not None and container is not None:
        container = pod.containers.get(container, container)
    return GpuProcess(
        pid=sample.pid,
        used_mib=used,
        pod_uid=pod.uid if pod else owner.pod_uid,
        pod_namespace=pod.namespace if pod else None,
        pod_name=pod.name if pod else None,
        container=container,
        name=name,
    )
