"""An Occupancy built from a ledger is the one placing its reservations one by one would leave."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from placement_helpers import draw_gpu_slots

from vram_operator.placement.inventory import Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.occupancy import Occupancy, Tenant

SIZES = (8192, 24564, 81559)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Inventory, Ledger, frozenset[str]]:
    """GPUs (MIG devices and unusable GPUs among them) and reservations on them (some of servers being
    replanned, some on GPUs the inventory lacks, dedicated ones, several namespaces)."""
    slots = draw_gpu_slots(draw, 6, SIZES)
    reservations = []
    for i in range(draw(st.integers(0, 40))):
        node = draw(st.sampled_from(sorted({s.node for s in slots})))
        on_node = [s.uuid for s in slots if s.node == node]
        uuids = draw(st.lists(st.sampled_from(on_node), min_size=1, max_size=3, unique=True))
        if draw(st.integers(0, 15)) == 0:
            uuids.append("GPU-gone")
        namespace = draw(st.sampled_from(["a", "b"]))
        reservations.append(
            Reservation(
                f"{namespace}/s{i}",
                node,
                tuple(uuids),
                float(draw(st.integers(100, 30000))),
                dedicated=draw(st.integers(0, 9)) == 0,
                replica=draw(st.integers(0, 1)),
            )
        )
    replanned = frozenset(r.key for r in reservations if draw(st.integers(0, 5)) == 0)
    return Inventory(tuple(slots)), Ledger(tuple(reservations)), replanned


def state(occupancy: Occupancy) -> dict[str, Any]:
    """Everything a search or a later change reads, in order."""
    trees = [index.tree for index in (occupancy.first_fit, occupancy.first_fit_vacant) if index is not None]
    return {
        "buckets": list(occupancy.buckets.items()),  # in order, empty ones too: searches walk them in order
        "first_fit": trees,
        "tenants": list(occupancy.tenants.items()),
        "gpus": [
            (g.reserved, list(g.tenants.items()), g.llm, g.critical, g.dedicated, g.namespaces, g.key, g.entry)
            for g in occupancy.gpus
        ],
        "changed": occupancy._changed,
        "orphans": occupancy.orphans,
    }


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("one_namespace_per_gpu", [False, True])
@given(fleet=fleets())
def test_an_occupancy_from_a_ledger_is_its_reservations_placed_one_by_one(
    fleet: tuple[Inventory, Ledger, frozenset[str]], packing: bool, one_namespace_per_gpu: bool
) -> None:
    inventory, ledger, replanned = fleet
    built = Occupancy(inventory, ledger, 256, replanned, packing=packing, one_namespace_per_gpu=one_namespace_per_gpu)
    placed = Occupancy(
        inventory, Ledger(), 256, frozenset(), packing=packing, one_namespace_per_gpu=one_namespace_per_gpu
    )
    for reservation in ledger.reservations:
        if reservation.key in replanned:
            continue
        if any(u not in placed.by_uuid for u in reservation.gpu_uuids):
            placed.orphans.append(f"{reservation.key}: reserved GPU(s) GPU-gone not in the inventory; ignored")
            continue
        placed.place(
            Tenant(reservation.key, reservation.gpu_uuids, reservation.budget_mib, dedicated=reservation.dedicated)
        )
    assert state(built) == state(placed)


def test_building_an_occupancy_files_each_gpu_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planning run builds one per batch of decisions, over every GPU and every standing reservation:
    placing the reservations one by one re-filed (bisect, insert) a GPU per reservation on it."""
    slots = tuple(make_slot(f"n{n}", i, 81559, name="H100") for n in range(4) for i in range(8))
    ledger = Ledger(tuple(Reservation(f"a/s{i}", s.node, (s.uuid,), 4096.0) for i, s in enumerate(slots * 3)))
    filed: list[str] = []
    file = Occupancy._file

    def counted(self: Occupancy, gpu: Any, **kwargs: Any) -> None:
        filed.append(gpu.slot.uuid)
        file(self, gpu, **kwargs)

    monkeypatch.setattr(Occupancy, "_file", counted)
    built = Occupancy(Inventory(slots), ledger, 256, frozenset(), packing=True)
    assert sorted(filed) == sorted(s.uuid for s in slots)
    assert all(len(g.tenants) == 3 for g in built.gpus)  # three reservations on each GPU, filed once
