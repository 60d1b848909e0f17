"""kopf's last handled essence kept in memory: nothing written to the object, forgotten on deletion."""

from __future__ import annotations

from typing import Any, cast

import kopf
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.controller.diffbase import MemoryDiffBase, deleted


def body(uid: str, image: str = "example.invalid/s:1") -> kopf.Body:
    raw = {
        "apiVersion": "vram.dev/v1alpha1",
        "kind": "InferenceServer",
        "metadata": {"name": "s", "namespace": "team", "uid": uid, "annotations": {"note": "kept"}},
        "spec": {"engine": "generic", "image": image},
        "status": {"phase": "Placed"},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def test_a_stored_essence_writes_nothing_and_is_found_by_uid() -> None:
    storage = MemoryDiffBase()
    first = body("uid-1")
    patch = kopf.Patch()
    essence = storage.build(body=first)
    storage.store(body=first, patch=patch, essence=essence)
    assert dict(patch) == {}  # the stock storage adds an annotation here: one PATCH per handled object
    assert storage.fetch(body=first) == essence
    assert storage.fetch(body=body("uid-2")) is None  # a new object (or one recreated under the same name)
    changed: dict[str, Any] = dict(storage.build(body=body("uid-1", image="example.invalid/s:2")))
    assert changed != storage.fetch(body=first)  # a spec change is still a change to kopf


def test_a_deleted_object_is_forgotten() -> None:
    storage = MemoryDiffBase()
    kept, gone = body("uid-1"), body("uid-2")
    for each in (kept, gone):
        storage.store(body=each, patch=kopf.Patch(), essence=storage.build(body=each))
    storage.forget("uid-2")
    assert storage.fetch(body=gone) is None
    assert storage.fetch(body=kept) is not None


def test_only_the_deletion_event_passes_the_filter() -> None:
    assert deleted(type="DELETED")
    assert not any(deleted(type=kind) for kind in ("ADDED", "MODIFIED", None))


class Uncopyable:
    """A value kopf's essence must never copy (deepcopy of it fails the test)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise AssertionError("copied a field the essence drops")


def test_the_essence_copies_nothing_of_the_status_or_the_system_metadata() -> None:
    """kopf deep-copied the whole object on every watch event of it (status and managedFields
    included: most of what a status write changes) before dropping those parts."""
    raw = dict(body("uid-1"))
    raw["status"] = {"phase": "Placed", "conditions": [Uncopyable()]}
    raw["metadata"] = {**raw["metadata"], "managedFields": [Uncopyable()]}
    essence = MemoryDiffBase().build(body=kopf.Body(cast(kopf.RawBody, raw)))
    assert essence == {"spec": raw["spec"], "metadata": {"annotations": {"note": "kept"}}}


LABELS = st.dictionaries(st.sampled_from(["app", "tier", "vram.dev/server"]), st.text(max_size=3), max_size=3)
ANNOTATIONS = st.dictionaries(
    st.sampled_from(
        ["note", "kopf.vram.dev/last-handled-configuration", "kubectl.kubernetes.io/last-applied-configuration", "x/y"]
    ),
    st.text(max_size=3),
    max_size=4,
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(
    spec=st.dictionaries(st.sampled_from(["engine", "image", "replicas"]), VALUES, max_size=3),
    metadata=st.fixed_dictionaries(
        {"name": st.just("s"), "uid": st.just("u")},
        optional={"labels": LABELS, "annotations": ANNOTATIONS, "managedFields": VALUES, "generation": st.integers()},
    ),
    status=st.none() | st.dictionaries(st.sampled_from(["phase", "conditions", "x"]), VALUES, max_size=3),
    extra=st.sampled_from([None, [], ["status.phase"], ["spec.image", "metadata.uid"]]),
)
def test_the_essence_is_kopfs(
    spec: dict[str, Any], metadata: dict[str, Any], status: dict[str, Any] | None, extra: list[str] | None
) -> None:
    """The same essence as kopf's stock build for any object, with or without extra fields."""
    raw: dict[str, Any] = {"apiVersion": "vram.dev/v1alpha1", "kind": "InferenceServer", "metadata": metadata}
    if spec:
        raw["spec"] = spec
    if status is not None:
        raw["status"] = status
    storage = MemoryDiffBase()
    one = kopf.Body(cast(kopf.RawBody, raw))
    assert storage.build(body=one, extra_fields=extra) == kopf.DiffBaseStorage.build(
        storage, body=one, extra_fields=extra
    )
