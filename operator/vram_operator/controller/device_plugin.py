"""Keeping the NVIDIA device plugin off the nodes the operator places servers on.

Envvar-pinned server pods request no `nvidia.com/gpu` (the device plugin would choose the GPUs),
so the device plugin does not know those GPUs are taken and could hand them to a pod that requests
`nvidia.com/gpu`: two tenants on one card, one of them unseen by the planner. Reservation pods
(KAI Scheduler's way) cannot prevent it here: the device plugin, not the requester, chooses which
GPU a pod gets, so a reservation cannot be steered to the GPUs the planner chose; only holding every
GPU of the node would, which is what taking the node off the device plugin does without pods.

So every node with a GpuNode (the agent runs there: the operator places on it) is labelled
`nvidia.com/gpu.deploy.device-plugin=false`, the NVIDIA GPU Operator's switch for its device-plugin
DaemonSet (it sets the label to "true" only where it is absent). The kubelet then withdraws the
node's `nvidia.com/gpu` capacity, and pods requesting it stay off the node. The value the label had
is kept in an annotation and put back when the node stops being managed (its GpuNode deleted, or the
operator run with --no-device-plugin-label). A node an admin labelled "false" is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from vram_operator.controller.registry import REGISTRY
from vram_operator.controller.runtime import Runtime
from vram_operator.controller.server_reconciler import nodes_of

log = logging.getLogger(__name__)

DEVICE_PLUGIN_LABEL = "nvidia.com/gpu.deploy.device-plugin"
DISABLED = "false"
# Set with the label: the label's value before ("" when it had none), so it can be put back.
PREVIOUS_ANNOTATION = "vram.dev/device-plugin-label-before"


@dataclass(frozen=True)
class NodeLabelState:
    """What a Node says about the device-plugin label: its value, and whether the operator set it."""

    label: str | None
    previous: str | None  # the PREVIOUS_ANNOTATION: None when the operator did not set the label


@kopf.index("", "v1", "nodes", id="device_plugin_nodes", registry=REGISTRY)
async def device_plugin_nodes(
    *, name: str, labels: kopf.Labels, annotations: kopf.Annotations, **_: Any
) -> dict[str, Any]:
    return {name: NodeLabelState(labels.get(DEVICE_PLUGIN_LABEL), annotations.get(PREVIOUS_ANNOTATION))}


@dataclass(frozen=True)
class NodePatch:
    """Labels and annotations to set on a Node (None removes one)."""

    labels: Mapping[str, str | None]
    annotations: Mapping[str, str | None]


def node_patches(managed: frozenset[str], nodes: Mapping[str, NodeLabelState]) -> dict[str, NodePatch]:
    """Per Node, what to write so that managed Nodes are off the device plugin and the others are as
    they were before the operator labelled them."""
    patches: dict[str, NodePatch] = {}
    for name, state in nodes.items():
        ours = state.previous is not None
        if name in managed and state.label != DISABLED:
            before = state.previous if ours else (state.label or "")
            patches[name] = NodePatch({DEVICE_PLUGIN_LABEL: DISABLED}, {PREVIOUS_ANNOTATION: before})
        elif name not in managed and ours:
            patches[name] = NodePatch({DEVICE_PLUGIN_LABEL: state.previous or None}, {PREVIOUS_ANNOTATION: None})
    return patches


def label_states(index: Mapping[str, Any] | None) -> dict[str, NodeLabelState]:
    """The Nodes of the index by name (each key of a kopf index holds a store of values)."""
    return {name: state for name, store in (index or {}).items() for state in store}


class DevicePluginLabels:
    """Each check interval: labels the Nodes with a GpuNode off the device plugin, and restores the rest."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def check(self, indexes: Mapping[str, Any]) -> None:
        enabled = self.rt.settings.device_plugin_label
        managed = frozenset(n.metadata.name for n in nodes_of(indexes["gpu_nodes"])) if enabled else frozenset()
        for name, patch in node_patches(managed, label_states(indexes["device_plugin_nodes"])).items():
            try:
                await asyncio.to_thread(self.rt.kube.patch_node_metadata, name, patch.labels, patch.annotations)
            except Exception:  # one node's trouble must not stop the others
                log.exception("labelling Node %s for the device plugin failed", name)
