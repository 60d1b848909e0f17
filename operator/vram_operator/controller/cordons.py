"""Cordoned Kubernetes Nodes (`kubectl cordon`: spec.unschedulable) as the planner sees them.

A GpuNode can be cordoned for the operator alone (spec.cordoned); a cordoned Node is treated the
same way: no new placement goes there (the scheduler would leave its pods Pending), while the
servers that stand there stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from vram_operator.api.gpu_node import GpuNode
from vram_operator.controller.registry import REGISTRY


@kopf.index("", "v1", "nodes", id="unschedulable_nodes", registry=REGISTRY)
async def unschedulable_nodes(*, name: str, spec: kopf.Spec, **_: Any) -> dict[str, bool]:
    return {name: True} if spec.get("unschedulable") else {}


def unschedulable(index: Mapping[str, Any] | None) -> frozenset[str]:
    """Names of the cordoned Nodes in the index (none before it is filled)."""
    return frozenset(index or {})


def with_cordons(nodes: Iterable[GpuNode], cordoned: frozenset[str]) -> list[GpuNode]:
    """The GpuNodes, those of cordoned Nodes marked cordoned."""
    return [
        node.model_copy(update={"spec": node.spec.model_copy(update={"cordoned": True})})
        if node.metadata.name in cordoned and not node.spec.cordoned
        else node
        for node in nodes
    ]
