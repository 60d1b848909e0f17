"""kopf's record of what it last handled of each object, kept in the operator's memory.

kopf compares an object's essence (spec, labels, annotations) with the one it last handled to tell a
creation or a change from a status write. Its stock storage keeps that essence in an annotation:
one more PATCH per handled object, and one more watch event for every watcher of it, on every
creation and change. In memory it costs nothing to write. A restarted operator (or a newly active
peer) knows no essence, so kopf calls the create handler for every object, where the annotation would
have called the resume handler: both are the one reconcile, which starts from the object's status.
"""

from __future__ import annotations

from typing import Any

import kopf


def deleted(*, type: str | None, **_: Any) -> bool:
    """Cheap filter of the event handlers that forget an object: the watch event of its deletion."""
    return type == "DELETED"


class MemoryDiffBase(kopf.DiffBaseStorage):
    """The last handled essence per object UID; an object deleted is forgotten (`forget`)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(body.metadata.uid or "")

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        uid = body.metadata.uid
        if uid:
            self._essences[uid] = essence

    def forget(self, uid: str) -> None:
        """The object is deleted: kopf never handles it again."""
        self._essences.pop(uid, None)
