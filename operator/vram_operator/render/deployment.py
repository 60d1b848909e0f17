"""The server's Deployment: engine container, device pinning, pass-through fields, roll-out rules."""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.render.engine import EngineContainer, LlamaCppLaunch, engine_container, probes
from vram_operator.render.errors import RenderError
from vram_operator.render.hardening import container_security_context, default_requests, pod_security_context
from vram_operator.render.host_access import host_access
from vram_operator.render.metadata import (
    deployment_name,
    object_metadata,
    replica_labels,
    selector_labels,
    server_labels,
)
from vram_operator.render.pinning import DEVICE_PLUGIN_RESOURCE, PodPinning, pod_pinning
from vram_operator.render.settings import RenderSettings

PLACEMENT_HASH_ANNOTATION = "vram.dev/placement-hash"
NODE_ANNOTATION = "vram.dev/node"
GPUS_ANNOTATION = "vram.dev/gpus"
BUDGET_ANNOTATION = "vram.dev/budget-mib"
CONTAINER_NAME = "engine"
SHM_VOLUME = "vram-dshm"
SHM_PATH = "/dev/shm"
HOST_ACCESS_REASON = "HostAccessRefused"
# Pod fields that come from the server's spec: the user's volumes come first in the pod, at the
# same index, and the engine container is the only one.
SPEC_FIELDS_IN_POD = (
    ("volumes[", "spec.volumes["),
    ("securityContext.", "spec.podSecurityContext."),
    ("containers[0].securityContext.", "spec.securityContext."),
)


class RenderedDeployment(NamedTuple):
    """The Deployment and what the user should know about how it was rendered."""

    deployment: dict[str, Any]
    warnings: tuple[str, ...]


def check_placement(server: InferenceServer, placement: PlacementStatus) -> None:
    """A placement the pod can actually be pinned to: a node and one GPU per tensor-parallel rank."""
    if not placement.node:
        raise RenderError("no node in the placement", field="status.placement.node")
    wanted = server.spec.gpus_per_replica
    if len(placement.gpus) != wanted:
        raise RenderError(
            f"{len(placement.gpus)} GPUs placed, tensorParallelSize x pipelineParallelSize needs {wanted}",
            field="status.placement.gpus",
        )
    uuids = [gpu.uuid for gpu in placement.gpus]
    if len(set(uuids)) != len(uuids) or not all(uuids):
        raise RenderError("GPU UUIDs must be present and distinct", field="status.placement.gpus")
    if server.spec.engine == "generic" and placement.budget_mib <= 0:
        # A generic service learns its budget only from VRAM_BUDGET_*; zero would tell it nothing.
        raise RenderError("a generic server needs a positive budget", field="status.placement.budgetMiB")


def placement_hash(placement: PlacementStatus, engine: EngineContainer, settings: RenderSettings) -> str:
    """A digest of everything that decides where and how the engine runs.

    It goes into the pod template, so a new node, GPU, budget or command line rolls the pods,
    while a re-render of the same placement (even with a reworded reason) leaves them alone.
    """
    facts = {
        "node": placement.node,
        "gpus": [gpu.uuid for gpu in placement.gpus],
        "budgetMiB": round(placement.budget_mib, 1),
        "pinningMode": settings.pinning_mode,
        "command": list(engine.command),
        "args": list(engine.args),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _resources(
    server: InferenceServer, pinning: PodPinning, weights_mib: float | None
) -> tuple[dict[str, Any], list[str]]:
    """spec.resources over the default requests, without device-plugin GPUs, plus the GPU claims in dra mode."""
    resources = dict(server.spec.resources or {})
    # A resource the user limits gets no default request: Kubernetes takes the limit as the request,
    # and a default above a smaller limit would make the pod invalid.
    limited = set(resources.get("limits") or {})
    defaults = {name: amount for name, amount in default_requests(server, weights_mib).items() if name not in limited}
    resources["requests"] = {**defaults, **(resources.get("requests") or {})}
    warnings: list[str] = []
    for section in ("requests", "limits"):
        amounts = dict(resources.get(section) or {})
        if DEVICE_PLUGIN_RESOURCE in amounts:
            del amounts[DEVICE_PLUGIN_RESOURCE]
            warnings.append(
                f"spec.resources.{section}: {DEVICE_PLUGIN_RESOURCE} removed; the operator pins the placed GPUs itself"
            )
        if amounts:
            resources[section] = amounts
        else:
            resources.pop(section, None)
    if pinning.resource_claims:
        resources["claims"] = [dict(claim) for claim in pinning.resource_claims]
    return resources, warnings


def _env(server: InferenceServer, ours: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """spec.env first, then the operator's variables; a user variable with one of our names is dropped."""
    names = {item["name"] for item in ours}
    kept = [dict(item) for item in server.spec.env if item.get("name") not in names]
    warnings = [
        f"spec.env: {item.get('name')} ignored; the operator sets it from the placement"
        for item in server.spec.env
        if item.get("name") in names
    ]
    return kept + ours, warnings


def _shared_memory(server: InferenceServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A memory-backed /dev/shm for multi-GPU vLLM: NCCL fails with the runtime's 64 MiB default."""
    user_mounts = {mount.get("mountPath") for mount in server.spec.volume_mounts}
    if server.spec.engine != "vllm" or server.spec.gpus_per_replica == 1 or SHM_PATH in user_mounts:
        return [], []
    return [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}], [{"name": SHM_VOLUME, "mountPath": SHM_PATH}]


def refuse_host_access(pod_spec: dict[str, Any], settings: RenderSettings) -> None:
    """A pod that would reach the host is refused unless the operator was told to allow it."""
    found = host_access(pod_spec)
    if not found or settings.allow_host_access:
        return
    # The user's volumes come first in the pod, at the same index: name the spec field they came from.
    field = _spec_field(found[0].field)
    raise RenderError(
        f"host access refused ({'; '.join(access.what for access in found)}): the operator runs without "
        "--allow-host-access (chart value admission.allowHostAccess)",
        field=field,
        reason=HOST_ACCESS_REASON,
    )


def _spec_field(pod_field: str) -> str:
    """The InferenceServer field a pod field came from, where the server has one."""
    for pod_prefix, spec_prefix in SPEC_FIELDS_IN_POD:
        if pod_field.startswith(pod_prefix):
            return spec_prefix + pod_field.removeprefix(pod_prefix)
    return f"spec.template.spec.{pod_field}"


def _without_empty(fields: dict[str, Any]) -> dict[str, Any]:
    # The API server drops empty lists and maps when it stores an object; leaving them out keeps
    # the rendered object equal to the stored one, so comparing the two finds real changes only.
    return {key: value for key, value in fields.items() if value not in ([], {})}


def render_deployment(
    server: InferenceServer,
    placement: PlacementStatus,
    utilization: float | None,
    settings: RenderSettings,
    launch: LlamaCppLaunch | None = None,
    *,
    replica: int = 0,
    weights_mib: float | None = None,
) -> RenderedDeployment:
    """The apps/v1 Deployment running one replica of the server on that replica's placement.

    Each replica has a Deployment of its own with one pod (none while spec.replicas is 0), pinned to
    its own GPU(s). `utilization` is the replica's vLLM --gpu-memory-utilization (ignored by other
    engines); `launch` carries llama.cpp's layer count and context from sizing; `weights_mib` (per
    rank) sizes the host-memory request.
    """
    check_placement(server, placement)
    engine = engine_container(server, placement, utilization, settings, launch)
    pinning = pod_pinning(placement, settings)
    resources, resource_warnings = _resources(server, pinning, weights_mib)
    env, env_warnings = _env(server, [*engine.env, *pinning.env])
    shm_volumes, shm_mounts = _shared_memory(server)

    container = _without_empty(
        {
            "name": CONTAINER_NAME,
            "image": server.spec.image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": list(engine.command),
            "args": list(engine.args),
            "ports": [{"name": "http", "containerPort": engine.port, "protocol": "TCP"}],
            "env": env,
            "resources": resources,
            "volumeMounts": [dict(mount) for mount in server.spec.volume_mounts] + shm_mounts,
            # Engines print their memory errors to the log: the kubelet copies the tail into the
            # termination message, so the operator reads failures from the pod status.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security_context(server),
            **probes(engine.probe_handler, settings),
        }
    )
    pod_spec = _without_empty(
        {
            **pinning.pod_fields,
            # Engines never call the Kubernetes API: no token in the pod.
            "automountServiceAccountToken": False,
            "securityContext": pod_security_context(server),
            "containers": [container],
            "volumes": [dict(volume) for volume in server.spec.volumes] + shm_volumes,
            "tolerations": [dict(toleration) for toleration in settings.tolerations]
            + [dict(toleration) for toleration in server.spec.tolerations],
        }
    )
    refuse_host_access(pod_spec, settings)

    annotations = {
        PLACEMENT_HASH_ANNOTATION: placement_hash(placement, engine, settings),
        NODE_ANNOTATION: placement.node,
        GPUS_ANNOTATION: ",".join(gpu.uuid for gpu in placement.gpus),
        BUDGET_ANNOTATION: str(int(placement.budget_mib)),
    }
    metadata = object_metadata(server, settings)
    metadata["name"] = deployment_name(server, replica)
    metadata["labels"] = {**metadata["labels"], **replica_labels(replica)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": min(server.spec.replicas, 1),
            "selector": {"matchLabels": {**selector_labels(server), **replica_labels(replica)}},
            # Recreate, never RollingUpdate: a rolling update starts the new pod while the old one
            # still holds its VRAM, so on a GPU sized for one copy the new pod fails its memory
            # check (or starves a neighbour). The old pod must release the GPU first.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {
                    "labels": {**server_labels(server, settings), **replica_labels(replica)},
                    "annotations": annotations,
                },
                "spec": pod_spec,
            },
        },
    }
    warnings = [*resource_warnings, *env_warnings]
    if not server.metadata.uid:
        warnings.append("metadata.uid: absent, so the Deployment has no owner reference")
    return RenderedDeployment(deployment, tuple(warnings))
