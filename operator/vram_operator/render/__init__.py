"""Rendering: a placed InferenceServer in, plain Kubernetes objects (dicts) out. Pure: no I/O."""

from vram_operator.render.deployment import PLACEMENT_HASH_ANNOTATION, RenderedDeployment, render_deployment
from vram_operator.render.engine import LlamaCppLaunch
from vram_operator.render.errors import RenderError
from vram_operator.render.pinning import claim_name, render_resource_claims
from vram_operator.render.server import PlacedReplica, Rendered, render
from vram_operator.render.service import render_service
from vram_operator.render.settings import PINNING_MODES, PinningMode, ProbeTimings, RenderSettings

__all__ = [
    "PINNING_MODES",
    "PLACEMENT_HASH_ANNOTATION",
    "LlamaCppLaunch",
    "PinningMode",
    "PlacedReplica",
    "ProbeTimings",
    "RenderError",
    "RenderSettings",
    "Rendered",
    "RenderedDeployment",
    "claim_name",
    "render",
    "render_deployment",
    "render_resource_claims",
    "render_service",
]
