"""Validation rules of the API models mirror the CEL rules the API server enforces."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vram_operator.api import GpuAssignment, InferenceServer


def _server(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"engine": "vllm", "image": "vllm/vllm-openai:v0.19.0", "model": {"name": "Qwen/Qwen2.5-7B"}}
    base.update(spec)
    return {
        "apiVersion": "vram.dev/v1alpha1",
        "kind": "InferenceServer",
        "metadata": {"name": "s", "namespace": "ai"},
        "spec": base,
    }


def test_generic_server_needs_only_engine_image_and_budget() -> None:
    obj = InferenceServer.model_validate(
        {
            "kind": "InferenceServer",
            "metadata": {"name": "yolo", "namespace": "ai"},
            "spec": {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi"},
        }
    )
    assert obj.spec.vram_budget == "650Mi"
    assert obj.key == "ai/yolo"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"engine": "generic", "model": None}, "vramBudget is required"),
        ({"model": None}, "model is required"),
        ({"gpuMemoryUtilization": 1.5}, "less than or equal to 0.99"),
        ({"gpuMemoryUtilization": 0.01}, "0 (auto) or within 0.05-0.99"),
        ({"engine": "generic", "vramBudget": "-5Gi"}, "must not be negative"),
        ({"engine": "generic", "vramBudget": 0}, "must be positive"),
        ({"tensorParallelSize": 2, "placement": {"gpus": [0]}}, "exactly tensorParallelSize"),
        ({"isolation": "exclusive"}, "isolation"),
        ({"unknownField": 1}, "unknownField"),
        ({"model": {"name": "x", "quantization": "int3"}}, "quantization"),
    ],
)
def test_bad_specs_are_rejected_with_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        InferenceServer.model_validate(_server(**spec))
    assert message in str(error.value)


@given(st.floats(min_value=0.05, max_value=0.99) | st.just(0.0))
def test_valid_utilizations_are_accepted(value: float) -> None:
    assert InferenceServer.model_validate(_server(gpuMemoryUtilization=value)).spec.gpu_memory_utilization == value


def test_wire_round_trip_uses_contract_names() -> None:
    obj = InferenceServer.model_validate(
        _server(
            maxModelLen=8192,
            tensorParallelSize=2,
            kvCacheDtype="fp8",
            model={"name": "m", "weightsMiB": 1000, "architecture": {"numKVHeads": 8, "paramsB": 7.6}},
        )
    )
    wire = obj.wire()
    assert wire["spec"]["model"]["weightsMiB"] == 1000
    assert wire["spec"]["model"]["architecture"] == {"numKVHeads": 8, "paramsB": 7.6}
    assert InferenceServer.model_validate(wire) == obj


def test_manual_assignment_rules() -> None:
    with pytest.raises(ValidationError, match="Manual needs at least one assignment"):
        GpuAssignment.model_validate(
            {"kind": "GpuAssignment", "metadata": {"name": "a"}, "spec": {"strategy": "Manual"}}
        )
    pin = {"server": "ai/llm", "node": "n1", "gpus": [0]}
    with pytest.raises(ValidationError, match="only once"):
        GpuAssignment.model_validate(
            {
                "kind": "GpuAssignment",
                "metadata": {"name": "a"},
                "spec": {"strategy": "Manual", "assignments": [pin, pin]},
            }
        )
