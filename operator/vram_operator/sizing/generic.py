"""Generic servers (YOLO, CLIP, Whisper, embeddings): the budget is the whole footprint.

A generic server is sized by its ``vramBudget``, the process's whole GPU footprint as
nvidia-smi shows it; nothing is added on top. Without a budget, a catalogued model's
typical footprint is used, with a warning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from vram_operator.sizing.catalog import Catalog, load_catalog
from vram_operator.sizing.errors import SizingError

MIB = 1024 * 1024
# Largest quantity accepted for one process's GPU memory: 16 TiB.
MAX_MIB = 16 * 1024 * 1024
# Below 1 MiB no GPU process can run; usually a lower-case "m" (milli) typed for "M".
MIN_MIB = 1

# Kubernetes resource.Quantity: signed decimal number, then a binary-SI, decimal-SI or
# exponent suffix ("650Mi", "1.5Gi", "6.8G", "800M", "1e9", "1500000000").
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?\d+))?$"
)
_SUFFIX_FACTOR: dict[str, Decimal] = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


@dataclass(frozen=True)
class GenericEstimate:
    """The whole-process footprint of a generic server."""

    total_mib: float
    source: Literal["config", "catalog"]
    reason: str
    warnings: tuple[str, ...] = ()


def parse_quantity_mib(value: str | int | float, field: str) -> float:
    """A Kubernetes quantity (bytes) in MiB, exactly: ``"650Mi"`` -> 650.0, ``"1G"`` -> 953.67...

    Plain numbers are bytes. Raises SizingError naming ``field`` for malformed, negative,
    zero, below 1 MiB or above 16 TiB values.
    """
    byte_count = _quantity_bytes(value, field)
    mib = byte_count / MIB
    if mib <= 0:
        raise SizingError(f"{field}: must be positive, got {value!r}", field=field)
    if mib < MIN_MIB:
        hint = " ('m' means milli; use M or Mi)" if isinstance(value, str) and value.endswith("m") else ""
        raise SizingError(f"{field}: {value!r} is less than 1 MiB{hint}", field=field)
    if mib > MAX_MIB:
        raise SizingError(f"{field}: {value!r} is more than 16 TiB", field=field)
    return float(mib)


def _quantity_bytes(value: str | int | float, field: str) -> Decimal:
    if isinstance(value, bool):
        raise SizingError(f"{field}: expected a quantity such as 650Mi, got {value!r}", field=field)
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SizingError(f"{field}: expected a finite quantity, got {value!r}", field=field)
        number = Decimal(repr(value))
    elif isinstance(value, str):
        number = _parse_text(value.strip(), field)
    else:
        raise SizingError(f"{field}: expected a quantity such as 650Mi, got {value!r}", field=field)
    if number < 0:
        raise SizingError(f"{field}: must not be negative, got {value!r}", field=field)
    return number


def _parse_text(text: str, field: str) -> Decimal:
    match = _QUANTITY.match(text)
    if match is None:
        raise SizingError(
            f"{field}: {text!r} is not a quantity (examples: 650Mi, 1.5Gi, 6.8G, 800M, 1500000000)",
            field=field,
        )
    try:
        number = Decimal(match["number"])
        if match["suffix"] is not None:
            return number * _SUFFIX_FACTOR[match["suffix"]]
        if match["exponent"] is not None:
            exponent = int(match["exponent"])
            if abs(exponent) > 30:
                raise SizingError(f"{field}: exponent of {text!r} is out of range", field=field)
            return number.scaleb(exponent)
    except InvalidOperation as error:
        raise SizingError(f"{field}: {text!r} is not a quantity", field=field) from error
    return number


def estimate_generic(
    vram_budget: str | int | float | None,
    model_name: str | None = None,
    catalog: Catalog | None = None,
) -> GenericEstimate:
    """The footprint of a generic server: its vramBudget, else a catalogued typical footprint."""
    if vram_budget is not None:
        mib = parse_quantity_mib(vram_budget, "vramBudget")
        return GenericEstimate(
            total_mib=mib, source="config", reason=f"vramBudget {vram_budget} is the whole footprint"
        )
    match = (catalog or load_catalog()).lookup(model_name) if model_name else None
    footprint = match.entry.typical_vram_mib if match is not None else None
    if match is not None and footprint is not None:
        entry = match.entry
        approximate = "approximate " if entry.approximate else ""
        return GenericEstimate(
            total_mib=float(footprint),
            source="catalog",
            reason=f"no vramBudget; {approximate}typical footprint of {entry.id} from the catalog",
            warnings=(
                f"vramBudget not set: using the catalog's {approximate}typical footprint of {entry.id} "
                f"({footprint} MiB); set vramBudget to what the server really uses",
            ),
        )
    known = f" and {model_name!r} has no catalogued footprint" if model_name else ""
    raise SizingError(f"vramBudget is required for engine generic{known}", field="vramBudget")
