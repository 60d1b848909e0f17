"""Budgets and server names: the models refuse what the API server refuses, at the same boundaries."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from vram_operator.api import GpuAssignment, InferenceServer
from vram_operator.api.inference_server import SERVER_NAME_MAX
from vram_operator.api.quantity import QUANTITY_PATTERN

MIB = 2**20
ACCEPTED_BUDGETS: list[int | str] = [
    "1Mi",  # the smallest budget
    MIB,
    "1048576",
    "650Mi",
    "1.5Gi",
    "6.8G",  # decimal SI: Kubernetes quantity syntax
    "800M",
    "1e9",
    "+.5Gi",
    1_073_741_824,  # plain bytes
    "16Ti",  # the largest budget
    16 * 2**40,
]
REFUSED_BUDGETS: list[int | str] = [
    0,
    "0",
    "0Gi",
    MIB - 1,  # one byte under 1 MiB
    "1048575",
    "1023Ki",
    "500m",  # milli, not mega
    "-5Gi",
    -1,
    "6.8GB",
    "650MB",
    "banana",
    "",
    "Mi",
    "1,5Gi",
    " 650Mi",
    "650Mi\n",
    "6.8g",
    "17Ti",
    16 * 2**40 + 1,  # one byte over 16 TiB
    "1e40",
]


def _generic(**spec: Any) -> dict[str, Any]:
    return {
        "kind": "InferenceServer",
        "metadata": {"name": "yolo", "namespace": "ai"},
        "spec": {"engine": "generic", "image": "yolo:1", "vramBudget": "650Mi", **spec},
    }


def _override(value: int | str) -> dict[str, Any]:
    pin = {"server": "ai/yolo", "node": "n1", "vramBudgetOverride": value}
    return {"kind": "GpuAssignment", "metadata": {"name": "a"}, "spec": {"strategy": "Manual", "assignments": [pin]}}


@pytest.mark.parametrize("value", ACCEPTED_BUDGETS, ids=repr)
def test_budget_quantities_are_accepted_on_every_budget_field(value: int | str) -> None:
    server = InferenceServer.model_validate(_generic(vramBudget=value, vramBudgetMin=value))
    assert (server.spec.vram_budget, server.spec.vram_budget_min) == (value, value)
    assignment = GpuAssignment.model_validate(_override(value))
    assert assignment.spec.assignments[0].vram_budget_override == value


@pytest.mark.parametrize("value", REFUSED_BUDGETS, ids=repr)
@pytest.mark.parametrize("field", ["vramBudget", "vramBudgetMin"])
def test_bad_budgets_are_refused_naming_the_field(field: str, value: int | str) -> None:
    with pytest.raises(ValidationError) as error:
        InferenceServer.model_validate(_generic(**{field: value}))
    assert [e["loc"] for e in error.value.errors()] == [("spec", field)]


@pytest.mark.parametrize("value", REFUSED_BUDGETS, ids=repr)
def test_bad_budget_overrides_are_refused_naming_the_field(value: int | str) -> None:
    with pytest.raises(ValidationError) as error:
        GpuAssignment.model_validate(_override(value))
    assert [e["loc"][-1] for e in error.value.errors()] == ["vramBudgetOverride"]


@given(st.integers(min_value=-(2**50), max_value=2**50))
def test_integer_budgets_are_bytes_between_1_mib_and_16_tib(value: int) -> None:
    spec = _generic(vramBudget=value)
    if MIB <= value <= 16 * 2**40:
        assert InferenceServer.model_validate(spec).spec.vram_budget == value
    else:
        with pytest.raises(ValidationError):
            InferenceServer.model_validate(spec)


def _named(name: str) -> dict[str, Any]:
    return {**_generic(), "metadata": {"name": name, "namespace": "ai"}}


@pytest.mark.parametrize("name", ["a", "yolo", "my-server-2", "q" * SERVER_NAME_MAX])
def test_service_compatible_names_are_accepted(name: str) -> None:
    assert InferenceServer.model_validate(_named(name)).metadata.name == name


@pytest.mark.parametrize(
    "name",
    ["my.dotted.server", "7b-chat", "Chat", "chat-", "-chat", "chat_1", "q" * (SERVER_NAME_MAX + 1), ""],
)
def test_names_a_service_cannot_take_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1035 label") as error:
        InferenceServer.model_validate(_named(name))
    assert error.value.errors()[0]["loc"] == ("metadata",)


quantity_text = st.from_regex(
    r"[+-]?([0-9]{1,4}(\.[0-9]{0,3})?|\.[0-9]{1,3})(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,2})?",
    fullmatch=True,
)


@given(quantity_text)
def test_the_crd_pattern_takes_exactly_the_positive_quantities(text: str) -> None:
    """Kubernetes' own parser is the oracle: the CRD's pattern admits a quantity iff it is > 0."""
    assert (re.fullmatch(QUANTITY_PATTERN, text) is not None) == (parse_quantity(text) > 0)


@given(quantity_text)
def test_the_models_take_exactly_the_quantities_from_1_mib_to_16_tib(text: str) -> None:
    in_range = MIB <= parse_quantity(text) <= 16 * 2**40
    try:
        InferenceServer.model_validate(_generic(vramBudget=text))
    except ValidationError:
        assert not in_range
    else:
        assert in_range
