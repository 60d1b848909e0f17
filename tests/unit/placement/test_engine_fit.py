"""A placement whose engine fit fails is not a placement: the planner only chooses GPUs the engine accepts."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import fleet, generic, llm

from vram_operator.fit.offer import GpuOffer
from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import plan
from vram_operator.placement.strategies import STRATEGY_NAMES

WORKSTATION_AND_RACK = fleet(
    ("rack", [("NVIDIA H100 80GB HBM3", 81559, 469), ("NVIDIA H100 80GB HBM3", 81559, 469)]),
    ("workstation", [("NVIDIA RTX A5500", 24564, 448), ("NVIDIA RTX A400", 4094, 0)]),
)


def needs_total(minimum_mib: float) -> ServerDemand:
    """A manual-utilization vLLM server whose engine starts only on GPUs of at least `minimum_mib`."""

    def check(budget_mib: float, gpu: GpuOffer) -> str | None:
        if gpu.total_mib < minimum_mib:
            return f"No available memory for the cache blocks on {gpu.label}"
        return None

    return dataclasses.replace(
        llm("llm/qwen-32b", 75034, 69325, fixed_utilization=0.92, dedicated=True), engine_check=check
    )


def test_dedicated_takes_the_smallest_vacant_gpu_the_engine_accepts() -> None:
    """The reported case: 0.92 of a 4 GB RTX A400 holds the budget, but the 62 GB model does not start."""
    result = plan(WORKSTATION_AND_RACK, [needs_total(70_000)], "VRAMBased")
    (placed,) = result.placements
    assert placed.node == "rack"
    assert result.unplaced == ()


def test_the_boundary_gpu_is_accepted() -> None:
    # Exactly the smallest total the engine accepts: chosen (the check is >=, not >).
    result = plan(WORKSTATION_AND_RACK, [needs_total(24564)], "VRAMBased")
    assert [p.node for p in result.placements] == ["workstation"]
    assert result.placements[0].gpu_indices == (0,)


def test_refused_everywhere_is_unplaced_with_the_engine_words() -> None:
    small = fleet(("workstation", [("NVIDIA RTX A5500", 24564, 448), ("NVIDIA RTX A400", 4094, 0)]))
    result = plan(small, [needs_total(70_000)], "VRAMBased")
    assert result.placements == ()
    (unplaced,) = result.unplaced
    assert unplaced.reason == "InsufficientMemory"
    assert "No available memory for the cache blocks" in unplaced.message
    assert "engine would fail" in unplaced.message


def test_a_pin_the_engine_refuses_is_not_placed() -> None:
    pinned = dataclasses.replace(needs_total(70_000), pin_node="workstation", pin_gpus=(1,))
    result = plan(WORKSTATION_AND_RACK, [pinned], "VRAMBased")
    assert result.placements == ()
    (unplaced,) = result.unplaced
    assert unplaced.reason == "InsufficientMemory"
    assert "workstation GPU 1" in unplaced.message


node_gpus = st.lists(
    st.tuples(
        st.sampled_from(["NVIDIA RTX A400", "NVIDIA L4", "NVIDIA H100 80GB HBM3"]),
        st.sampled_from([4094, 23034, 81559]),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=80, deadline=None)
@given(
    nodes=st.lists(node_gpus, min_size=1, max_size=3),
    wants=st.lists(
        st.tuples(
            st.integers(min_value=500, max_value=60_000),  # budget
            st.sampled_from([0, 4094, 23034, 81559]),  # smallest total the engine accepts
            st.booleans(),  # dedicated
            st.integers(min_value=1, max_value=2),  # tensor parallel
            st.sampled_from([None, 0.5, 0.9]),  # manual utilization
        ),
        min_size=1,
        max_size=8,
    ),
    strategy=st.sampled_from(sorted(STRATEGY_NAMES)),
)
def test_no_placement_lands_where_the_engine_refuses(
    nodes: list[list[tuple[str, int]]], wants: list[tuple[int, int, bool, int, float | None]], strategy: str
) -> None:
    inventory = fleet(*((f"n{i}", [(name, total, 0.0) for name, total in gpus]) for i, gpus in enumerate(nodes)))
    demands = []
    minimum_of: dict[str, int] = {}
    for i, (budget, minimum, dedicated, tp, utilization) in enumerate(wants):
        server = f"ai/s{i}"
        minimum_of[server] = minimum

        def check(budget_mib: float, gpu: GpuOffer, minimum: int = minimum) -> str | None:
            return None if gpu.total_mib >= minimum else "refused"

        base = generic(server, budget, dedicated=dedicated, tensor_parallel=tp, fixed_utilization=utilization)
        demands.append(dataclasses.replace(base, engine_check=check))
    result = plan(inventory, demands, strategy)
    totals = {slot.uuid: slot.total_mib for slot in inventory.slots}
    for placement in result.placements:
        assert min(totals[u] for u in placement.gpu_uuids) >= minimum_of[placement.server], placement


def test_a_manual_overcommit_is_judged_by_what_the_engine_needs_alone() -> None:
    """Manual pins may over-commit (warned); the engine refuses only what it cannot do with the GPU to itself."""
    seen: list[GpuOffer] = []

    def start_up_check(budget_mib: float, gpu: GpuOffer) -> str | None:
        seen.append(gpu)
        return None if gpu.free_at_start_mib >= budget_mib else "Free memory on device is less than desired"

    one = fleet(("n", [("NVIDIA L4", 23034, 0)]))
    held = Ledger((Reservation("ai/other", "n", ("GPU-n-0",), 20_000),))
    demand = dataclasses.replace(generic("ai/pinned", 10_000, pin_node="n", pin_gpus=(0,)), engine_check=start_up_check)
    manual = plan(one, [demand], "Manual", ledger=held)
    assert [p.server for p in manual.placements] == ["ai/pinned"]
    assert any("allowed because the assignment is Manual" in w for w in manual.warnings)
    assert seen[-1].free_at_start_mib == 23034 and seen[-1].reserved_by_others_mib == 0
    strict = plan(one, [demand], "VRAMBased", ledger=held)
    assert [u.reason for u in strict.unplaced] == ["InsufficientMemory"]
