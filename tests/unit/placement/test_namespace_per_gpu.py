"""dra pinning: ResourceClaims are namespaced and the NVIDIA DRA driver gives a device to one claim, so
the planner keeps one namespace per GPU (plan(one_namespace_per_gpu=True)) and says so when that
leaves a server unplaced."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_helpers import fleet, generic, llm
from test_planner_invariants import AUTOMATIC, Case, cases

from vram_operator.placement.demand import ManualAssignment
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import plan

A5500 = ("NVIDIA RTX A5500", 24564)


def test_two_namespaces_share_a_gpu_only_without_the_rule() -> None:
    inventory = fleet(("a", [(*A5500, 0)]))
    demands = [generic("team-a/yolo", 4000), generic("team-b/clip", 4000)]
    shared = plan(inventory, demands, "VRAMBased")
    assert {p.server for p in shared.placements} == {"team-a/yolo", "team-b/clip"}

    kept_apart = plan(inventory, demands, "VRAMBased", one_namespace_per_gpu=True)
    (placed,) = kept_apart.placements
    (unplaced,) = kept_apart.unplaced
    assert unplaced.server != placed.server
    assert unplaced.reason == "OtherNamespaceOnGpu"
    held = placed.server.partition("/")[0]
    assert unplaced.message.startswith("dra pinning keeps one namespace per GPU")
    assert "1 GPU(s) with room for its 4000MiB hold servers of another namespace" in unplaced.message
    assert f"holds {held}" in unplaced.message


def test_each_namespace_gets_gpus_of_its_own_and_shares_within_it() -> None:
    inventory = fleet(("a", [(*A5500, 0), (*A5500, 0)]))
    demands = [generic("team-a/yolo", 4000), generic("team-a/clip", 3000), generic("team-b/whisper", 5000)]
    result = plan(inventory, demands, "VRAMBased", one_namespace_per_gpu=True)
    assert not result.unplaced
    for gpu in result.gpus:
        assert len({server.partition("/")[0] for server in gpu.servers}) <= 1
    on = {p.server: p.gpu_uuids for p in result.placements}
    assert on["team-a/yolo"] == on["team-a/clip"] != on["team-b/whisper"]


def test_a_standing_reservation_keeps_its_gpu_to_its_namespace() -> None:
    """The roomier GPU holds another namespace's server (not re-planned): the new one takes the other,
    even though a strategy that spreads would prefer the roomier."""
    inventory = fleet(("a", [("NVIDIA H100 80GB HBM3", 81559, 0), (*A5500, 0)]))
    ledger = Ledger((Reservation("team-a/llm", "a", ("GPU-a-0",), 20000),))
    result = plan(inventory, [generic("team-b/yolo", 4000)], "Balanced", ledger=ledger, one_namespace_per_gpu=True)
    (placed,) = result.placements
    assert placed.gpu_uuids == ("GPU-a-1",)
    # too large for the free GPU: unplaced, and the message names the GPU that has room
    result = plan(inventory, [llm("team-b/big", 30000)], "VRAMBased", ledger=ledger, one_namespace_per_gpu=True)
    (unplaced,) = result.unplaced
    assert unplaced.reason == "OtherNamespaceOnGpu"
    assert "holds team-a" in unplaced.message


def test_a_manual_pin_onto_another_namespaces_gpu_is_refused() -> None:
    inventory = fleet(("a", [(*A5500, 0), (*A5500, 0)]))
    ledger = Ledger((Reservation("team-a/llm", "a", ("GPU-a-0",), 4000),))
    pin = ManualAssignment("team-b/yolo", "a", (0,))
    result = plan(
        inventory, [generic("team-b/yolo", 2000)], "Manual", ledger=ledger, manual=[pin], one_namespace_per_gpu=True
    )
    (unplaced,) = result.unplaced
    assert unplaced.reason == "OtherNamespaceOnGpu"


@st.composite
def namespaced_cases(draw: st.DrawFn) -> Case:
    """The invariant tests' random fleets (no pins), each server in one of three namespaces; kept
    reservations are in a namespace of their own."""
    case = draw(cases(pins=False))
    namespaces = st.sampled_from(("team-a", "team-b", "team-c"))
    demands = tuple(replace(d, server=f"{draw(namespaces)}/{d.server.partition('/')[2]}") for d in case.demands)
    return Case(case.inventory, case.ledger, demands)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespaced_cases(), st.sampled_from(AUTOMATIC))
def test_no_gpu_ever_holds_two_namespaces(case: Case, strategy: str) -> None:
    result = plan(case.inventory, case.demands, strategy, ledger=case.ledger, one_namespace_per_gpu=True)
    mixed = [(gpu.uuid, gpu.servers) for gpu in result.gpus if len({s.partition("/")[0] for s in gpu.servers}) > 1]
    # a GPU the ledger already shares between namespaces (before the rule) is the only exception
    kept_mixed = {
        uuid
        for uuid in {u for r in case.ledger.reservations for u in r.gpu_uuids}
        if len({r.server.partition("/")[0] for r in case.ledger.reservations_on(uuid)}) > 1
    }
    assert [uuid for uuid, _ in mixed if uuid not in kept_mixed] == []
    placed = {p.server for p in result.placements} | {u.server for u in result.unplaced}
    assert placed == {d.server for d in case.demands}
