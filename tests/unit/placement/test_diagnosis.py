"""Why a server stays unplaced: the fleet-wide figures gathered once (Diagnosis) give, for every server,
the reason a look at every GPU gives (brute force below), and one more unplaced server costs no walk
over the fleet."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from vram_operator.fit.offer import GpuOffer
from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.diagnosis import MIG_TENSOR_PARALLEL, Diagnosis, floor_text, refusal
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.occupancy import EPS, GpuState, Occupancy, Tenant
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, Planner
from vram_operator.placement.strategies import strategy_named

SIZES = (8192, 16384, 24564, 46068, 81559)


def picky(budget: float, offer: GpuOffer) -> str | None:
    """An engine that refuses small cards and GPUs without head-room at start."""
    if offer.total_mib < 20000:
        return f"{offer.name} is too small"
    if offer.free_at_start_mib < budget + 500:
        return f"{offer.free_at_start_mib:.0f}MiB free at start"
    return None


@dataclass(frozen=True)
class Case:
    occupancy: Occupancy
    demands: tuple[ServerDemand, ...]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    slots: list[GpuSlot] = []
    for n in range(draw(st.integers(1, 4))):
        for index in range(draw(st.integers(1, 5))):
            total = draw(st.sampled_from(SIZES))
            if draw(st.integers(0, 6)) == 0:
                slots.append(GpuSlot(f"n{n}", index, f"MIG-{n}-{index}", "A100 MIG", total / 2, mig=True))
                continue
            slots.append(
                make_slot(
                    f"n{n}",
                    index,
                    total,
                    name=f"G{total}",
                    foreign_mib=draw(st.sampled_from((0, 300, 2000))),
                    healthy=draw(st.integers(0, 7)) > 0,
                )
            )
    occupancy = Occupancy(Inventory(tuple(slots)), Ledger(), DEFAULT_MARGIN_MIB, frozenset(), packing=False)
    for i, slot in enumerate(slots):
        if draw(st.booleans()):
            budget = float(draw(st.integers(100, int(slot.total_mib) // 2)))
            occupancy.place(Tenant(f"t/{i}", (slot.uuid,), budget, dedicated=draw(st.integers(0, 5)) == 0))
    demands = []
    for i in range(draw(st.integers(1, 8))):
        preferred = float(draw(st.integers(1000, 90000)))
        demands.append(
            ServerDemand(
                f"ns/s{i}",
                "vllm",
                preferred,
                preferred * 0.5 if draw(st.booleans()) else preferred,
                tensor_parallel=draw(st.sampled_from((1, 1, 2, 4, 6))),
                dedicated=draw(st.integers(0, 3)) == 0,
                fixed_utilization=0.6 if draw(st.integers(0, 5)) == 0 else None,
                engine_check=picky if draw(st.booleans()) else None,
            )
        )
    return Case(occupancy, tuple(demands))


def brute_force(occupancy: Occupancy, demand: ServerDemand) -> tuple[str, str]:
    """The reason from a walk over every GPU for this one server (what Diagnosis must agree with)."""
    usable = [g for g in occupancy.gpus if g.slot.usable and not g.dedicated]
    if not usable:
        return "NoHealthyGpu", f"none of the {len(occupancy.gpus)} GPUs is healthy, schedulable and not dedicated"
    size = demand.tensor_parallel
    need = demand.budget_on((max(g.slot.total_mib for g in usable),))
    floor = demand.min_mib if demand.shrinkable else need
    per_node: dict[str, list[GpuState]] = {}
    for gpu in usable:
        if size == 1 or not gpu.slot.mig:
            per_node.setdefault(gpu.slot.node, []).append(gpu)
    node, widest = max(((n, len(gs)) for n, gs in per_node.items()), key=lambda kv: (kv[1], kv[0]), default=("-", 0))
    if size > widest:
        if max(sum(g.slot.node == n for g in usable) for n in {g.slot.node for g in usable}) >= size:
            return (
                "TensorParallelOnMig",
                f"needs {size} GPUs on one node; the most any node has usable outside MIG is {widest} ({node}); "
                f"{MIG_TENSOR_PARALLEL}",
            )
        return (
            "TensorParallelTooLarge",
            f"needs {size} GPUs on one node; the most any node has usable is {widest} ({node})",
        )
    if demand.engine_check is not None and size == 1:
        roomy = [
            g
            for g in usable
            if g.free >= demand.budget_on((g.slot.total_mib,)) - EPS and (g.vacant or not demand.dedicated)
        ]
        firsts: dict[tuple[str, float], GpuState] = {}
        for gpu in sorted(roomy, key=lambda g: (-g.free, g.slot.node, g.slot.index)):
            firsts.setdefault((gpu.slot.name, gpu.slot.total_mib), gpu)
        answers = [(g, refusal(demand, [g], demand.budget_on((g.slot.total_mib,)))) for g in firsts.values()]
        if answers and all(why is not None for _, why in answers):
            gpu, why = max(answers, key=lambda a: (a[0].slot.total_mib, a[0].free, a[0].slot.node))
            return (
                "InsufficientMemory",
                f"{len(roomy)} GPU(s) have room for its budget but the engine would fail on each; "
                f"on the largest, {gpu.slot.label}: {why}",
            )
    if demand.dedicated and any(g.capacity >= floor for g in usable):
        return (
            "DedicatedUnavailable",
            f"needs a GPU alone with {floor:.0f}MiB; every GPU large enough already has servers",
        )
    if size == 1:
        best = max(usable, key=lambda g: (g.free, g.slot.node, -g.slot.index))
        return (
            "InsufficientMemory",
            f"needs {need:.0f}MiB per GPU{floor_text(demand)}; the most free is {best.free:.0f}MiB on "
            f"{best.slot.label}",
        )
    node, frees = max(
        ((n, sorted((g.free for g in gs), reverse=True)) for n, gs in per_node.items() if len(gs) >= size),
        key=lambda kv: (kv[1][size - 1], kv[0]),
    )
    return (
        "InsufficientMemory",
        f"needs {size} GPUs on one node with {need:.0f}MiB each{floor_text(demand)}; the best node, {node}, "
        f"has {', '.join(f'{f:.0f}' for f in frees[:size])}MiB free",
    )


@settings(max_examples=300, deadline=None)
@given(cases())
def test_diagnosis_agrees_with_a_walk_over_every_gpu(case: Case) -> None:
    diagnosis = Diagnosis(case.occupancy)
    for demand in case.demands:
        assert diagnosis.of(demand) == brute_force(case.occupancy, demand)


class CountingList(list[GpuState]):
    """The occupancy's GPU list, counting the walks over it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingList.walks += 1
        return super().__iter__()


def test_each_further_unplaced_server_costs_no_walk_over_the_fleet() -> None:
    slots = tuple(make_slot(f"n{n:02d}", i, 24564, name="NVIDIA RTX A5500") for n in range(16) for i in range(8))
    demands = {f"ns/big-{i}": ServerDemand(f"ns/big-{i}", "generic", 30000.0 + i, 30000.0 + i) for i in range(60)}
    planner = Planner(
        inventory=Inventory(slots),
        demands=demands,
        strategy=strategy_named("VRAMBased"),
        ledger=Ledger(),
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=None,
    )
    planner.run()
    assert len(planner.leftover) == 60
    planner.occupancy.gpus = CountingList(planner.occupancy.gpus)
    CountingList.walks = 0
    result = planner.result()
    assert {u.reason for u in result.unplaced} == {"InsufficientMemory"}
    assert CountingList.walks <= 3  # the diagnosis's one walk and the per-GPU totals, not one per server
