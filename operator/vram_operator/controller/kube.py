"""The few API calls the operator makes: the `KubePort` the reconcilers use, and `Kube`, its
implementation over the kubernetes client (synchronous: the reconcilers run it in threads).

The calls made per decision (a server's status, its children's applies, the measured runs read per
batch) and per node go through `Kube.send`: the client's transport without its models. The generated
API and the dynamic client turn every reply into objects (pydantic validation, ResourceInstance
wrappers) that nobody reads: about a third of each call's CPU in the operator (an apply 1.3 -> 0.8 ms).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import quote

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from vram_operator.api.base import GROUP, VERSION
from vram_operator.render.metadata import REPLICA_LABEL, SERVER_LABEL

FIELD_MANAGER = "vram-operator"
log = logging.getLogger(__name__)
LOG_TAIL_LINES = 60
LOG_LIMIT_BYTES = 16384
# An engine's start-up report sits at the start of its log: read at most this much of it.
LOG_HEAD_BYTES = 512 * 1024


# Query parameters of a request.
Query = Collection[tuple[str, str]]

# API answers that no retry can change: the object itself is refused.
REFUSED_STATUSES = frozenset({400, 422})


class ChildRefusedError(Exception):
    """The API server refused a child object (400 BadRequest, 422 Invalid): retrying cannot help."""

    def __init__(self, kind: str, name: str, status: int, message: str) -> None:
        super().__init__(f"{kind} {name} refused ({status}): {message}")
        self.kind, self.name, self.status, self.message = kind, name, status, message


class KubePort(Protocol):
    """What the reconcilers need from the cluster (a fake in tests/unit/controller)."""

    def apply(self, obj: dict[str, Any]) -> None: ...

    def read_child(self, obj: dict[str, Any]) -> dict[str, Any] | None: ...

    def patch_child(self, obj: dict[str, Any], patch: dict[str, Any]) -> None: ...

    def delete_stale_replicas(self, namespace: str, server: str, rendered: Collection[str]) -> list[str]: ...

    def delete_deployments(self, namespace: str, server: str) -> list[str]: ...

    def patch_server_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...

    def annotate_server(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None: ...

    def patch_assignment_status(self, name: str, patch: dict[str, Any]) -> None: ...

    def create_event(self, namespace: str, event: dict[str, Any]) -> None: ...

    def patch_gpu_node_status(self, name: str, patch: dict[str, Any]) -> bool: ...

    def patch_node_metadata(
        self, name: str, labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
    ) -> None: ...

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def namespace_labels(self) -> dict[str, dict[str, str]]: ...

    def put_config_map_data(self, namespace: str, name: str, data: dict[str, str]) -> None: ...

    def log_tail(self, namespace: str, pod: str, container: str) -> str: ...

    def log_head(self, namespace: str, pod: str, container: str) -> str: ...


def api_message(error: ApiException) -> str:
    """The API server's own message from an error body (a Status object), else the HTTP reason."""
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or error.reason or f"HTTP {error.status}")


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # (apiVersion, kind) -> the API resource, found through discovery once.
        self._resources: dict[tuple[str, str], Any] = {}

    # The generated APIs (large modules, imported when first used) for the calls made now and then.
    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @cached_property
    def dynamic(self) -> Any:
        """The dynamic client (API discovery) for the rarer child calls: made when one is first needed."""
        return dynamic.DynamicClient(self.api)  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        found = self._resources.get((api_version, kind))
        if found is None:
            found = self._resources[(api_version, kind)] = self.dynamic.resources.get(
                api_version=api_version, kind=kind
            )
        return found

    def send(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json", query: Query = ()
    ) -> bytes:
        """One request through the client's transport; returns the reply's bytes, from which nothing is
        built unless the caller parses them. Raises ApiException (the client's subclass for the status)
        as the generated API would."""
        request = self.api.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        data: bytes = response.read()  # type: ignore[no-untyped-call]  # all of it: the connection goes back to the pool
        if not 200 <= response.status <= 299:
            self.api.response_deserialize(response, {})  # raises the error of the status, with its body
        return data

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply one child object (forced: the operator owns these fields).

        Raises ChildRefusedError when the API server refuses the object itself."""
        meta = obj["metadata"]
        path = self._resource(obj["apiVersion"], obj["kind"]).path(name=meta["name"], namespace=meta["namespace"])
        try:
            self.send(
                "PATCH",
                path,
                obj,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            )
        except ApiException as error:
            if error.status in REFUSED_STATUSES:
                raise ChildRefusedError(obj["kind"], meta["name"], error.status, api_message(error)) from None
            raise

    def read_child(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live version of a child object (same kind, namespace, name), None when it does not exist."""
        meta = obj["metadata"]
        try:
            found = self.dynamic.get(
                self._resource(obj["apiVersion"], obj["kind"]), name=meta["name"], namespace=meta["namespace"]
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        live: dict[str, Any] = found.to_dict()
        return live

    def patch_child(self, obj: dict[str, Any], patch: dict[str, Any]) -> None:
        """A strategic merge patch of a child object (what server-side apply cannot do: delete list
        items that other field managers own)."""
        meta = obj["metadata"]
        self.dynamic.patch(
            self._resource(obj["apiVersion"], obj["kind"]),
            body=patch,
            name=meta["name"],
            namespace=meta["namespace"],
            content_type="application/strategic-merge-patch+json",
            field_manager=FIELD_MANAGER,
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

    def delete_deployments(self, namespace: str, server: str) -> list[str]:
        """Delete every Deployment of a server (replica 0's too): it holds no placement, so nothing of it
        may keep running on memory no reservation covers; returns their names."""
        found = self.dynamic.get(
            self._resource("apps/v1", "Deployment"), namespace=namespace, label_selector=f"{SERVER_LABEL}={server}"
        )
        names = sorted(item.metadata.name for item in found.items)
        for name in names:
            self.delete_child("apps/v1", "Deployment", namespace, name)
        return names

    def patch_server_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of a server's status."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/inferenceservers/{quote(name)}/status"
        self.send("PATCH", path, patch, content_type="application/merge-patch+json")

    def annotate_server(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", name, body)

    def patch_assignment_status(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpuassignments", name, patch)

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """Post an Event; events are best effort, so a refusal is logged, not raised."""
        body: Any = event
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as error:
            log.warning("event %s not posted: %s", event.get("reason"), api_message(error))

    def patch_gpu_node_status(self, name: str, patch: dict[str, Any]) -> bool:
        """Patch a GpuNode's status; False when it changed since the patch's resourceVersion, or is gone."""
        try:
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", name, patch)
        except ApiException as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    def patch_node_metadata(
        self, name: str, labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
    ) -> None:
        """Merge-patch a Node's labels and annotations (None removes one); a Node gone meanwhile is no error."""
        body = {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}}
        try:
            self.send(
                "PATCH", f"/api/v1/nodes/{quote(name)}", body, content_type="application/strategic-merge-patch+json"
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            found = json.loads(self.send("GET", f"/api/v1/namespaces/{quote(namespace)}/configmaps/{quote(name)}"))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found.get("data") or {})

    def put_config_map_data(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create the ConfigMap with `data`, or replace its data (keys left out are removed)."""
        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, namespace=namespace), data=data)
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.replace_namespaced_config_map(name, namespace, body)

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

    def log_head(self, namespace: str, pod: str, container: str) -> str:
        """The start of the running container's log (its start-up report), bounded in bytes."""
        try:
            text: str = self.core.read_namespaced_pod_log(
                pod, namespace, container=container, limit_bytes=LOG_HEAD_BYTES
            )
        except ApiException:
            return ""  # the kubelet serves no log (yet)
        return text
