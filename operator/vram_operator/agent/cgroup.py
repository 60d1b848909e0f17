"""Which pod and container a host process belongs to, read from /proc/<pid>/cgroup.

Handles cgroup v1 (one line per hierarchy) and v2 (`0::/path`), the systemd driver
(`kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`, `crio-<id>.scope`,
`docker-<id>.scope`, containerd's `...slice:cri-containerd:<id>` form) and the cgroupfs driver
(`/kubepods/burstable/pod<uid>/<id>`, plain Docker `/docker/<id>`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# A pod UID follows "pod" at the start of a path component or after a dash (systemd slices).
# Static pods use a 32-hex config hash instead of a dashed UID.
_POD = re.compile(
    r"(?:^|[/-])pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?=\.slice|/|:|$)"
)
# A container ID is 64 hex digits, bare or with a runtime prefix and a .scope suffix. crio-conmon-<id>
# (CRI-O's monitor process) deliberately does not match: it is not the container.
_CONTAINER = re.compile(r"^(?:(?:cri-containerd|crio|docker|containerd|libpod)-)?([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True)
class CgroupOwner:
    """The pod UID (dashed form) and container ID a process's cgroup names; None where absent."""

    pod_uid: str | None = None
    container_id: str | None = None


def _owner_of_path(path: str) -> CgroupOwner:
    pod = _POD.search(path)
    # The container is the innermost component; containerd's systemd form joins it with colons.
    leaf = path.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    container = _CONTAINER.match(leaf)
    return CgroupOwner(
        pod_uid=pod.group(1).replace("_", "-") if pod else None,
        container_id=container.group(1) if container else None,
    )


def parse_cgroup(text: str) -> CgroupOwner:
    """The owner named by a /proc/<pid>/cgroup file; CgroupOwner() for a process of no container.

    Lines disagree on hybrid hosts (v1 controllers under a pod, the v2 line under a system
    service), so the most specific line wins: pod and container, then pod, then container.
    """
    best = CgroupOwner()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        owner = _owner_of_path(parts[2])
        if _rank(owner) > _rank(best):
            best = owner
    return best


def _rank(owner: CgroupOwner) -> int:
    return (2 if owner.pod_uid else 0) + (1 if owner.container_id else 0)


def _read(path: str) -> str | None:
    # Raw os.open/os.read on a string path: this runs for every new GPU process, and pathlib or
    # buffered text files cost several times more. /proc/<pid>/cgroup and comm are small.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1 << 16).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_cgroup_owner(proc_root: Path, pid: int) -> CgroupOwner | None:
    """The owner of a live process, or None when its /proc entry is gone or unreadable."""
    text = _read(f"{proc_root}/{pid}/cgroup")
    return None if text is None else parse_cgroup(text)


def read_comm(proc_root: Path, pid: int) -> str | None:
    """The process name (/proc/<pid>/comm), or None when the process is gone or unreadable."""
    text = _read(f"{proc_root}/{pid}/comm")
    return (text.strip() or None) if text is not None else None
