"""VRAM budgets as Kubernetes quantities: one rule for the API server and for the operator.

A budget is a whole number of bytes or a Kubernetes quantity string ("650Mi", "1.5Gi", "6.8G",
"1e9"), between 1 MiB and 16 TiB. The same pattern and bounds are enforced at admission by the
schema of ``budget_schema`` and offline by ``quantity_mib``, so a budget the API server takes is
one the operator can use (the one exception is documented on ``budget_schema``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from vram_operator.api.base import INT_OR_STRING, cel_rule

MIB = 1024 * 1024
# Below 1 MiB no GPU process can run; usually a lower-case "m" (milli) typed for "M".
MIN_MIB = 1
# Largest quantity accepted for one process's GPU memory: 16 TiB.
MAX_MIB = 16 * 1024 * 1024
MIN_QUANTITY, MAX_QUANTITY = "1Mi", "16Ti"

# A positive Kubernetes resource.Quantity: an unsigned (or "+") decimal number with a non-zero
# digit, then a binary-SI, decimal-SI or exponent suffix. The CRD's `pattern` and the parser below
# read it alike (RE2 and Python; ASCII digits only).
QUANTITY_PATTERN = (
    r"^(?P<number>\+?(?:[0-9]*[1-9][0-9]*(?:\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_MAX_EXPONENT = 30
# Kubernetes' parser (untyped upstream): quantity text to its exact value.
_parse_quantity: Callable[[str], Decimal] = parse_quantity
BUDGET_RULE_MESSAGE = (
    f"must be a Kubernetes quantity from {MIN_QUANTITY} to {MAX_QUANTITY} (e.g. 650Mi, 1.5Gi, 6.8G) "
    "or a whole number of bytes"
)


def quantity_mib(value: str | int | float) -> float:
    """A budget in MiB, exactly: ``"650Mi"`` -> 650.0, ``"1G"`` -> 953.67...

    Plain numbers are bytes. Raises ValueError for malformed, negative, zero, below 1 MiB or
    above 16 TiB values.
    """
    mib = quantity_value(value) / MIB
    if mib <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    if mib < MIN_MIB:
        hint = " ('m' means milli; use M or Mi)" if isinstance(value, str) and value.endswith("m") else ""
        raise ValueError(f"{value!r} is less than 1 MiB{hint}")
    if mib > MAX_MIB:
        raise ValueError(f"{value!r} is more than 16 TiB")
    return float(mib)


def quantity_value(value: str | int | float) -> Decimal:
    """The exact value of a non-negative quantity ("1000m" and "1" are both 1); ValueError if it is none."""
    if isinstance(value, bool):
        raise ValueError(f"expected a quantity such as 650Mi, got {value!r}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite quantity, got {value!r}")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        number = _parse_text(value)
    else:
        raise ValueError(f"expected a quantity such as 650Mi, got {value!r}")
    if number < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return number


def _parse_text(text: str) -> Decimal:
    # The pattern is the gate (the CRD's own, stricter than parse_quantity, which also takes
    # "1_000", "NaN" or the n/u suffixes); parse_quantity does the arithmetic, as Kubernetes does.
    match = _QUANTITY.fullmatch(text)
    if match is None:
        if text.startswith("-"):
            raise ValueError(f"must not be negative, got {text!r}")
        raise ValueError(f"{text!r} is not a positive quantity (examples: 650Mi, 1.5Gi, 6.8G, 800M, 1500000000)")
    if match["exponent"] is not None and abs(int(match["exponent"])) > _MAX_EXPONENT:
        raise ValueError(f"exponent of {text!r} is out of range")
    try:
        return Decimal(_parse_quantity(text))
    except (ValueError, ArithmeticError) as error:
        raise ValueError(f"{text!r} is not a quantity") from error


def budget_schema(*, bound_strings: bool) -> dict[str, Any]:
    """json_schema_extra of an int-or-string budget field: the quantity rule, for the API server.

    The pattern (syntax, positive) and the integer bounds cost nothing. The bounds of a string
    need CEL, which the API server prices by the longest string the field could hold (an
    int-or-string has no maxLength): affordable on a field of its own, not on each item of a
    long list, where `bound_strings=False` leaves them to the operator's validation.
    """
    schema: dict[str, Any] = {
        **INT_OR_STRING,
        "pattern": QUANTITY_PATTERN,
        "minimum": MIN_MIB * MIB,
        "maximum": MAX_MIB * MIB,
    }
    if bound_strings:
        rule = (
            "type(self) == int || (isQuantity(self)"
            f" && quantity(self).compareTo(quantity('{MIN_QUANTITY}')) >= 0"
            f" && quantity(self).compareTo(quantity('{MAX_QUANTITY}')) <= 0)"
        )
        schema["x-kubernetes-validations"] = [cel_rule(rule, BUDGET_RULE_MESSAGE)]
    return schema
