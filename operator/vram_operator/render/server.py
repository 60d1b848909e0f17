"""Everything one placed server needs in the cluster, rendered in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.render.deployment import render_deployment
from vram_operator.render.engine import LlamaCppLaunch
from vram_operator.render.errors import RenderError
from vram_operator.render.metadata import namespace_of
from vram_operator.render.network_policy import render_network_policy
from vram_operator.render.pinning import render_resource_claims
from vram_operator.render.service import render_service
from vram_operator.render.settings import RenderSettings


@dataclass(frozen=True)
class PlacedReplica:
    """One replica of a server where it was placed, and how its engine starts there."""

    replica: int
    placement: PlacementStatus
    utilization: float | None = None
    launch: LlamaCppLaunch | None = None
    # Weights per GPU rank (status.estimate.weightsMiB): sizes the pod's host-memory request.
    weights_mib: float | None = None


@dataclass(frozen=True)
class Rendered:
    """The objects of one server (a Deployment per replica) and the warnings rendering them produced."""

    deployments: tuple[dict[str, Any], ...]
    service: dict[str, Any]
    resource_claims: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]
    network_policy: dict[str, Any] | None = None

    @property
    def deployment(self) -> dict[str, Any]:
        """Replica 0's Deployment (named after the server)."""
        return self.deployments[0]

    @property
    def objects(self) -> list[dict[str, Any]]:
        """In apply order: the claims exist before the pods that reference them, the policy before the pods."""
        policy = [self.network_policy] if self.network_policy is not None else []
        return [*self.resource_claims, *policy, *self.deployments, self.service]


def render(server: InferenceServer, replicas: Sequence[PlacedReplica], settings: RenderSettings) -> Rendered:
    """Deployments (one per replica), Service and (dra mode) ResourceClaims of a server on its placements."""
    if not replicas:
        raise RenderError("no placed replica to render", field="status.replicaPlacements")
    deployments = [
        render_deployment(
            server, r.placement, r.utilization, settings, r.launch, replica=r.replica, weights_mib=r.weights_mib
        )
        for r in sorted(replicas, key=lambda r: r.replica)
    ]
    claims = {
        claim["metadata"]["name"]: claim
        for r in replicas
        for claim in render_resource_claims(r.placement, settings, namespace_of(server))
    }
    return Rendered(
        deployments=tuple(d.deployment for d in deployments),
        service=render_service(server, settings),
        resource_claims=tuple(claims.values()),
        warnings=tuple(dict.fromkeys(w for d in deployments for w in d.warnings)),
        network_policy=render_network_policy(server, settings),
    )
