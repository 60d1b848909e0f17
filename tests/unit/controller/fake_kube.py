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

    def apply(self, obj: dict[str, Any]) -> None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in self.refuse_kinds:
            raise ChildRefusedError(kind, name, 422, self.refuse_kinds[kind])
        self.applied[(kind, name)] = obj

    def delete_stale_replicas(self, namespace: str, server: str, rendered: Collection[str]) -> list[str]:
        """Replica Deployments (named after the server, not rendered now) are deleted, like the real port."""
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
        raise AssertionError("no GpuAssignment in these tests")

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.config_maps.get((namespace, name))

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {}

    def log_tail(self, namespace: str, pod: str, container: str) -> str:
        return ""
