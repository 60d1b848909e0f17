"""The pods on this node, by UID, so that a cgroup's pod UID and container ID get names.

pod_index() is pure (pod objects as the API serves them, in JSON form); PodDirectory keeps the
index fresh through a list function (the kubernetes client in production, a fake in tests).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# The kubelet names a static pod's cgroup after this hash, not after the mirror pod's API UID.
STATIC_POD_HASH = "kubernetes.io/config.hash"

PodList = Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class PodInfo:
    """A pod on this node: its identity and its containers by runtime container ID."""

    uid: str
    namespace: str
    name: str
    containers: Mapping[str, str] = field(default_factory=dict)  # container ID (no scheme) -> name


def _container_ids(status: Mapping[str, Any]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for container in status.get(key) or ():
            container_id = container.get("containerID") or ""
            if container_id and container.get("name"):
                # "containerd://<id>", "cri-o://<id>", "docker://<id>": the cgroup shows the bare ID.
                ids[container_id.split("://", 1)[-1]] = container["name"]
    return ids


def pod_index(pods: Iterable[Mapping[str, Any]]) -> dict[str, PodInfo]:
    """Pods by UID, and static pods also by their config hash (what their cgroup path carries)."""
    index: dict[str, PodInfo] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace")
        if not (uid and name and namespace):
            continue
        info = PodInfo(uid=uid, namespace=namespace, name=name, containers=_container_ids(pod.get("status") or {}))
        index[uid] = info
        config_hash = (meta.get("annotations") or {}).get(STATIC_POD_HASH)
        if config_hash:
            index[config_hash] = info
    return index


class PodDirectory:
    """The pod index, re-listed when it is older than max_age_s or a UID it does not know shows up.

    Listing on demand instead of watching keeps the agent small; min_interval_s bounds the load a
    process of no known pod (a pod just deleted) could cause.
    """

    def __init__(
        self,
        list_pods: PodList,
        *,
        max_age_s: float = 60.0,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_pods = list_pods
        self._max_age_s = max_age_s
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._index: dict[str, PodInfo] = {}
        self._listed_at: float | None = None

    def lookup(self, uids: Iterable[str]) -> Mapping[str, PodInfo]:
        """The index, refreshed first if needed; on a list error the last index is kept."""
        now = self._clock()
        missing = any(uid not in self._index for uid in uids)
        age = None if self._listed_at is None else now - self._listed_at
        if age is None or age >= self._max_age_s or (missing and age >= self._min_interval_s):
            self._listed_at = now
            try:
                self._index = pod_index(self._list_pods())
            except Exception as error:  # any client/network failure: attribution degrades to UIDs
                log.warning("listing pods on this node failed: %s", error)
        return self._index


def kubernetes_pod_lister(core_api: Any, node_name: str) -> PodList:
    """A PodList over kubernetes.client.CoreV1Api for the pods scheduled to node_name."""

    def list_pods() -> list[dict[str, Any]]:
        # Raw JSON: the generated model objects are slower to build and not needed here.
        response = core_api.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node_name}", _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    return list_pods
