"""Ledger bookkeeping and demand validation."""

from __future__ import annotations

import pytest

from vram_operator.api.base import ObjectMeta
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.ledger import Ledger, Reservation


def _server(name: str, placement: PlacementStatus | None, isolation: str = "shared") -> InferenceServer:
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ai"),
        spec=InferenceServerSpec(engine="generic", image="img", vram_budget="1Gi", isolation=isolation),  # type: ignore[arg-type]
        status=InferenceServerStatus(placement=placement),
    )


def test_ledger_from_servers_reads_status_placement() -> None:
    placed = PlacementStatus(
        node="n1", gpus=[PlacedGpu(index=0, uuid="U0"), PlacedGpu(index=1, uuid="U1")], budget_mib=900
    )
    ledger = Ledger.from_servers([_server("a", placed, "dedicated"), _server("b", None)])
    assert ledger.servers == frozenset({"ai/a"})
    assert ledger.reserved_on("U1") == 900
    reservation = ledger.get("ai/a")
    assert reservation is not None and reservation.dedicated and reservation.gpu_uuids == ("U0", "U1")


def test_ledger_is_immutable_and_replaces_per_server() -> None:
    base = Ledger((Reservation("ns/a", "n", ("U",), 100),))
    more = base.with_reservation(Reservation("ns/b", "n", ("U",), 50)).with_reservation(
        Reservation("ns/a", "n", ("U",), 300)
    )
    assert base.reserved_on("U") == 100
    assert more.reserved_on("U") == 350
    assert [r.server for r in more.reservations_on("U")] == ["ns/a", "ns/b"]
    assert more.without("ns/a").reserved_on("U") == 50


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"preferred_mib": 0}, "preferred_mib"),
        ({"min_mib": 2000}, "min_mib"),
        ({"tensor_parallel": 0}, "tensor_parallel"),
        ({"tensor_parallel": 2, "pin_gpus": (0,)}, "pin_gpus"),
        ({"fixed_utilization": 1.2}, "fixed_utilization"),
        ({"server": "no-namespace"}, "server"),
    ],
)
def test_bad_demand_names_its_field(changes: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"server": "ns/x", "engine": "vllm", "preferred_mib": 1000, "min_mib": 800} | changes
    with pytest.raises(PlacementError) as error:
        ServerDemand(**values)  # type: ignore[arg-type]
    assert error.value.field == field


def test_budget_on_a_gpu() -> None:
    assert ServerDemand("ns/x", "vllm", 1000, 800).budget_on((24000,)) == 1000
    assert ServerDemand("ns/x", "vllm", 1000, 800, fixed_utilization=0.5).budget_on((20000, 24000)) == 12000
    assert ServerDemand("ns/x", "vllm", 1000, 800, budget_override_mib=700).budget_on((24000,)) == 700
    assert ServerDemand("ns/x", "vllm", 1000, 800).shrinkable
    assert not ServerDemand("ns/x", "vllm", 1000, 800, fixed_utilization=0.5).shrinkable
