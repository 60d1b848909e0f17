"""Generic servers (YOLO, CLIP, Whisper, embeddings): the budget is the whole footprint.

A generic server is sized by its ``vramBudget``, the process's whole GPU footprint as
nvidia-smi shows it; nothing is added on top. Without a budget, a catalogued model's
typical footprint is used, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vram_operator.api.quantity import quantity_mib
from vram_operator.sizing.catalog import Catalog, load_catalog
from vram_operator.sizing.errors import SizingError


@dataclass(frozen=True)
class GenericEstimate:
    """The whole-process footprint of a generic server."""

    total_mib: float
    source: Literal["config", "catalog"]
    reason: str
    warnings: tuple[str, ...] = ()


def parse_quantity_mib(value: str | int | float, field: str) -> float:
    """A budget (a Kubernetes quantity, bytes when a plain number) in MiB, by the API's one rule.

    Raises SizingError naming ``field`` for anything the API would refuse.
    """
    try:
        return quantity_mib(value)
    except ValueError as error:
        raise SizingError(f"{field}: {error}", field=field) from error


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
