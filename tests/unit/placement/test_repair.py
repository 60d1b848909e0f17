"""Repair's early exit: a tenant of one GPU that nowhere else holds makes clear() fail before anything
moves; where it goes does not depend on whether it is still on the GPU being cleared (that GPU is kept
out of the search), so the early exit never skips a GPU where moving it would succeed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, FIRST_FIT_DECREASING, Planner
from vram_operator.placement.repair import relocation
from vram_operator.placement.strategies import strategy_named

SIZES = (8192, 16384, 24564, 46068)


@st.composite
def planners(draw: st.DrawFn) -> Planner:
    """A greedy pass (ranked or packing) over a random fleet, with namespaces and some dedicated servers."""
    slots = tuple(
        make_slot(f"n{n}", i, draw(st.sampled_from(SIZES)), name="G")
        for n in range(draw(st.integers(1, 3)))
        for i in range(draw(st.integers(1, 4)))
    )
    demands = {}
    for i in range(draw(st.integers(1, 25))):
        budget = float(draw(st.integers(500, 20000)))
        demand = ServerDemand(
            f"ns{draw(st.integers(0, 2))}/s{i}",
            "generic",
            budget,
            budget,
            tensor_parallel=draw(st.sampled_from((1, 1, 1, 2))),
            dedicated=draw(st.integers(0, 6)) == 0,
        )
        demands[demand.key] = demand
    planner = Planner(
        inventory=Inventory(slots),
        demands=demands,
        strategy=strategy_named(draw(st.sampled_from(("VRAMBased", "Balanced")))),
        ledger=Ledger(),
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=draw(st.sampled_from((None, FIRST_FIT_DECREASING))),
        one_namespace_per_gpu=draw(st.booleans()),
    )
    planner.run()
    return planner


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planners(), st.data())
def test_where_a_tenant_goes_does_not_depend_on_it_leaving_the_gpu_being_cleared(
    planner: Planner, data: st.DataObject
) -> None:
    occupancy = planner.occupancy
    singles = sorted(key for key, t in occupancy.tenants.items() if len(t.uuids) == 1)
    if not singles:
        return
    tenant = occupancy.tenants[data.draw(st.sampled_from(singles))]
    gpu = occupancy.by_uuid[tenant.uuids[0]]
    others = data.draw(st.frozensets(st.sampled_from([g.position for g in occupancy.gpus]), max_size=2))
    keep = others | {gpu.position}
    before = relocation(planner, tenant, keep)
    occupancy.remove(tenant.key)
    after = relocation(planner, tenant, keep)
    occupancy.place(tenant)
    assert before == after
