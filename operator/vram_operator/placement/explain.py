"""Words for placement decisions: why this GPU, why not the others, and the CLI's plan table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from vram_operator.placement.inventory import GpuSlot
from vram_operator.placement.occupancy import GpuState

MAX_ALTERNATIVES = 3


class GpuView(NamedTuple):
    """A GPU's numbers at the moment of a decision (they change as later servers are booked)."""

    slot: GpuSlot
    reserved_mib: float
    free_mib: float

    @classmethod
    def of(cls, gpu: GpuState) -> GpuView:
        return cls(gpu.slot, gpu.reserved, gpu.free)

    def breakdown(self, margin_mib: float) -> str:
        """ "total 24564MiB - foreign 1200MiB (desktop 1200MiB) - reserved 1850MiB - margin 256MiB = free 21258MiB"."""
        slot = self.slot
        foreign = f"foreign {slot.foreign_mib:.0f}MiB"
        if slot.foreign_detail:
            foreign += f" ({', '.join(slot.foreign_detail)})"
        return (
            f"total {slot.total_mib:.0f}MiB - {foreign} - reserved {self.reserved_mib:.0f}MiB - margin "
            f"{margin_mib:.0f}MiB = free {self.free_mib:.0f}MiB"
        )


@dataclass(frozen=True)
class Choice:
    """What one placement decision saw; rendered into words only for the decisions that are kept."""

    strategy: str
    chosen: tuple[GpuView, ...]
    why: str
    need_mib: float
    margin_mib: float
    runners_up: tuple[tuple[GpuView, ...], ...] = ()
    too_small: tuple[GpuView, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def seen(
        cls,
        strategy: str,
        *,
        chosen: Sequence[GpuState],
        why: str,
        need_mib: float,
        margin_mib: float,
        runners_up: Sequence[Sequence[GpuState]],
        too_small: Sequence[GpuState],
        notes: Sequence[str] = (),
    ) -> Choice:
        return cls(
            strategy,
            tuple(GpuView.of(g) for g in chosen),
            why,
            need_mib,
            margin_mib,
            tuple(tuple(GpuView.of(g) for g in group) for group in runners_up[:MAX_ALTERNATIVES]),
            tuple(GpuView.of(g) for g in too_small[:MAX_ALTERNATIVES]),
            tuple(notes),
        )

    def render(self) -> str:
        """One paragraph: the chosen GPU(s) with their free memory, then the best alternatives and why they lost."""
        where = "; ".join(f"{v.slot.label}: {v.breakdown(self.margin_mib)}" for v in self.chosen)
        text = f"{self.strategy}: needs {self.need_mib:.0f}MiB per GPU; chose {where} — {self.why}."
        others = [
            f"{' + '.join(v.slot.label for v in group)} free {min(v.free_mib for v in group):.0f}MiB (ranked lower)"
            for group in self.runners_up
        ]
        others += [
            f"{v.slot.label} free {v.free_mib:.0f}MiB (too small)"
            for v in self.too_small[: max(0, MAX_ALTERNATIVES - len(others))]
        ]
        if others:
            text += " Not: " + "; ".join(others) + "."
        if self.notes:
            text += " Notes: " + "; ".join(self.notes) + "."
        return text
