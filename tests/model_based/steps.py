"""The steps of a randomized run: what the driver does to the cluster, as plain JSON-able data.

A step names its operation and carries every argument it needs (a full spec to create, a merge patch
to update), so a list of steps replays the same actions whatever was removed from it while
shrinking: a step whose target is gone is skipped by the driver, never an error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Operations on InferenceServers
CREATE, UPDATE, DELETE = "create", "update", "delete"
# Operations on GpuAssignments
PREVIEW, APPLY, ROLLBACK, UNASSIGN = "assignPreview", "assignApply", "assignRollback", "assignDelete"
# Faults and recoveries in the GPU twin, and the operator process
GPU_LOSE, GPU_RECOVER = "gpuLose", "gpuRecover"
FOREIGN_SPIKE, FOREIGN_CLEAR = "foreignSpike", "foreignClear"
AGENT_STALL, AGENT_RESUME = "agentStall", "agentResume"
OPERATOR_RESTART = "operatorRestart"
# Let the system settle, then check the invariants (not an operation)
CHECK = "check"

OPERATIONS = (
    CREATE,
    UPDATE,
    DELETE,
    PREVIEW,
    APPLY,
    ROLLBACK,
    UNASSIGN,
    GPU_LOSE,
    GPU_RECOVER,
    FOREIGN_SPIKE,
    FOREIGN_CLEAR,
    AGENT_STALL,
    AGENT_RESUME,
    OPERATOR_RESTART,
)


@dataclass(frozen=True)
class Step:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    pause: float = 0.0  # seconds to wait after the step, so the operator interleaves with the driver

    def describe(self) -> str:
        shown = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(self.args.items()))
        return f"{self.op}({shown})"


def dump_steps(steps: list[Step]) -> str:
    return json.dumps([asdict(step) for step in steps], sort_keys=True)


def load_steps(text: str) -> list[Step]:
    """Steps from dump_steps' JSON; an unknown operation is refused by name."""
    steps = []
    for index, item in enumerate(json.loads(text)):
        if item.get("op") not in (*OPERATIONS, CHECK):
            raise ValueError(f"step {index}: unknown op {item.get('op')!r}")
        steps.append(Step(op=item["op"], args=dict(item.get("args") or {}), pause=float(item.get("pause", 0.0))))
    return steps


def operation_count(steps: list[Step]) -> int:
    return sum(1 for step in steps if step.op != CHECK)
