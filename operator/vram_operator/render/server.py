"""Everything one placed server needs in the cluster, rendered in one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.render.deployment import render_deployment
from vram_operator.render.engine import LlamaCppLaunch
from vram_operator.render.metadata import namespace_of
from vram_operator.render.pinning import render_resource_claims
from vram_operator.render.service import render_service
from vram_operator.render.settings import RenderSettings


@dataclass(frozen=True)
class Rendered:
    """The objects of one server and the warnings rendering them produced."""

    deployment: dict[str, Any]
    service: dict[str, Any]
    resource_claims: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]

    @property
    def objects(self) -> list[dict[str, Any]]:
        """In apply order: the claims exist before the pods that reference them."""
        return [*self.resource_claims, self.deployment, self.service]


def render(
    server: InferenceServer,
    placement: PlacementStatus,
    utilization: float | None,
    settings: RenderSettings,
    launch: LlamaCppLaunch | None = None,
) -> Rendered:
    """Deployment, Service and (dra mode) ResourceClaims of a server on its placement."""
    deployment = render_deployment(server, placement, utilization, settings, launch)
    return Rendered(
        deployment=deployment.deployment,
        service=render_service(server, settings),
        resource_claims=tuple(render_resource_claims(placement, settings, namespace_of(server))),
        warnings=deployment.warnings,
    )
