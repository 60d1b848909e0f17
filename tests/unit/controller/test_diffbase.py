"""kopf's last handled essence kept in memory: nothing written to the object, forgotten on deletion."""

from __future__ import annotations

from typing import Any, cast

import kopf

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
