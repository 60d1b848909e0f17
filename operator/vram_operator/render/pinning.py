"""Device pinning: how a pod gets exactly the GPUs of its placement, in envvar or dra mode.

envvar: the pod is bound to the node and the NVIDIA container runtime exposes the GPUs listed in
NVIDIA_VISIBLE_DEVICES. No nvidia.com/gpu request: the device plugin would pick GPUs itself.
dra: one ResourceClaim per physical GPU (or MIG device, under the driver's MIG device class),
selected by UUID; every pod placed on that GPU references the same claim, which is what lets
several servers share one card.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from vram_operator.api import PlacementStatus
from vram_operator.render.metadata import MANAGED_BY
from vram_operator.render.settings import RenderSettings

RESOURCE_API_VERSION = "resource.k8s.io/v1"
DEVICE_PLUGIN_RESOURCE = "nvidia.com/gpu"
NAME_MAX = 253
CLAIM_COMPONENT = "gpu-claim"
NODE_ANNOTATION = "vram.dev/node"
GPU_UUID_ANNOTATION = "vram.dev/gpu-uuid"


@dataclass(frozen=True)
class PodPinning:
    """What pinning adds to the pod spec and to the engine container."""

    pod_fields: dict[str, Any]
    env: tuple[dict[str, Any], ...]
    resource_claims: tuple[dict[str, Any], ...]  # container resources.claims entries


def claim_name(node: str, uuid: str) -> str:
    """The ResourceClaim of one physical GPU: the same for every pod placed on it.

    Lower case letters, digits and single dashes, at most 253 characters: a valid object name.
    Whenever that loses information (dots in the node name, an over-long name) a short hash of
    the original keeps distinct GPUs apart.
    """
    raw = f"{node}-{uuid}".lower()
    name = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")
    if name == raw and len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{name[: NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}".lstrip("-")


def node_affinity(node: str) -> dict[str, Any]:
    """Required affinity to the placed node, by object name.

    metadata.name, not the kubernetes.io/hostname label: the two differ on some clouds, and a
    GpuNode is named after the Node object.
    """
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def pod_claim_name(position: int) -> str:
    """The pod-local name of the claim of the placement's n-th GPU."""
    return f"gpu-{position}"


def pod_pinning(placement: PlacementStatus, settings: RenderSettings) -> PodPinning:
    """Pod and container fields that pin the placement's GPUs."""
    pod_fields: dict[str, Any] = {"affinity": node_affinity(placement.node)}
    if settings.pinning_mode == "envvar":
        pod_fields["runtimeClassName"] = settings.runtime_class_name
        env = (
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": ",".join(gpu.uuid for gpu in placement.gpus)},
            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"},
        )
        return PodPinning(pod_fields, env, ())
    pod_fields["resourceClaims"] = [
        {"name": pod_claim_name(position), "resourceClaimName": claim_name(placement.node, gpu.uuid)}
        for position, gpu in enumerate(placement.gpus)
    ]
    claims = tuple({"name": pod_claim_name(position)} for position in range(len(placement.gpus)))
    return PodPinning(pod_fields, (), claims)


def uuid_selector(uuid: str, settings: RenderSettings) -> str:
    """CEL that matches exactly one device of the NVIDIA DRA driver: the GPU with this UUID."""
    return f'device.attributes["{settings.device_attribute_domain}"].uuid == "{uuid}"'


def render_resource_claims(
    placement: PlacementStatus, settings: RenderSettings, namespace: str
) -> list[dict[str, Any]]:
    """One ResourceClaim per placed GPU (dra mode; none in envvar mode).

    The claims have no owner: several servers' pods share one, so the controller deletes a claim
    once no server is placed on its GPU (found by the labels and annotations set here).
    """
    if settings.pinning_mode != "dra":
        return []
    labels = {**settings.extra_labels, "app.kubernetes.io/managed-by": MANAGED_BY}
    labels["app.kubernetes.io/component"] = CLAIM_COMPONENT
    return [
        {
            "apiVersion": RESOURCE_API_VERSION,
            "kind": "ResourceClaim",
            "metadata": {
                "name": claim_name(placement.node, gpu.uuid),
                "namespace": namespace,
                "labels": dict(labels),
                "annotations": {NODE_ANNOTATION: placement.node, GPU_UUID_ANNOTATION: gpu.uuid},
            },
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": settings.mig_device_class if gpu.mig else settings.device_class,
                                "allocationMode": "ExactCount",
                                "count": 1,
                                "selectors": [{"cel": {"expression": uuid_selector(gpu.uuid, settings)}}],
                            },
                        }
                    ]
                }
            },
        }
        for gpu in placement.gpus
    ]
