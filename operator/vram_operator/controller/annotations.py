"""Annotations the operator writes on InferenceServers (kept out of status: they steer reconcile).

- ASSIGNED: the placement a GpuAssignment rolled out for the server (JSON); reconcile pins to it.
- STOPPED: the server is scaled to zero while a rollout frees memory for others; the value names
  the GpuAssignment that stopped it ("true" from older versions: stopped by some assignment).
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
    """Where a GpuAssignment's rollout put a server, and on what terms.

    `budget_mib` is the plan's budget. It holds while the server is as it was planned: its spec at
    `generation` and its corrected utilization `utilization` (self-healing) unchanged. After either
    changes only the node and GPUs hold and the budget is sized afresh, unless `budget_override`
    (the assignment's own vramBudgetOverride). `overcommit`: the plan was Manual, which may
    over-commit ("warn but allow"); it too holds only while the server is as planned.
    """

    assignment: str
    revision: int
    node: str
    gpus: tuple[str, ...]
    budget_mib: float
    generation: int | None = None
    utilization: float | None = None
    budget_override: bool = False
    overcommit: bool = False

    def encode(self) -> str:
        return json.dumps(
            {
                "assignment": self.assignment,
                "revision": self.revision,
                "node": self.node,
                "gpus": list(self.gpus),
                "budgetMiB": self.budget_mib,
                "generation": self.generation,
                "utilization": self.utilization,
                "budgetOverride": self.budget_override,
                "overcommit": self.overcommit,
            },
            separators=(",", ":"),
        )

    def as_planned(self, generation: int | None, utilization: float | None) -> bool:
        """The server's spec and corrected utilization are those the plan was made for."""
        return self.generation is not None and (self.generation, self.utilization) == (generation, utilization)


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
            generation=None if data.get("generation") is None else int(data["generation"]),
            utilization=None if data.get("utilization") is None else float(data["utilization"]),
            budget_override=data.get("budgetOverride") is True,
            overcommit=data.get("overcommit") is True,
        )
    except (ValueError, KeyError, TypeError):
        return None


def stopped_by(annotations: Mapping[str, str]) -> str | None:
    """The GpuAssignment that stopped the server for its rollout ("true": an unnamed one), or None."""
    return annotations.get(STOPPED) or None


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
