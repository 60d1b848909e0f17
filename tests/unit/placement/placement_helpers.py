"""Helpers shared by the placement tests: small fleets, demands, a plain first-fit-decreasing yardstick."""

from __future__ import annotations

from hypothesis import strategies as st

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.placement.result import Plan


def fleet(*nodes: tuple[str, list[tuple[str, float, float]]]) -> Inventory:
    """fleet(("node-a", [(name, total, foreign), ...]), ...) with GPU uuids "GPU-<node>-<index>"."""
    return Inventory(
        tuple(
            make_slot(node, index, total, name=name, foreign_mib=foreign)
            for node, gpus in nodes
            for index, (name, total, foreign) in enumerate(gpus)
        )
    )


def draw_gpu_slots(draw: st.DrawFn, max_nodes: int, sizes: tuple[int, ...]) -> list[GpuSlot]:
    """1 to `max_nodes` nodes of 1 to 8 GPUs each: about one GPU in eight a MIG device (half its size),
    one in ten of the others unusable."""
    slots: list[GpuSlot] = []
    for n in range(draw(st.integers(1, max_nodes))):
        for index in range(draw(st.integers(1, 8))):
            total = draw(st.sampled_from(sizes))
            if draw(st.integers(0, 7)) == 0:
                slots.append(GpuSlot(f"n{n}", index, f"MIG-{n}-{index}", "A100 MIG", total / 2, mig=True))
            else:
                slots.append(make_slot(f"n{n}", index, total, name=f"G{total}", healthy=draw(st.integers(0, 9)) > 0))
    return slots


def generic(server: str, mib: float, **kw: object) -> ServerDemand:
    return ServerDemand(server, "generic", mib, mib, **kw)  # type: ignore[arg-type]


def llm(server: str, mib: float, floor: float | None = None, **kw: object) -> ServerDemand:
    return ServerDemand(server, "vllm", mib, floor if floor is not None else mib, is_llm=True, **kw)  # type: ignore[arg-type]


def reserved_on(plan: Plan, uuid: str) -> float:
    return next(g.reserved_mib for g in plan.gpus if g.uuid == uuid)


def first_fit_decreasing(
    inventory: Inventory, demands: list[ServerDemand], ledger: Ledger, margin: float = DEFAULT_MARGIN_MIB
) -> float:
    """VRAM placed by plain first-fit decreasing at preferred budgets (no pins), the baseline to beat."""
    free: dict[str, float] = {}
    vacant: set[str] = set()
    closed: set[str] = set()
    for slot in inventory.slots:
        kept = ledger.reservations_on(slot.uuid)
        if slot.usable and not any(r.dedicated for r in kept):
            free[slot.uuid] = slot.total_mib - slot.foreign_mib - margin - sum(r.budget_mib for r in kept)
            if not kept:
                vacant.add(slot.uuid)
    placed = 0.0
    for d in sorted(demands, key=lambda d: (-d.preferred_mib * d.tensor_parallel, d.server)):
        for node in inventory.nodes:
            fits = [
                s.uuid
                for s in inventory.on_node(node)
                if s.uuid in free
                and s.uuid not in closed
                and free[s.uuid] >= d.preferred_mib
                and (s.uuid in vacant or not d.dedicated)
            ]
            if len(fits) >= d.tensor_parallel:
                for uuid in fits[: d.tensor_parallel]:
                    free[uuid] -= d.preferred_mib
                    vacant.discard(uuid)
                    if d.dedicated:
                        closed.add(uuid)
                placed += d.preferred_mib * d.tensor_parallel
                break
    return placed
