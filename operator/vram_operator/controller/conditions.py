"""KEP-1623 conditions: set one, keeping lastTransitionTime unless the status flips."""

from __future__ import annotations

from collections.abc import Sequence

from vram_operator.api.base import Condition


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Return `conditions` with `type_` set; True/False/None map to True/False/Unknown."""
    wire_status = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.type == type_), None)
    since = now if previous is None or previous.status != wire_status else previous.last_transition_time
    updated = Condition(
        type=type_,
        status=wire_status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    kept = [c for c in conditions if c.type != type_]
    return sorted([*kept, updated], key=lambda c: _ORDER.get(c.type, len(_ORDER)))


def condition_status(conditions: Sequence[Condition], type_: str) -> str | None:
    """The status string of `type_`, or None when it is not set."""
    found = next((c for c in conditions if c.type == type_), None)
    return found.status if found else None


# Stable order so that status patches only differ when something changed.
_ORDER = {
    name: i for i, name in enumerate(("Estimated", "Placed", "MemoryFits", "Ready", "Degraded", "EstimateAccurate"))
}
