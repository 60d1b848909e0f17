"""GpuAssignment events carry what `kubectl describe gpuassignment` selects on."""

from __future__ import annotations

from datetime import UTC, datetime

from vram_operator.controller.assignment_events import EVENT_NAMESPACE, MESSAGE_LIMIT, assignment_event

BODY = {
    "apiVersion": "vram.dev/v1alpha1",
    "kind": "GpuAssignment",
    "metadata": {"name": "pin", "uid": "uid-1", "generation": 3},
}
MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_event_names_the_cluster_scoped_object_without_a_namespace() -> None:
    event = assignment_event(BODY, "Warning", "OverCommitted", "GPU 0 over-committed by 10MiB", MOMENT)
    # kubectl describe lists events of all namespaces with involvedObject.{name,namespace,kind,uid} equal to
    # the object's: a cluster-scoped object's namespace is empty, so the reference must have none.
    assert event["involvedObject"] == {
        "apiVersion": "vram.dev/v1alpha1",
        "kind": "GpuAssignment",
        "name": "pin",
        "uid": "uid-1",
    }
    assert event["metadata"]["namespace"] == EVENT_NAMESPACE == "default"
    assert (event["type"], event["reason"], event["message"]) == (
        "Warning",
        "OverCommitted",
        "GPU 0 over-committed by 10MiB",
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-01T00:00:00+00:00"


def test_long_messages_are_cut_to_the_limit() -> None:
    exact = assignment_event(BODY, "Normal", "Applied", "x" * MESSAGE_LIMIT, MOMENT)["message"]
    assert exact == "x" * MESSAGE_LIMIT
    cut = assignment_event(BODY, "Normal", "Applied", "x" * (MESSAGE_LIMIT + 1), MOMENT)["message"]
    assert len(cut) == MESSAGE_LIMIT and cut.endswith("...")
