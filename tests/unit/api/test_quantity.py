"""Budget quantities: Kubernetes' own parser does the arithmetic, our pattern and messages stay."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.quantity import MIB, quantity_mib, quantity_value

BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("650Mi", Decimal(650 * 2**20)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("6.8G", Decimal(6_800_000_000)),
        ("1e9", Decimal(10**9)),
        ("1E3", Decimal(1000)),
        ("1000m", Decimal(1)),
        ("+.5Ki", Decimal(512)),
        ("5.", Decimal(5)),
    ],
)
def test_quantity_values_are_unchanged(text: str, expected: Decimal) -> None:
    assert quantity_value(text) == expected


@given(
    whole=st.integers(min_value=1, max_value=99_999),
    fraction=st.integers(min_value=0, max_value=999),
    suffix=st.sampled_from(sorted({**BINARY, **DECIMAL})),
)
def test_suffixes_scale_exactly(whole: int, fraction: int, suffix: str) -> None:
    factor = {**BINARY, **DECIMAL}[suffix]
    text = f"{whole}.{fraction:03d}{suffix}"
    assert quantity_value(text) == (Decimal(whole) + Decimal(fraction) / 1000) * factor


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1_000Mi", "is not a positive quantity"),  # Python's Decimal takes underscores; Kubernetes does not
        ("NaN", "is not a positive quantity"),
        ("Infinity", "is not a positive quantity"),
        ("5n", "is not a positive quantity"),  # nano: a valid Kubernetes suffix, never a budget
        (" 5Gi", "is not a positive quantity"),
        ("-5Gi", "must not be negative"),
        ("1e31", "exponent of '1e31' is out of range"),
        ("0.5Mi", "is less than 1 MiB"),
        ("5m", "('m' means milli; use M or Mi)"),
        ("17Ti", "is more than 16 TiB"),
    ],
)
def test_bad_quantities_keep_clear_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        quantity_mib(text)
    assert message in str(error.value)


def test_boundaries_in_mib() -> None:
    assert quantity_mib("1Mi") == 1.0
    assert quantity_mib(MIB) == 1.0
    assert quantity_mib("16Ti") == 16 * 1024 * 1024
    with pytest.raises(ValueError, match="more than 16 TiB"):
        quantity_mib(16 * 2**40 + 1)
