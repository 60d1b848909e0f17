"""Generic servers: Kubernetes quantities to MiB, budget as the whole footprint, catalog fallback."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.sizing.errors import SizingError
from vram_operator.sizing.generic import estimate_generic, parse_quantity_mib


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        ("650Mi", 650.0),
        ("1.5Gi", 1536.0),
        ("6.8G", 6.8e9 / 2**20),
        ("800M", 800e6 / 2**20),
        ("1500000000", 1.5e9 / 2**20),
        ("1e9", 1e9 / 2**20),
        ("2E9", 2e9 / 2**20),
        ("2048Ki", 2.0),
        ("1Ti", 2**20),
        ("+.5Gi", 512.0),
        (1_500_000_000, 1.5e9 / 2**20),
        (2**30 * 1.5, 1536.0),
    ],
)
def test_quantities(value: str | int | float, mib: float) -> None:
    assert parse_quantity_mib(value, "vramBudget") == pytest.approx(mib, rel=1e-15)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-650Mi", "negative"),
        (-1, "negative"),
        ("0", "positive"),
        ("0Gi", "positive"),
        ("500m", "milli"),
        ("100Ki", "less than 1 MiB"),
        ("17Ti", "more than 16 TiB"),
        ("1E", "more than 16 TiB"),
        ("2E3M", "not a positive quantity"),
        ("1e40", "out of range"),
        ("650MB", "not a positive quantity"),
        ("650 Mi", "not a positive quantity"),
        (" 650Mi ", "not a positive quantity"),  # the API server refuses it too
        ("Mi", "not a positive quantity"),
        ("1,5Gi", "not a positive quantity"),
        ("", "not a positive quantity"),
        ("6.8g", "not a positive quantity"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "expected a quantity"),
    ],
)
def test_bad_quantities_name_the_field(value: str | int | float, message: str) -> None:
    with pytest.raises(SizingError, match=message) as error:
        parse_quantity_mib(value, "spec.vramBudget")
    assert error.value.field == "spec.vramBudget"
    assert "spec.vramBudget" in str(error.value)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9}


@given(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(9999), places=3),
    st.sampled_from(sorted({**_BINARY, **_DECIMAL})),
)
def test_property_suffix_scales_exactly(number: Decimal, suffix: str) -> None:
    factor = {**_BINARY, **_DECIMAL}[suffix]
    expected = number * factor / 2**20
    if not 1 <= expected <= 16 * 2**20:
        with pytest.raises(SizingError):
            parse_quantity_mib(f"{number}{suffix}", "vramBudget")
        return
    assert parse_quantity_mib(f"{number}{suffix}", "vramBudget") == pytest.approx(float(expected), rel=1e-15)


def test_budget_is_the_whole_footprint() -> None:
    estimate = estimate_generic("650Mi", model_name="yolov8n")
    assert (estimate.total_mib, estimate.source, estimate.warnings) == (650.0, "config", ())


def test_catalog_footprint_is_used_with_a_warning_when_no_budget() -> None:
    estimate = estimate_generic(None, model_name="openai/whisper-large-v3")
    assert (estimate.total_mib, estimate.source) == (10240.0, "catalog")
    assert "vramBudget not set" in estimate.warnings[0]


@pytest.mark.parametrize("name", [None, "my-org/custom-detector", "meta-llama/Llama-3.1-8B"])
def test_no_budget_and_no_footprint_is_an_error(name: str | None) -> None:
    with pytest.raises(SizingError, match="vramBudget is required") as error:
        estimate_generic(None, model_name=name)
    assert error.value.field == "vramBudget"
