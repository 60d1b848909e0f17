"""Events about a GpuAssignment, built so that `kubectl describe gpuassignment NAME` shows them.

kubectl describe lists the events of every namespace whose involvedObject has the object's kind,
name, uid and namespace. A GpuAssignment is cluster-scoped: its namespace is empty, so the event's
involvedObject.namespace must be empty too. kopf's poster always fills in a namespace (its own, else
"default"), and describe then finds nothing; so these events are built here and posted through the
Kube port. The Event object itself lives in EVENT_NAMESPACE, as the events of Nodes do.

Pure: the moment is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

EVENT_NAMESPACE = "default"
COMPONENT = "vram-operator"
MESSAGE_LIMIT = 1024


def assignment_event(
    body: Mapping[str, Any], type_: str, reason: str, message: str, moment: datetime
) -> dict[str, Any]:
    """A core/v1 Event about the cluster-scoped object `body` (its apiVersion, kind and metadata)."""
    meta = body.get("metadata", {})
    involved = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name")}
    if meta.get("uid"):
        involved["uid"] = meta["uid"]
    stamp = moment.isoformat()
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": EVENT_NAMESPACE, "generateName": f"{meta.get('name')}."},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "action": reason,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
