"""The placement rules, one at a time, on small hand-made fleets."""

from __future__ import annotations

import pytest
from placement_helpers import fleet, generic, llm, reserved_on

from vram_operator.placement.demand import ManualAssignment, ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan

A5500 = ("NVIDIA RTX A5500", 24564.0)
A400 = ("NVIDIA RTX A400", 4094.0)


def _two_gpus(foreign0: float = 0, foreign1: float = 0) -> Inventory:
    return fleet(("ws", [(*A5500, foreign0), (*A400, foreign1)]))


def test_vram_based_takes_the_gpu_with_most_free_memory_and_explains_the_alternatives() -> None:
    inventory = fleet(("a", [("NVIDIA L4", 23034, 0)]), ("b", [("NVIDIA L4", 23034, 5000)]))
    result = plan(inventory, [generic("ai/yolo", 1000)], "VRAMBased")
    placement = result.placement_of("ai/yolo")
    assert placement is not None and placement.node == "a"
    assert "most free memory" in placement.explanation
    assert "b GPU 0" in placement.explanation and "ranked lower" in placement.explanation


def test_reservations_foreign_and_margin_never_exceed_the_total() -> None:
    inventory = _two_gpus(foreign0=1200)
    demands = [generic(f"ai/s{i}", 5000) for i in range(6)]
    result = plan(inventory, demands, "VRAMBased")
    for gpu in result.gpus:
        assert gpu.reserved_mib + gpu.foreign_mib + DEFAULT_MARGIN_MIB <= gpu.total_mib
    # 24564 - 1200 - 256 = 23108 holds four 5000MiB servers; the A400 (3838MiB free) holds none.
    assert len(result.placements) == 4
    assert {u.reason for u in result.unplaced} == {"InsufficientMemory"}
    message = result.unplaced[0].message
    assert "needs 5000MiB" in message and "3838MiB on ws GPU 1" in message


def test_shrinks_to_what_is_free_and_warns() -> None:
    inventory = fleet(("ws", [(*A400, 0)]))
    result = plan(inventory, [llm("ai/enrichment", 6800, floor=3000)], "VRAMBased")
    placement = result.placement_of("ai/enrichment")
    assert placement is not None and placement.budget_mib == 4094 - 256
    assert placement.warnings == (
        "ai/enrichment: budget 6800MiB exceeds ws GPU 0 (NVIDIA RTX A400, 4094MiB) free 3838MiB; shrunk to 3838MiB",
    )
    assert placement.warnings[0] in result.warnings


def test_does_not_shrink_below_the_floor() -> None:
    result = plan(fleet(("ws", [(*A400, 0)])), [llm("ai/big", 6800, floor=4000)], "VRAMBased")
    assert result.unplaced[0].reason == "InsufficientMemory"
    assert "can shrink to 4000MiB" in result.unplaced[0].message


def test_vllm_utilization_is_rounded_down_and_generic_has_none() -> None:
    inventory = fleet(("ws", [(*A5500, 0)]))
    result = plan(inventory, [llm("ai/chat", 12345), generic("ai/yolo", 650)], "VRAMBased")
    chat, yolo = result.placement_of("ai/chat"), result.placement_of("ai/yolo")
    assert chat is not None and yolo is not None
    assert chat.gpu_memory_utilization == 0.50  # 12345 / 24564 = 0.5026
    assert chat.gpu_memory_utilization * 24564 <= chat.budget_mib
    assert yolo.gpu_memory_utilization is None


def test_fixed_utilization_reserves_that_share_of_the_gpu() -> None:
    inventory = fleet(("ws", [(*A5500, 0)]))
    demand = ServerDemand("ai/chat", "vllm", 1000, 1000, fixed_utilization=0.6)
    placement = plan(inventory, [demand], "VRAMBased").placement_of("ai/chat")
    assert placement is not None
    assert placement.budget_mib == pytest.approx(0.6 * 24564)
    assert placement.gpu_memory_utilization == 0.6


def test_tensor_parallel_uses_gpus_of_one_node_with_the_same_budget() -> None:
    inventory = fleet(
        ("a", [("NVIDIA L4", 23034, 0), ("NVIDIA L4", 23034, 0)]),
        ("b", [("NVIDIA L4", 23034, 0)] * 4),
    )
    result = plan(
        inventory, [llm("ai/big", 15000, tensor_parallel=4), llm("ai/pair", 9000, tensor_parallel=2)], "VRAMBased"
    )
    big, pair = result.placement_of("ai/big"), result.placement_of("ai/pair")
    assert big is not None and big.node == "b" and len(set(big.gpu_uuids)) == 4
    assert pair is not None and len(pair.gpu_indices) == 2
    for uuid in big.gpu_uuids:
        assert reserved_on(result, uuid) >= 15000


def test_tensor_parallel_larger_than_any_node() -> None:
    inventory = fleet(("a", [("NVIDIA L4", 23034, 0)] * 2), ("b", [("NVIDIA L4", 23034, 0)] * 3))
    result = plan(inventory, [llm("ai/huge", 1000, tensor_parallel=4)], "VRAMBased")
    assert result.unplaced[0].reason == "TensorParallelTooLarge"
    assert "3 (b)" in result.unplaced[0].message


def test_dedicated_gets_a_gpu_alone_and_avoids_existing_reservations() -> None:
    inventory = fleet(("a", [(*A5500, 0), (*A5500, 0), ("NVIDIA H100 80GB HBM3", 81559, 0)]))
    ledger = Ledger((Reservation("old/svc", "a", ("GPU-a-0",), 500),))
    demands = [llm("ai/solo", 8000, dedicated=True), generic("ai/yolo", 700), generic("ai/clip", 900)]
    result = plan(inventory, demands, "VRAMBased", ledger=ledger)
    solo = result.placement_of("ai/solo")
    assert solo is not None and solo.gpu_uuids == ("GPU-a-1",)  # smallest vacant GPU that holds it
    assert next(g for g in result.gpus if g.uuid == "GPU-a-1").servers == ("ai/solo",)


def test_dedicated_unavailable_when_every_large_gpu_is_shared() -> None:
    inventory = fleet(("a", [(*A5500, 0)]))
    ledger = Ledger((Reservation("old/svc", "a", ("GPU-a-0",), 500),))
    result = plan(inventory, [llm("ai/solo", 8000, dedicated=True)], "VRAMBased", ledger=ledger)
    assert result.unplaced[0].reason == "DedicatedUnavailable"


def test_an_existing_dedicated_reservation_keeps_its_gpu_alone() -> None:
    inventory = fleet(("a", [(*A5500, 0), (*A400, 0)]))
    ledger = Ledger((Reservation("old/solo", "a", ("GPU-a-0",), 2000, dedicated=True),))
    result = plan(inventory, [generic("ai/yolo", 3000)], "VRAMBased", ledger=ledger)
    placement = result.placement_of("ai/yolo")
    assert placement is not None and placement.gpu_uuids == ("GPU-a-1",)


def test_kept_reservations_stay_and_replanned_servers_release_theirs() -> None:
    inventory = fleet(("a", [(*A5500, 0)]))
    ledger = Ledger(
        (Reservation("old/keep", "a", ("GPU-a-0",), 10000), Reservation("ai/move", "a", ("GPU-a-0",), 9000))
    )
    result = plan(inventory, [generic("ai/move", 14000)], "VRAMBased", ledger=ledger)
    assert result.placement_of("ai/move") is not None
    assert reserved_on(result, "GPU-a-0") == 24000
    assert result.gpus[0].servers == ("ai/move", "old/keep")
    applied = result.apply_to(ledger)
    assert applied.reserved_on("GPU-a-0") == 24000


def test_unhealthy_and_unschedulable_gpus_get_nothing_new() -> None:
    inventory = Inventory(
        (
            make_slot("a", 0, 24564, healthy=False),
            make_slot("b", 0, 24564, schedulable=False),
            make_slot("c", 0, 4094),
        )
    )
    result = plan(inventory, [generic("ai/x", 1000), generic("ai/y", 9000)], "VRAMBased")
    x = result.placement_of("ai/x")
    assert x is not None and x.node == "c"
    assert result.unplaced[0].server == "ai/y"
    nothing = plan(Inventory((make_slot("a", 0, 24564, healthy=False),)), [generic("ai/x", 10)], "Balanced")
    assert nothing.unplaced[0].reason == "NoHealthyGpu"


def test_pins_are_honoured_or_unplaced_with_the_pinned_gpu_in_the_message() -> None:
    inventory = _two_gpus()
    pinned = generic("ai/yolo", 900, pin_node="ws", pin_gpus=(1,))
    too_big = generic("ai/big", 5000, pin_node="ws", pin_gpus=("GPU-ws-1",))
    missing = generic("ai/gone", 100, pin_node="ws", pin_gpus=(7,))
    result = plan(inventory, [pinned, too_big, missing], "VRAMBased")
    yolo = result.placement_of("ai/yolo")
    assert yolo is not None and yolo.gpu_indices == (1,)
    reasons = {u.server: u for u in result.unplaced}
    assert reasons["ai/big"].reason == "InsufficientMemory" and "ws GPU 1" in reasons["ai/big"].message
    assert reasons["ai/gone"].reason == "PinnedGpuNotFound"


def test_pin_to_a_node_only_chooses_on_that_node() -> None:
    inventory = fleet(("a", [(*A5500, 0)]), ("b", [(*A400, 0)]))
    result = plan(inventory, [generic("ai/x", 1000, pin_node="b")], "VRAMBased")
    placement = result.placement_of("ai/x")
    assert placement is not None and placement.node == "b"
    gone = plan(inventory, [generic("ai/x", 1000, pin_node="zz")], "VRAMBased")
    assert gone.unplaced[0].reason == "PinnedGpuNotFound"


def test_manual_may_overcommit_with_a_warning_other_strategies_may_not() -> None:
    inventory = _two_gpus()
    manual = [ManualAssignment("ai/big", "ws", (1,))]
    demands = [generic("ai/big", 5000)]
    result = plan(inventory, demands, "Manual", manual=manual)
    big = result.placement_of("ai/big")
    assert big is not None and big.gpu_indices == (1,)
    assert any("over-commits" in w and "Manual" in w for w in big.warnings)
    assert any("exceed the total" in w for w in result.warnings)
    strict = plan(inventory, demands, "VRAMBased", manual=manual)
    assert strict.unplaced[0].reason == "InsufficientMemory"


def test_a_pin_marked_overcommit_may_overcommit_under_any_strategy() -> None:
    # A Manual rollout's pin carried onto the server's own reconcile (which plans with VRAMBased).
    inventory = _two_gpus()
    carried = plan(
        inventory,
        [generic("ai/big", 5000)],
        "VRAMBased",
        manual=[ManualAssignment("ai/big", "ws", (1,), overcommit=True)],
    )
    big = carried.placement_of("ai/big")
    assert big is not None and big.gpu_indices == (1,)
    assert any("over-commits" in w for w in big.warnings)
    fits = plan(
        inventory,
        [generic("ai/small", 1000)],
        "VRAMBased",
        manual=[ManualAssignment("ai/small", "ws", (1,), overcommit=True)],
    )
    small = fits.placement_of("ai/small")
    assert small is not None and not any("over-commits" in w for w in small.warnings)


def test_manual_budget_override_and_unknown_server() -> None:
    inventory = _two_gpus()
    manual = [ManualAssignment("ai/x", "ws", (0,), budget_override_mib=2000), ManualAssignment("ai/nobody", "ws")]
    result = plan(inventory, [llm("ai/x", 9000)], "Manual", manual=manual)
    x = result.placement_of("ai/x")
    assert x is not None and x.budget_mib == 2000
    assert any("ai/nobody" in w for w in result.warnings)


def test_latency_critical_goes_to_the_fastest_gpu() -> None:
    inventory = fleet(("a", [("NVIDIA RTX A6000", 49140, 0)]), ("b", [("NVIDIA H100 80GB HBM3", 81559, 60000)]))
    demands = [llm("ai/chat", 8000, latency_critical=True), generic("ai/batch", 8000)]
    result = plan(inventory, demands, "LatencyOptimized")
    chat, batch = result.placement_of("ai/chat"), result.placement_of("ai/batch")
    assert chat is not None and chat.node == "b"
    assert "fastest" in chat.explanation
    assert batch is not None and batch.node == "a"
    plain = plan(inventory, demands, "VRAMBased").placement_of("ai/chat")
    assert plain is not None and plain.node == "a"


def test_isolation_first_puts_the_llm_alone_on_the_largest_gpu() -> None:
    inventory = fleet(("a", [(*A5500, 0), ("NVIDIA L40S", 46068, 0), (*A5500, 0)]))
    demands = [llm("ai/chat", 20000), generic("ai/yolo", 700), generic("ai/clip", 900), generic("ai/asr", 2000)]
    result = plan(inventory, demands, "IsolationFirst")
    chat = result.placement_of("ai/chat")
    assert chat is not None and chat.gpu_indices == (1,)
    assert next(g for g in result.gpus if g.index == 1).servers == ("ai/chat",)


def test_balanced_evens_out_the_share_of_memory_in_use() -> None:
    inventory = fleet(("a", [("NVIDIA L4", 23034, 0), ("NVIDIA H100 80GB HBM3", 81559, 0)]))
    demands = [generic(f"ai/s{i}", 4000) for i in range(10)]
    result = plan(inventory, demands, "Balanced")
    shares = [(g.reserved_mib + g.foreign_mib) / g.total_mib for g in result.gpus]
    assert max(shares) - min(shares) < 4000 / 23034
    vram = plan(inventory, demands, "VRAMBased")
    vram_shares = [(g.reserved_mib + g.foreign_mib) / g.total_mib for g in vram.gpus]
    assert max(shares) - min(shares) <= max(vram_shares) - min(vram_shares)


def test_a_better_packing_is_found_when_the_strategy_order_leaves_servers_out() -> None:
    # Most-free-first puts the 7000MiB server on the 10000MiB GPU and strands a 5000MiB one;
    # the packing passes find 7000 -> the 7000MiB GPU and 5000 + 5000 -> the other.
    inventory = fleet(("a", [("x", 10256, 0), ("y", 7256, 0)]))
    demands = [generic("ai/big", 7000), generic("ai/m1", 5000), generic("ai/m2", 5000)]
    for strategy in ("VRAMBased", "Balanced", "LatencyOptimized", "IsolationFirst"):
        result = plan(inventory, demands, strategy)
        assert not result.unplaced, strategy
        big = result.placement_of("ai/big")
        assert big is not None and big.gpu_indices == (1,)


def test_json_contract() -> None:
    result = plan(_two_gpus(), [llm("ai/chat", 6000), generic("ai/huge", 90000)], "VRAMBased")
    document = result.to_json_dict()
    assert set(document) >= {"strategy", "placements", "unplaced", "warnings", "gpus"}
    assert set(document["placements"][0]) >= {
        "server",
        "node",
        "gpus",
        "gpuIndices",
        "budgetMiB",
        "gpuMemoryUtilization",
        "warnings",
    }
    assert set(document["unplaced"][0]) == {"server", "replica", "reason", "message"}
    assert set(document["gpus"][0]) >= {
        "node",
        "uuid",
        "index",
        "totalMiB",
        "reservedMiB",
        "foreignMiB",
        "freeAfterMiB",
    }
    assert document["placements"][0]["budgetMiB"] == 6000


def test_bad_input_is_a_field_error() -> None:
    with pytest.raises(PlacementError) as error:
        plan(_two_gpus(), [], "Fastest")
    assert error.value.field == "strategy"
    with pytest.raises(PlacementError) as error:
        plan(_two_gpus(), [generic("ai/x", 1), generic("ai/x", 2)], "VRAMBased")
    assert error.value.field == "server"
    with pytest.raises(PlacementError):
        plan(_two_gpus(), [], "VRAMBased", margin_mib=-1)
