"""GpuAssignment logic: which servers it manages, its plan entries, history and rollback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from vram_operator.api.base import LabelSelector
from vram_operator.api.gpu_assignment import AppliedPlan, GpuAssignmentSpec, PlanEntry
from vram_operator.api.inference_server import InferenceServer, PlacementStatus
from vram_operator.errors import InputError

HISTORY_LIMIT = 10


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics; an absent or empty selector matches everything."""
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def select_servers(
    spec: GpuAssignmentSpec,
    servers: Iterable[InferenceServer],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> list[InferenceServer]:
    """Servers the assignment manages: selected by both selectors, plus every manual pin."""
    pinned = {a.server for a in spec.assignments}
    chosen = [
        server
        for server in servers
        if server.key in pinned
        or (
            selector_matches(spec.server_selector, server.metadata.labels)
            and selector_matches(spec.namespace_selector, namespace_labels.get(server.metadata.namespace or "", {}))
        )
    ]
    return sorted(chosen, key=lambda s: s.key)


def plan_entry(
    server: str,
    placement: PlacementStatus | None,
    utilization: float | None,
    current: PlacementStatus | None,
    reason: str,
) -> PlanEntry:
    """One row of the plan; `changed` compares GPUs and budget with what runs now."""
    gpus = [gpu.uuid for gpu in placement.gpus] if placement else []
    return PlanEntry(
        server=server,
        node=placement.node if placement else None,
        gpus=gpus,
        budget_mib=placement.budget_mib if placement else 0.0,
        utilization=utilization,
        changed=placement is not None and not same_placement(placement, current),
        reason=reason,
    )


def same_placement(a: PlacementStatus | None, b: PlacementStatus | None) -> bool:
    if a is None or b is None:
        return a is b
    return (
        a.node == b.node
        and [g.uuid for g in a.gpus] == [g.uuid for g in b.gpus]
        and round(a.budget_mib) == round(b.budget_mib)
    )


def record_revision(
    history: Sequence[AppliedPlan], plan: Sequence[PlanEntry], strategy: str, now: str
) -> tuple[int, list[AppliedPlan]]:
    """Append `plan` as the next revision; keeps the last HISTORY_LIMIT."""
    revision = max((h.revision for h in history), default=0) + 1
    entry = AppliedPlan(revision=revision, applied_at=now, strategy=strategy, plan=list(plan))
    return revision, [*history, entry][-HISTORY_LIMIT:]


def plan_at_revision(history: Sequence[AppliedPlan], revision: int) -> AppliedPlan:
    """The plan applied at `revision`; a revision no longer kept is a field error."""
    for applied in history:
        if applied.revision == revision:
            return applied
    kept = ", ".join(str(h.revision) for h in history) or "none"
    raise InputError(f"revision {revision} is not in the history (kept: {kept})", field="spec.rollbackToRevision")
