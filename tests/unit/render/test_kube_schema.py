"""Every rendered object validates against the Kubernetes schemas, and the validator is strict."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kube_schema import assert_valid, validation_errors
from render_builders import UUID_A, UUID_B, generic, llamacpp, placement, server, vllm

from vram_operator.render import PINNING_MODES, PinningMode, PlacedReplica, RenderSettings, render

SPECS = {
    "vllm-tp2": vllm(tensorParallelSize=2, resources={"limits": {"memory": "32Gi"}}),
    "llamacpp": llamacpp(maxModelLen=8192),
    "generic": generic(env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
}


@pytest.mark.parametrize("mode", PINNING_MODES)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_rendered_object_is_valid(mode: PinningMode, name: str) -> None:
    spec = SPECS[name]
    uuids = (UUID_A, UUID_B)[: spec.get("tensorParallelSize", 1)]
    rendered = render(server(spec), [PlacedReplica(0, placement(*uuids), 0.6)], RenderSettings(pinning_mode=mode))
    for obj in rendered.objects:
        assert_valid(obj)


def _deployment() -> dict[str, Any]:
    return render(server(vllm()), [PlacedReplica(0, placement(), 0.5)], RenderSettings()).deployment


def test_validator_rejects_a_misspelled_field() -> None:
    broken = copy.deepcopy(_deployment())
    pod = broken["spec"]["template"]["spec"]
    pod["runtimeClass"] = pod.pop("runtimeClassName")
    assert any("runtimeClass" in error for error in validation_errors(broken))


def test_validator_rejects_a_misplaced_field() -> None:
    broken = copy.deepcopy(_deployment())
    pod = broken["spec"]["template"]["spec"]
    pod["containers"][0]["affinity"] = pod.pop("affinity")
    assert any("affinity" in error for error in validation_errors(broken))


def test_validator_rejects_a_wrong_type_and_a_missing_required_field() -> None:
    broken = copy.deepcopy(_deployment())
    broken["spec"]["replicas"] = "1"
    del broken["spec"]["selector"]
    errors = validation_errors(broken)
    assert any(error.startswith("spec.replicas") for error in errors)
    assert any("'selector' is a required property" in error for error in errors)


def test_validator_rejects_a_value_outside_an_enum() -> None:
    broken = copy.deepcopy(_deployment())
    broken["spec"]["strategy"]["type"] = "Recreat"
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    errors = validation_errors(broken)
    assert any(error.startswith("spec.strategy.type") for error in errors)
    assert any(error.startswith("spec.template.spec.containers.0.imagePullPolicy") for error in errors)


def test_validator_knows_only_the_kinds_it_has_schemas_for() -> None:
    assert validation_errors({"apiVersion": "v1", "kind": "Pod"}) == ["no schema for apiVersion/kind ('v1', 'Pod')"]
