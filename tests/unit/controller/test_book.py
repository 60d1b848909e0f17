from __future__ import annotations

from vram_operator.api.base import ObjectMeta
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerSpec,
    InferenceServerStatus,
    PlacedGpu,
    PlacementStatus,
)
from vram_operator.controller.book import ReservationBook


def placement(uuid: str) -> PlacementStatus:
    return PlacementStatus(node="n", gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=1000)


def server(name: str, placed: PlacementStatus | None = None) -> InferenceServer:
    return InferenceServer(
        metadata=ObjectMeta(name=name, namespace="ns"),
        spec=InferenceServerSpec(engine="generic", image="i", vram_budget="1000Mi"),
        status=InferenceServerStatus(placement=placed) if placed else None,
    )


def test_pending_decision_stands_before_status_lands_and_settles_after() -> None:
    book = ReservationBook()
    indexed = [server("a"), server("b", placement("G1"))]
    book.hold("ns/a", placement("G0"))
    standing = book.standing(indexed)
    assert sorted(s.key for s in standing) == ["ns/a", "ns/b"]
    # The status patch landed: the index shows it and the pending entry is forgotten.
    book.standing([server("a", placement("G0")), server("b", placement("G1"))])
    assert book.pending == {}


def test_dropped_decision_frees_the_reservation() -> None:
    book = ReservationBook()
    book.hold("ns/a", placement("G0"))
    book.drop("ns/a")
    assert book.standing([server("a")]) == []


def test_released_placement_overrides_the_index_and_exclude_skips_self() -> None:
    book = ReservationBook()
    book.hold("ns/b", None)  # b was re-placed to nothing (its GPU was lost)
    indexed = [server("a", placement("G0")), server("b", placement("G1"))]
    assert [s.key for s in book.standing(indexed)] == ["ns/a"]
    assert book.standing(indexed, exclude="ns/a") == []


def test_deleted_server_loses_its_pending_reservation() -> None:
    book = ReservationBook()
    book.hold("ns/gone", placement("G0"))
    assert book.standing([server("a")]) == []
    assert book.pending == {}


def test_a_pending_decision_is_laid_over_its_server_once_until_either_changes() -> None:
    # Every decision reads the standing reservations: a decision still in flight is copied onto its
    # stored server once, not on every read, and copied again when the decision or the object changes.
    book = ReservationBook()
    stored = server("a")
    book.hold("ns/a", placement("G0"))
    first = book.standing([stored])[0]
    assert first.status is not None and first.status.placement == placement("G0")
    assert book.standing([stored])[0] is first
    book.hold("ns/a", placement("G1"))
    moved = book.standing([stored])[0]
    assert moved is not first and moved.status is not None and moved.status.placement == placement("G1")
    edited = server("a")  # a new version of the object from the watch, its status not yet written
    again = book.standing([edited])[0]
    assert again is not moved and again.status is not None and again.status.placement == placement("G1")
