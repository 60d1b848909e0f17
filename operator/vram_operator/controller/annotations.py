"""Annotations the operator writes on InferenceServers (kept out of status: they steer reconcile).

- ASSIGNED: the placement a GpuAssignment rolled out for the server (JSON); reconcile pins to it.
- STOPPED: the server is scaled to zero while a rollout frees memory for others.
- UTILIZATION: a corrected vLLM utilization after a memory failure.
- CORRECTIONS: how many corrections were made (bounded by --max-corrections).
- CORRECTED_POD: the pod UID a correction was made for, so one crash is corrected once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "vram.dev/"
ASSIGNED = PREFIX + "assigned-placement"
STOPPED = PREFIX + "stopped-for-rollout"
UTILIZATION = PREFIX + "utilization-override"
CORRECTIONS = PREFIX + "corrections"
CORRECTED_POD = PREFIX + "corrected-pod"


@dataclass(frozen=True)
class AssignedPlacement:
    assignment: str
    revision: int
    node: str
    gpus: tuple[str, ...]
    budget_mib: float

    def encode(self) -> str:
        return json.dumps(
            {
                "assignment": self.assignment,
                "revision": self.revision,
                "node": self.node,
                "gpus": list(self.gpus),
                "budgetMiB": self.budget_mib,
            },
            separators=(",", ":"),
        )


def assigned_placement(annotations: Mapping[str, str]) -> AssignedPlacement | None:
    """The pinned placement, or None when absent or unreadable (then the server is placed normally)."""
    raw = annotations.get(ASSIGNED)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return AssignedPlacement(
            assignment=str(data["assignment"]),
            revision=int(data["revision"]),
            node=str(data["node"]),
            gpus=tuple(str(g) for g in data["gpus"]),
            budget_mib=float(data["budgetMiB"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def corrections(annotations: Mapping[str, str]) -> int:
    try:
        return max(0, int(annotations.get(CORRECTIONS, "0")))
    except ValueError:
        return 0


def utilization_override(annotations: Mapping[str, str]) -> float | None:
    try:
        value = float(annotations[UTILIZATION])
    except (KeyError, ValueError):
        return None
    return value if 0.0 < value < 1.0 else None
