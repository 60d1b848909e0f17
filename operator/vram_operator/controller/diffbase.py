"""kopf's record of what it last handled of each object, kept in the operator's memory.

kopf compares an object's essence (spec, labels, annotations) with the one it last handled to tell a
creation or a change from a status write. Its stock storage keeps that essence in an annotation:
one more PATCH per handled object, and one more watch event for every watcher of it, on every
creation and change. In memory it costs nothing to write. A restarted operator (or a newly active
peer) knows no essence, so kopf calls the create handler for every object, where the annotation would
have called the resume handler: both are the one reconcile, which starts from the object's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

# What kopf's essence keeps of an object's metadata (the rest of it, and the status, it drops).
ESSENCE_METADATA = ("labels", "annotations")


def deleted(*, type: str | None, **_: Any) -> bool:
    """Cheap filter of the event handlers that forget an object: the watch event of its deletion."""
    return type == "DELETED"


class MemoryDiffBase(kopf.DiffBaseStorage):
    """The last handled essence per object UID; an object deleted is forgotten (`forget`)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """kopf's essence, built from only the fields it keeps: kopf deep-copies the whole object (its
        status and managedFields too) and then drops most of it, on every watch event of the object."""
        if extra_fields:  # fields picked from anywhere, the status included: kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        kept = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        kept["metadata"] = {key: metadata[key] for key in ESSENCE_METADATA if key in metadata}
        return super().build(body=cast(kopf.Body, kept))

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(body.metadata.uid or "")

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        uid = body.metadata.uid
        if uid:
            self._essences[uid] = essence

    def forget(self, uid: str) -> None:
        """The object is deleted: kopf never handles it again."""
        self._essences.pop(uid, None)
