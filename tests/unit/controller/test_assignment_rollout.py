from __future__ import annotations

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_assignment import PlanEntry
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignments import moves_for, rollback_pins


def server(name: str, uuid: str, phase: str = "Running", stopped: bool = False) -> InferenceServer:
    placement = PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=2000)
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ns", annotations={notes.STOPPED: "true"} if stopped else {}),
        spec=InferenceServerSpec(engine="generic", image="i", vram_budget="2000Mi"),
        status=InferenceServerStatus(placement=placement, phase=phase),  # type: ignore[arg-type]
    )


def test_moves_hold_old_memory_unless_stopped() -> None:
    plan = {"ns/a": PlanEntry(server="ns/a", node="n", gpus=["G1"], budget_mib=3000)}
    [move] = moves_for(["ns/a", "ns/gone"], plan, {"ns/a": server("a", "G0")})
    assert (move.old, move.new) == ({"G0": 2000}, {"G1": 3000})
    [move] = moves_for(["ns/a"], plan, {"ns/a": server("a", "G0", stopped=True)})
    assert move.old == {}


def test_rollback_pins_restore_budgets_and_skip_unplaced() -> None:
    entries = [
        PlanEntry(server="ns/a", node="n", gpus=["G1"], budget_mib=2500),
        PlanEntry(server="ns/b", node=None, gpus=[]),
    ]
    [pin] = rollback_pins(entries)
    assert (pin.server, pin.node, pin.gpus, pin.budget_override_mib) == ("ns/a", "n", ("G1",), 2500)


def test_manual_keeps_unpinned_servers_in_place() -> None:
    from vram_operator.controller.assignments import stay_pins

    [pin] = stay_pins([server("a", "G0"), server("b", "G1")], {"ns/b"})
    assert (pin.server, pin.node, pin.gpus) == ("ns/a", "n", ("G0",))
