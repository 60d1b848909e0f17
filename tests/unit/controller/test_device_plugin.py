"""Nodes with a GpuNode are labelled off the NVIDIA device plugin, and put back as they were after."""

from __future__ import annotations

import asyncio

from fake_kube import FakeKube
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.gpu_node import GpuNode
from vram_operator.controller.device_plugin import (
    DEVICE_PLUGIN_LABEL,
    PREVIOUS_ANNOTATION,
    DevicePluginLabels,
    NodeLabelState,
    NodePatch,
    node_patches,
)
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.runtime import Runtime
from vram_operator.controller.settings import ControllerSettings


def test_a_managed_node_is_labelled_off_and_remembers_the_gpu_operators_value() -> None:
    patches = node_patches(frozenset({"gpu-a"}), {"gpu-a": NodeLabelState("true", None)})
    assert patches == {"gpu-a": NodePatch({DEVICE_PLUGIN_LABEL: "false"}, {PREVIOUS_ANNOTATION: "true"})}


def test_a_node_without_the_label_remembers_it_had_none() -> None:
    patches = node_patches(frozenset({"gpu-a"}), {"gpu-a": NodeLabelState(None, None)})
    assert patches["gpu-a"].annotations == {PREVIOUS_ANNOTATION: ""}


def test_nodes_already_off_or_not_managed_are_left_alone() -> None:
    nodes = {
        "labelled-by-us": NodeLabelState("false", "true"),
        "labelled-by-the-admin": NodeLabelState("false", None),
        "cpu": NodeLabelState(None, None),
        "device-plugin-node": NodeLabelState("true", None),
    }
    assert node_patches(frozenset({"labelled-by-us", "labelled-by-the-admin"}), nodes) == {}


def test_a_node_no_longer_managed_gets_its_label_back() -> None:
    nodes = {"was-true": NodeLabelState("false", "true"), "had-none": NodeLabelState("false", "")}
    assert node_patches(frozenset(), nodes) == {
        "was-true": NodePatch({DEVICE_PLUGIN_LABEL: "true"}, {PREVIOUS_ANNOTATION: None}),
        "had-none": NodePatch({DEVICE_PLUGIN_LABEL: None}, {PREVIOUS_ANNOTATION: None}),
    }


def apply(state: NodeLabelState, patch: NodePatch | None) -> NodeLabelState:
    if patch is None:
        return state
    return NodeLabelState(patch.labels[DEVICE_PLUGIN_LABEL], patch.annotations[PREVIOUS_ANNOTATION])


@given(st.sampled_from([None, "true", "false", "other"]), st.integers(min_value=1, max_value=3))
def test_managing_then_releasing_restores_the_node(label: str | None, rounds: int) -> None:
    """Managed: the label is "false" (whoever set it); released: the Node is exactly as before, however
    many check intervals ran in each state."""
    original = NodeLabelState(label, None)
    state = original
    for _ in range(rounds):
        state = apply(state, node_patches(frozenset({"n"}), {"n": state}).get("n"))
        assert state.label == "false"
    for _ in range(rounds):
        state = apply(state, node_patches(frozenset(), {"n": state}).get("n"))
    assert state == original


def runtime(kube: FakeKube, *, enabled: bool) -> Runtime:
    return Runtime(settings=ControllerSettings(device_plugin_label=enabled), kube=kube, metrics=Metrics())


def test_the_check_labels_gpu_nodes_and_restores_everything_when_turned_off() -> None:
    gpu_nodes = {"gpu-a": [GpuNode.model_validate({"metadata": {"name": "gpu-a"}})]}
    nodes = {"gpu-a": [NodeLabelState("true", None)], "old": [NodeLabelState("false", "")]}
    indexes = {"gpu_nodes": gpu_nodes, "device_plugin_nodes": nodes}
    kube = FakeKube()
    asyncio.run(DevicePluginLabels(runtime(kube, enabled=True)).check(indexes))
    assert kube.node_patches == [
        ("gpu-a", {DEVICE_PLUGIN_LABEL: "false"}, {PREVIOUS_ANNOTATION: "true"}),
        ("old", {DEVICE_PLUGIN_LABEL: None}, {PREVIOUS_ANNOTATION: None}),
    ]
    kube = FakeKube()
    nodes["gpu-a"] = [NodeLabelState("false", "true")]
    asyncio.run(DevicePluginLabels(runtime(kube, enabled=False)).check(indexes))
    assert ("gpu-a", {DEVICE_PLUGIN_LABEL: "true"}, {PREVIOUS_ANNOTATION: None}) in kube.node_patches
