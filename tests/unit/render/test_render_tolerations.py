"""Server pods tolerate GPU taints by default (GKE: nvidia.com/gpu=present:NoSchedule); the operator's
list is configurable, and a server adds its own."""

from __future__ import annotations

import argparse
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from render_builders import generic, placement, server

from vram_operator.controller.main import add_arguments, settings_from
from vram_operator.errors import InputError
from vram_operator.render import RenderError, RenderSettings, render_deployment
from vram_operator.render.tolerations import GPU_TAINT_TOLERATION, parse_tolerations

SPOT = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}


def _pod_tolerations(spec: dict[str, object], settings: RenderSettings) -> list[dict[str, object]]:
    deployment = render_deployment(server(spec), placement(), None, settings).deployment
    assert_valid(deployment)
    tolerations: list[dict[str, object]] = deployment["spec"]["template"]["spec"].get("tolerations", [])
    return tolerations


def test_default_pods_tolerate_the_gpu_taint_with_any_value() -> None:
    assert _pod_tolerations(generic(), RenderSettings()) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_a_server_adds_its_own_tolerations_after_the_operators() -> None:
    assert _pod_tolerations(generic(tolerations=[SPOT]), RenderSettings()) == [dict(GPU_TAINT_TOLERATION), SPOT]


def test_the_operator_list_can_be_emptied() -> None:
    assert _pod_tolerations(generic(), RenderSettings(tolerations=())) == []
    assert _pod_tolerations(generic(tolerations=[SPOT]), RenderSettings(tolerations=())) == [SPOT]


@given(st.lists(st.sampled_from([GPU_TAINT_TOLERATION, SPOT, {"key": "a", "operator": "Exists"}]), max_size=4))
def test_parse_round_trips_a_json_list(tolerations: list[dict[str, str]]) -> None:
    assert parse_tolerations(json.dumps(tolerations)) == tuple(tolerations)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ('{"key": "a"}', "expected a JSON list"),
        ("[1]", "item 0 is not a toleration"),
        ('[{"key": "a", "efect": "NoSchedule"}]', "unknown field(s) efect"),
    ],
)
def test_bad_operator_tolerations_name_the_flag(text: str, says: str) -> None:
    with pytest.raises(RenderError, match="--server-tolerations") as raised:
        parse_tolerations(text)
    assert says in str(raised.value)


def _run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--standalone", *argv])


def test_the_operator_flag_sets_the_render_tolerations() -> None:
    assert settings_from(_run_args()).render.tolerations == (GPU_TAINT_TOLERATION,)
    chosen = settings_from(_run_args("--server-tolerations", json.dumps([SPOT])))
    assert chosen.render.tolerations == (SPOT,)
    with pytest.raises(InputError, match="--server-tolerations"):
        settings_from(_run_args("--server-tolerations", "nvidia.com/gpu"))
