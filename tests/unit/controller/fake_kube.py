"""A fake of the operator's KubePort: objects in dicts, refusals on demand, calls recorded."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from vram_operator.controller.kube import ChildRefusedError


@dataclass
class FakeKube:
    applied: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, name) -> object
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> last status patch
    annotations: dict[str, dict[str, str | None]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    refuse_kinds: dict[str, str] = field(default_factory=dict)  # kind -> the API server's message
    status_writes: int = 0
    assignment_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> last status patch
    assignment_writes: int = 0
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (namespace, Event)
    reads: int = 0
    child_patches: list[tuple[tuple[str, str], dict[str, Any]]] = field(default_factory=list)
    gpu_node_patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    node_patches: list[tuple[str, dict[str, str | None], dict[str, str | None]]] = field(default_factory=list)
    pod_logs: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, pod) -> its log
    refuse_config_maps: set[tuple[str, str]] = field(default_factory=set)  # writes the API server refuses
    log_reads: list[tuple[str, str]] = field(default_factory=list)
    deployment_lists: int = 0  # the real port lists a server's Deployments to delete any
    config_map_reads: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, obj: dict[str, Any]) -> None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in self.refuse_kinds:
            raise ChildRefusedError(kind, name, 422, self.refuse_kinds[kind])
        self.applied[(kind, name)] = obj

    def read_child(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self.reads += 1
        return self.applied.get((obj["kind"], obj["metadata"]["name"]))

    def patch_child(self, obj: dict[str, Any], patch: dict[str, Any]) -> None:
        # Recorded only: this fake's apply replaces the whole object (no fields of other managers stay).
        self.child_patches.append(((obj["kind"], obj["metadata"]["name"]), patch))

    def delete_stale_replicas(self, namespace: str, server: str, rendered: Collection[str]) -> list[str]:
        """Replica Deployments (named after the server, not rendered now) are deleted, like the real port."""
        self.deployment_lists += 1
        stale = sorted(
            name
            for kind, name in self.applied
            if kind == "Deployment" and name.startswith(f"{server}-replica-") and name not in rendered
        )
        for name in stale:
            del self.applied[("Deployment", name)]
        return stale

    def delete_deployments(self, namespace: str, server: str) -> list[str]:
        """Every Deployment of the server (replica 0 and replicas i >= 1), like the real port."""
        self.deployment_lists += 1
        gone = sorted(
            name
            for kind, name in self.applied
            if kind == "Deployment" and (name == server or name.startswith(f"{server}-replica-"))
        )
        for name in gone:
            del self.applied[("Deployment", name)]
        return gone

    def patch_server_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.statuses[f"{namespace}/{name}"] = patch["status"]
        self.status_writes += 1

    def annotate_server(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        self.annotations.setdefault(f"{namespace}/{name}", {}).update(annotations)

    def patch_assignment_status(self, name: str, patch: dict[str, Any]) -> None:
        self.assignment_statuses[name] = patch["status"]
        self.assignment_writes += 1

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.events.append((namespace, event))

    def patch_gpu_node_status(self, name: str, patch: dict[str, Any]) -> bool:
        self.gpu_node_patches.append((name, patch))
        return True

    def patch_node_metadata(
        self, name: str, labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
    ) -> None:
        self.node_patches.append((name, dict(labels), dict(annotations)))

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self.config_map_reads.append((namespace, name))
        return self.config_maps.get((namespace, name))

    def put_config_map_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        if (namespace, name) in self.refuse_config_maps:
            raise RuntimeError(f"configmaps {name} is forbidden")
        self.config_maps[(namespace, name)] = dict(data)

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {}

    def log_tail(self, namespace: str, pod: str, container: str) -> str:
        return ""

    def log_head(self, namespace: str, pod: str, container: str) -> str:
        self.log_reads.append((namespace, pod))
        return self.pod_logs.get((namespace, pod), "")
