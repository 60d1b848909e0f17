"""The few API calls the handlers make (kubernetes client, run in threads by the handlers)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from vram_operator.api.base import GROUP, VERSION
from vram_operator.render.metadata import REPLICA_LABEL, SERVER_LABEL

FIELD_MANAGER = "vram-operator"
LOG_TAIL_LINES = 60
LOG_LIMIT_BYTES = 16384


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.dynamic: Any = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply one child object (forced: the operator owns these fields)."""
        meta = obj["metadata"]
        self.dynamic.server_side_apply(
            self._resource(obj["apiVersion"], obj["kind"]),
            body=obj,
            name=meta["name"],
            namespace=meta["namespace"],
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    def delete_child(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.dynamic.delete(self._resource(api_version, kind), name=name, namespace=namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_stale_replicas(self, namespace: str, server: str, rendered: Collection[str]) -> list[str]:
        """Delete the Deployments of a server's replicas (i >= 1) that are no longer rendered (the server
        was scaled down, or fewer replicas are placed); returns their names."""
        found = self.dynamic.get(
            self._resource("apps/v1", "Deployment"),
            namespace=namespace,
            label_selector=f"{SERVER_LABEL}={server},{REPLICA_LABEL}",
        )
        stale = sorted(item.metadata.name for item in found.items if item.metadata.name not in rendered)
        for name in stale:
            self.delete_child("apps/v1", "Deployment", namespace, name)
        return stale

    def patch_server_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "inferenceservers", name, patch)

    def annotate_server(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", name, body)

    def patch_assignment_status(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpuassignments", name, patch)

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found.data or {})

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        labels: dict[str, dict[str, str]] = {}
        for namespace in self.core.list_namespace().items:
            if namespace.metadata and namespace.metadata.name:
                labels[namespace.metadata.name] = dict(namespace.metadata.labels or {})
        return labels

    def log_tail(self, namespace: str, pod: str, container: str) -> str:
        """The end of the previous (crashed) container's log, bounded in lines and bytes."""
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                previous=True,
                tail_lines=LOG_TAIL_LINES,
                limit_bytes=LOG_LIMIT_BYTES,
            )
        except ApiException:
            return ""  # no previous container, or the kubelet (KWOK) serves no logs
        return text
