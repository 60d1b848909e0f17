"""One GpuAssignment owns a server: which one, when several select it.

Only an assignment that may touch servers claims them (mode Apply, or a rollback in force); a
Preview only looks. Among the claimants of a server the owner is, first to last:

1. the one the server's pin annotation names (it rolled the server out last: recorded in the API),
2. one whose last applied revision lists the server (it already manages it, without moving it),
3. the oldest by creationTimestamp, then by name (deterministic for every reader).

A record counts only while its assignment still claims the server: when the owner is deleted or
stops selecting the server, the next claimant takes it over at the next check, with no restart.
Pure: claims in, owners out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vram_operator.api.gpu_assignment import GpuAssignment, GpuAssignmentStatus
from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller.annotations import assigned_placement
from vram_operator.controller.assignment import select_servers

CONFLICT = "Conflict"
OWNED_BY_OTHER = "ServerOwnedByOther"
NO_CONFLICT = "NoConflict"
NAMED_IN_MESSAGE = 10


@dataclass(frozen=True)
class Claim:
    """What one GpuAssignment asks for: the servers it selects, and what it has applied before."""

    assignment: str
    created: str  # creationTimestamp (RFC 3339, so the strings sort by time); "" when unknown
    servers: frozenset[str]
    applied: frozenset[str] = frozenset()  # servers of its last applied revision


def claim_of(
    assignment: GpuAssignment,
    status: GpuAssignmentStatus | None,
    servers: Iterable[InferenceServer],
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> Claim | None:
    """The claim of an assignment that may touch servers (Apply, or a rollback in force), else None.

    It claims the servers it selects and, under a rollback, those of the revision restored."""
    spec = assignment.spec
    if spec.mode != "Apply" and spec.rollback_to_revision is None:
        return None
    history = status.history if status else []
    selected = {s.key for s in select_servers(spec, servers, namespace_labels)}
    for applied in history:
        if applied.revision == spec.rollback_to_revision:
            selected |= {e.server for e in applied.plan}
    created = str((assignment.metadata.model_extra or {}).get("creationTimestamp") or "")
    last = frozenset(e.server for e in history[-1].plan) if history else frozenset()
    return Claim(assignment.metadata.name, created, frozenset(selected), last)


def pinned_by(servers: Iterable[InferenceServer]) -> dict[str, str]:
    """Per server with a pin annotation, the assignment it names."""
    return {s.key: pin.assignment for s in servers if (pin := assigned_placement(s.metadata.annotations)) is not None}


def _rank(claim: Claim, server: str, pinned_by: str | None) -> tuple[bool, bool, bool, str, str]:
    # False sorts first; an unknown creation time sorts after every known one.
    unknown = not claim.created
    return (claim.assignment != pinned_by, server not in claim.applied, unknown, claim.created, claim.assignment)


def owners(claims: Iterable[Claim], pinned_by: Mapping[str, str]) -> dict[str, str]:
    """Per claimed server, the assignment that owns it. `pinned_by`: server -> the assignment its
    pin annotation names (absent when not pinned)."""
    claimants: dict[str, list[Claim]] = {}
    for claim in claims:
        for server in claim.servers:
            claimants.setdefault(server, []).append(claim)
    return {
        server: min(found, key=lambda c: _rank(c, server, pinned_by.get(server))).assignment
        for server, found in claimants.items()
    }


def held_by_others(assignment: str, servers: Iterable[str], owner_of: Mapping[str, str]) -> dict[str, str]:
    """The servers among `servers` that another assignment owns, with that owner."""
    return {s: owner_of[s] for s in sorted(servers) if owner_of.get(s, assignment) != assignment}


def conflict_message(held: Mapping[str, str]) -> str:
    """One line naming each server and its owner: "ns/a is owned by GpuAssignment x; ..."."""
    named = [f"{server} is owned by GpuAssignment {owner}" for server, owner in sorted(held.items())]
    more = len(named) - NAMED_IN_MESSAGE
    return "; ".join(named[:NAMED_IN_MESSAGE]) + (f"; and {more} more" if more > 0 else "")
