"""Host access in a rendered pod: what a server's pass-through fields must not reach unless allowed.

The operator creates pods with its own privileges, so whoever may create an InferenceServer would
otherwise get whatever the pod template allows. The checks follow the Pod Security "baseline"
profile's host rules: hostPath volumes, host namespaces, host ports, privileged containers and
added capabilities, Windows host processes and unmasked /proc. spec.volumes, spec.securityContext and
spec.podSecurityContext can carry them; the pod-wide scan keeps that true for any pass-through field
added later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


class HostAccess(NamedTuple):
    """One way the pod reaches the host: the pod-spec field and what it grants."""

    field: str
    what: str


def host_access(pod_spec: Mapping[str, Any]) -> list[HostAccess]:
    """Every place in a pod spec (apps/v1 template.spec) that reaches the host, in field order."""
    found = [
        HostAccess(f"volumes[{i}].hostPath", f"hostPath volume {volume.get('name')!r} ({_path(volume)})")
        for i, volume in enumerate(pod_spec.get("volumes") or [])
        if volume.get("hostPath") is not None
    ]
    found += [
        HostAccess(name, f"{name}: true shares the node's namespace") for name in HOST_NAMESPACES if pod_spec.get(name)
    ]
    found += _host_process("securityContext", pod_spec.get("securityContext") or {})
    for kind in CONTAINER_LISTS:
        for i, container in enumerate(pod_spec.get(kind) or []):
            found += _container_access(f"{kind}[{i}]", container)
    return found


def _path(volume: Mapping[str, Any]) -> Any:
    return (volume["hostPath"] or {}).get("path")


def _container_access(where: str, container: Mapping[str, Any]) -> list[HostAccess]:
    security = container.get("securityContext") or {}
    found = []
    if security.get("privileged"):
        found.append(HostAccess(f"{where}.securityContext.privileged", "a privileged container"))
    found += _host_process(f"{where}.securityContext", security)
    if security.get("procMount") == "Unmasked":
        found.append(HostAccess(f"{where}.securityContext.procMount", "an unmasked /proc"))
    added = (security.get("capabilities") or {}).get("add") or []
    if added:
        found.append(HostAccess(f"{where}.securityContext.capabilities.add", f"added capabilities {', '.join(added)}"))
    found += [
        HostAccess(f"{where}.ports[{i}].hostPort", f"host port {port['hostPort']}")
        for i, port in enumerate(container.get("ports") or [])
        if port.get("hostPort")
    ]
    return found


def _host_process(where: str, security: Mapping[str, Any]) -> list[HostAccess]:
    if (security.get("windowsOptions") or {}).get("hostProcess"):
        return [HostAccess(f"{where}.windowsOptions.hostProcess", "a Windows host process")]
    return []
