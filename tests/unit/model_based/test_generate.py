"""The step generator: deterministic per seed, every spec it writes is one the API accepts (or one it
marks as invalid on purpose), and step lists survive a JSON round trip for replay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_based.generate import GpuSlot, generate
from model_based.steps import CHECK, CREATE, DELETE, UPDATE, dump_steps, load_steps, operation_count
from vram_operator.api import InferenceServer

GPUS = [
    GpuSlot("workstation", 0, "GPU-w0", 24564),
    GpuSlot("workstation", 1, "GPU-w1", 4094),
    GpuSlot("h100-0", 0, "GPU-h0", 81559),
    GpuSlot("h100-0", 1, "GPU-h1", 81559),
]


def server(spec: dict[str, object]) -> InferenceServer:
    return InferenceServer.model_validate(
        {
            "apiVersion": "vram.dev/v1alpha1",
            "kind": "InferenceServer",
            "metadata": {"name": "s", "namespace": "a"},
            "spec": spec,
        }
    )


@given(st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_same_seed_same_steps_and_a_json_round_trip(seed: int) -> None:
    steps = generate(seed, GPUS, 30, check_every=10)
    assert generate(seed, GPUS, 30, check_every=10) == steps
    assert load_steps(dump_steps(steps)) == steps
    assert operation_count(steps) == 30
    assert [i for i, s in enumerate(steps) if s.op == CHECK] == [10, 21, 32]


@given(st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_every_spec_created_or_updated_to_is_valid(seed: int) -> None:
    specs: dict[str, dict[str, object]] = {}
    for step in generate(seed, GPUS, 60, check_every=20):
        key = f"{step.args.get('namespace')}/{step.args.get('name')}"
        if step.op == CREATE:
            specs.setdefault(key, step.args["spec"])
        elif step.op == UPDATE:
            merged = {**specs[key], **step.args["patch"]}
            specs[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            if step.op == DELETE:
                specs.pop(key, None)
            continue
        spec = specs[key]
        parsed = server(spec)  # the admission model: refuses what the API server would
        assert parsed.spec.engine == spec["engine"]
        pinned = spec.get("placement")
        if isinstance(pinned, dict):
            assert {(pinned["node"], i) for i in pinned["gpus"]} <= {(g.node, g.index) for g in GPUS}


def test_a_step_with_an_unknown_operation_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="step 1: unknown op 'explode'"):
        load_steps('[{"op": "check"}, {"op": "explode"}]')
