"""Invariants of every strategy on random heterogeneous fleets (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_helpers import first_fit_decreasing

from vram_operator.placement.demand import ManualAssignment, ServerDemand
from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, Planner, plan
from vram_operator.placement.strategies import STRATEGY_NAMES, strategy_named

SIZES = (4094, 8192, 12288, 16384, 23034, 24564, 46068, 81559)
NAMES = {4094: "NVIDIA RTX A400", 23034: "NVIDIA L4", 24564: "NVIDIA RTX A5500", 46068: "NVIDIA L40S"}
AUTOMATIC = tuple(s for s in STRATEGY_NAMES if s != "Manual")
EPS = 1e-6


@dataclass(frozen=True)
class Case:
    inventory: Inventory
    ledger: Ledger
    demands: tuple[ServerDemand, ...]


@st.composite
def cases(draw: st.DrawFn, *, pins: bool = True, fixed: bool = True) -> Case:
    slots = []
    for n in range(draw(st.integers(1, 4))):
        for index in range(draw(st.integers(1, 6))):
            total = draw(st.sampled_from(SIZES))
            slots.append(
                make_slot(
                    f"node-{n}",
                    index,
                    total,
                    name=NAMES.get(total, f"GPU {total}"),
                    foreign_mib=draw(st.sampled_from((0, 0, 300, 1500, total // 3))),
                    healthy=draw(st.booleans()) or draw(st.booleans()),
                    schedulable=draw(st.integers(0, 9)) > 0,
                )
            )
    inventory = Inventory(tuple(slots))
    kept = []
    for i in range(draw(st.integers(0, 3))):
        slot = draw(st.sampled_from(slots))
        room = (
            slot.total_mib
            - slot.foreign_mib
            - DEFAULT_MARGIN_MIB
            - sum(r.budget_mib for r in kept if slot.uuid in r.gpu_uuids)
        )
        if room > 300 and not any(r.dedicated and slot.uuid in r.gpu_uuids for r in kept):
            kept.append(Reservation(f"kept/r{i}", slot.node, (slot.uuid,), 300, draw(st.booleans())))
    demands = []
    for i in range(draw(st.integers(1, 14))):
        preferred = float(draw(st.integers(200, 60000)))
        shrinkable = draw(st.booleans())
        tp = draw(st.sampled_from((1, 1, 1, 2, 4)))
        pin_node, pin_gpus = None, ()
        if pins and draw(st.integers(0, 7)) == 0:
            slot = draw(st.sampled_from(slots))
            pin_node = slot.node
            if tp == 1 and draw(st.booleans()):
                pin_gpus = (slot.index,)
        demands.append(
            ServerDemand(
                f"ns/s{i}",
                draw(st.sampled_from(("vllm", "generic"))),
                preferred,
                preferred * 0.6 if shrinkable else preferred,
                tensor_parallel=tp,
                dedicated=draw(st.integers(0, 5)) == 0,
                latency_critical=draw(st.booleans()),
                is_llm=draw(st.booleans()),
                pin_node=pin_node,
                pin_gpus=pin_gpus,
                fixed_utilization=0.5 if fixed and draw(st.integers(0, 9)) == 0 else None,
            )
        )
    return Case(inventory, Ledger(tuple(kept)), tuple(demands))


def _check_rules(case: Case, strategy: str) -> None:
    result = plan(case.inventory, case.demands, strategy, ledger=case.ledger)
    placed = {p.server for p in result.placements}
    unplaced = {u.server for u in result.unplaced}
    # Every demand is either placed or unplaced with a CamelCase reason and a message.
    assert placed | unplaced == {d.server for d in case.demands}
    assert not placed & unplaced
    for u in result.unplaced:
        assert u.reason[:1].isupper() and " " not in u.reason and u.message
    slots = {s.uuid: s for s in case.inventory.slots}
    summaries = {g.uuid: g for g in result.gpus}
    demands = {d.server: d for d in case.demands}
    for p in result.placements:
        d = demands[p.server]
        # Tensor parallel: N distinct GPUs of one node.
        assert len(set(p.gpu_uuids)) == d.tensor_parallel
        assert {slots[u].node for u in p.gpu_uuids} == {p.node}
        for uuid in p.gpu_uuids:
            slot = slots[uuid]
            # Nothing new on unusable GPUs or next to an existing dedicated reservation.
            assert slot.usable
            assert not any(r.dedicated for r in case.ledger.reservations_on(uuid))
            # The memory invariant, on every GPU that got something new.
            assert summaries[uuid].free_after_mib >= -EPS
            if d.dedicated:
                assert summaries[uuid].servers == (p.server,)
        if d.pin_gpus:
            assert p.gpu_indices == d.pin_gpus
        if d.pin_node:
            assert p.node == d.pin_node
        if d.engine == "vllm":
            assert p.gpu_memory_utilization is not None
            assert p.gpu_memory_utilization * max(slots[u].total_mib for u in p.gpu_uuids) <= p.budget_mib + EPS
        assert d.min_mib - EPS <= p.budget_mib or d.fixed_utilization is not None
    # Kept reservations stay where they were.
    for r in case.ledger.reservations:
        for uuid in r.gpu_uuids:
            assert r.server in summaries[uuid].servers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from(AUTOMATIC))
def test_rules_hold_for_every_strategy(case: Case, strategy: str) -> None:
    _check_rules(case, strategy)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from(STRATEGY_NAMES))
def test_same_input_same_plan(case: Case, strategy: str) -> None:
    first = plan(case.inventory, case.demands, strategy, ledger=case.ledger).to_json_dict()
    again = plan(case.inventory, tuple(reversed(case.demands)), strategy, ledger=case.ledger).to_json_dict()
    assert first == again


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(pins=False, fixed=False), st.sampled_from(AUTOMATIC))
def test_places_at_least_as_much_vram_as_first_fit_decreasing(case: Case, strategy: str) -> None:
    result = plan(case.inventory, case.demands, strategy, ledger=case.ledger)
    baseline = first_fit_decreasing(case.inventory, list(case.demands), case.ledger)
    assert result.placed_mib >= baseline - EPS


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(pins=False), st.data())
def test_manual_overcommits_only_with_a_warning(case: Case, data: st.DataObject) -> None:
    usable = [s for s in case.inventory.slots if s.usable]
    singles = [d for d in case.demands if d.tensor_parallel == 1 and not d.dedicated]
    if not usable or not singles:
        return
    target = data.draw(st.sampled_from(usable))
    manual = [ManualAssignment(d.server, target.node, (target.index,)) for d in singles]
    result = plan(case.inventory, case.demands, "Manual", ledger=case.ledger, manual=manual)
    for gpu in result.gpus:
        if gpu.free_after_mib < -EPS:
            assert any(gpu.node in w and f"GPU {gpu.index}" in w for w in result.warnings)
    for p in result.placements:
        if p.server in {d.server for d in singles}:
            assert (p.node, p.gpu_indices) == (target.node, (target.index,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from(AUTOMATIC))
def test_the_plan_places_at_least_what_the_greedy_pass_alone_places(case: Case, strategy: str) -> None:
    greedy = Planner(
        inventory=case.inventory,
        demands={d.key: d for d in case.demands},
        strategy=strategy_named(strategy),
        ledger=case.ledger,
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=None,
    )
    greedy.run()
    assert plan(case.inventory, case.demands, strategy, ledger=case.ledger).placed_mib >= greedy.placed_mib - EPS
