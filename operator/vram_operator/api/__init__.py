"""pydantic models of the vram.dev/v1alpha1 CRDs: the single source of truth (crds/ is generated)."""

from vram_operator.api.base import API_VERSION, GROUP, VERSION, Condition, ObjectMeta, Resource
from vram_operator.api.gpu_assignment import GpuAssignment, GpuAssignmentSpec, GpuAssignmentStatus
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeStatus, GpuProcess
from vram_operator.api.inference_server import (
    EstimateStatus,
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacementStatus,
)

RESOURCES: tuple[type[Resource], ...] = (InferenceServer, GpuAssignment, GpuNode)

__all__ = [
    "API_VERSION",
    "GROUP",
    "RESOURCES",
    "VERSION",
    "Condition",
    "EstimateStatus",
    "GpuAssignment",
    "GpuAssignmentSpec",
    "GpuAssignmentStatus",
    "GpuDeviceStatus",
    "GpuNode",
    "GpuNodeStatus",
    "GpuProcess",
    "InferenceServer",
    "InferenceServerSpec",
    "InferenceServerStatus",
    "ObjectMeta",
    "PlacementStatus",
    "Resource",
]
