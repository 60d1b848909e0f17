"""Words for placement decisions: why this GPU, why not the others, and the CLI's plan table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vram_operator.placement.fleet import GpuState
from vram_operator.placement.inventory import GpuSlot
from vram_operator.placement.result import Plan

MAX_ALTERNATIVES = 3


@dataclass(frozen=True)
class GpuView:
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


def render_table(plan: Plan) -> str:
    """The plan as the CLI's plain-text table."""
    lines = [f"Strategy: {plan.strategy}   margin per GPU: {plan.margin_mib:.0f}MiB", ""]
    rows = [("SERVER", "NODE", "GPUS", "BUDGET", "UTIL", "NOTES")]
    for p in plan.placements:
        util = "-" if p.gpu_memory_utilization is None else f"{p.gpu_memory_utilization:.2f}"
        rows.append(
            (p.server, p.node, ",".join(map(str, p.gpu_indices)), f"{p.budget_mib:.0f}MiB", util, "; ".join(p.warnings))
        )
    for u in plan.unplaced:
        rows.append((u.server, "-", "-", "-", "-", f"UNPLACED {u.reason}: {u.message}"))
    lines += _columns(rows)
    lines += ["", "GPUs:"]
    gpu_rows = [("NODE", "GPU", "NAME", "TOTAL", "FOREIGN", "RESERVED", "FREE AFTER", "SERVERS")]
    for g in plan.gpus:
        gpu_rows.append(
            (
                g.node,
                str(g.index),
                g.name,
                f"{g.total_mib:.0f}",
                f"{g.foreign_mib:.0f}",
                f"{g.reserved_mib:.0f}",
                f"{g.free_after_mib:.0f}",
                ", ".join(g.servers),
            )
        )
    lines += _columns(gpu_rows)
    if plan.warnings:
        lines += ["", "Warnings:", *(f"- {w}" for w in plan.warnings)]
    if plan.placements:
        lines += ["", "Why:", *(f"- {p.server}: {p.explanation}" for p in plan.placements)]
    return "\n".join(lines)


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
