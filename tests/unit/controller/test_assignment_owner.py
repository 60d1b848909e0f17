"""One GpuAssignment owns a server: the ownership rule (controller.assignment_owner)."""

from __future__ import annotations

from controller_builders import generic
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_assignment import (
    AppliedPlan,
    GpuAssignment,
    GpuAssignmentSpec,
    GpuAssignmentStatus,
    PlanEntry,
)
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignment_owner import (
    NAMED_IN_MESSAGE,
    Claim,
    claim_of,
    conflict_message,
    held_by_others,
    owners,
    pinned_by,
)


def test_the_oldest_claimant_owns_a_server_nobody_holds() -> None:
    older = Claim("b-older", "2026-01-01T00:00:00Z", frozenset({"ns/a"}))
    newer = Claim("a-newer", "2026-01-01T00:00:01Z", frozenset({"ns/a", "ns/b"}))
    assert owners([newer, older], {}) == {"ns/a": "b-older", "ns/b": "a-newer"}


def test_same_creation_time_is_decided_by_name_and_unknown_time_comes_last() -> None:
    same = "2026-01-01T00:00:00Z"
    claims = [Claim("y", same, frozenset({"ns/a"})), Claim("x", same, frozenset({"ns/a"}))]
    assert owners(claims, {}) == {"ns/a": "x"}
    assert owners([Claim("a", "", frozenset({"ns/a"})), Claim("z", same, frozenset({"ns/a"}))], {}) == {"ns/a": "z"}


def test_the_assignment_that_already_manages_a_server_keeps_it() -> None:
    older = Claim("older", "2026-01-01T00:00:00Z", frozenset({"ns/a"}))
    applied = Claim("newer", "2026-01-02T00:00:00Z", frozenset({"ns/a"}), applied=frozenset({"ns/a"}))
    assert owners([older, applied], {}) == {"ns/a": "newer"}
    # The pin annotation (who rolled it out last) outranks an applied revision.
    both = Claim("older", "2026-01-01T00:00:00Z", frozenset({"ns/a"}), applied=frozenset({"ns/a"}))
    assert owners([both, applied], {"ns/a": "newer"}) == {"ns/a": "newer"}


def test_a_record_of_an_assignment_that_no_longer_claims_is_ignored() -> None:
    # The pin names "gone" (deleted, or it stopped selecting the server): the remaining claimant owns it.
    claim = Claim("other", "2026-01-02T00:00:00Z", frozenset({"ns/a"}))
    assert owners([claim], {"ns/a": "gone"}) == {"ns/a": "other"}
    assert owners([], {"ns/a": "gone"}) == {}


def test_held_by_others_names_each_server_and_owner() -> None:
    owner_of = {"ns/a": "first", "ns/b": "second", "ns/c": "second"}
    assert held_by_others("second", ["ns/a", "ns/b", "ns/free"], owner_of) == {"ns/a": "first"}
    assert conflict_message({"ns/a": "first"}) == "ns/a is owned by GpuAssignment first"


def test_a_long_conflict_message_is_cut_with_a_count() -> None:
    held = {f"ns/s{i:02d}": "first" for i in range(NAMED_IN_MESSAGE + 3)}
    message = conflict_message(held)
    assert message.count("is owned by") == NAMED_IN_MESSAGE
    assert message.endswith("; and 3 more")
    assert not conflict_message({f"ns/s{i:02d}": "f" for i in range(NAMED_IN_MESSAGE)}).endswith("more")


def assignment(name: str, mode: str, created: str = "2026-01-01T00:00:00Z", **spec: object) -> GpuAssignment:
    meta = ObjectMeta.model_validate({"name": name, "creationTimestamp": created, "generation": 1})
    return GpuAssignment(metadata=meta, spec=GpuAssignmentSpec.model_validate({"mode": mode, **spec}))


def test_only_an_assignment_that_may_touch_servers_claims() -> None:
    servers = [generic("a"), generic("b")]
    assert claim_of(assignment("p", "Preview"), None, servers, {}) is None
    applied = GpuAssignmentStatus(
        history=[
            AppliedPlan(revision=1, plan=[PlanEntry(server="ns/old")]),
            AppliedPlan(revision=2, plan=[PlanEntry(server="ns/a")]),
        ]
    )
    claim = claim_of(assignment("x", "Apply", "2026-01-03T00:00:00Z"), applied, servers, {})
    assert claim == Claim("x", "2026-01-03T00:00:00Z", frozenset({"ns/a", "ns/b"}), frozenset({"ns/a"}))
    # A rollback in force claims the servers of the revision it restores, even in Preview.
    rollback = assignment("x", "Preview", rollbackToRevision=1, serverSelector={"matchLabels": {"none": "x"}})
    restoring = claim_of(rollback, applied, servers, {})
    assert restoring is not None and restoring.servers == frozenset({"ns/old"})


def test_pinned_by_reads_the_pin_annotation() -> None:
    pin = notes.AssignedPlacement("first", 2, "n", ("G0",), 1000.0).encode()
    servers = [
        generic("a", annotations={notes.ASSIGNED: pin}),
        generic("b"),
        generic("c", annotations={notes.ASSIGNED: "{"}),
    ]
    assert pinned_by(servers) == {"ns/a": "first"}


names = st.sampled_from(["p", "q", "r", "s"])
server_sets = st.frozensets(st.sampled_from(["ns/a", "ns/b", "ns/c"]), max_size=3)
claims = st.lists(
    st.builds(
        Claim, names, st.sampled_from(["", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]), server_sets, server_sets
    ),
    max_size=5,
    unique_by=lambda c: c.assignment,
)
pins = st.dictionaries(st.sampled_from(["ns/a", "ns/b", "ns/c"]), names)


@given(claims, pins, st.randoms())
def test_one_owner_per_server_whatever_the_order(found: list[Claim], pinned: dict[str, str], rnd: object) -> None:
    owner_of = owners(found, pinned)
    claimed = {s for c in found for s in c.servers}
    assert set(owner_of) == claimed
    for server, owner in owner_of.items():
        assert any(c.assignment == owner and server in c.servers for c in found), "the owner claims the server"
        if any(c.assignment == pinned.get(server) and server in c.servers for c in found):
            assert owner == pinned[server], "a claimant named by the pin keeps the server"
    shuffled = list(found)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert owners(shuffled, pinned) == owner_of


@given(claims, pins)
def test_when_the_owner_goes_another_claimant_takes_over(found: list[Claim], pinned: dict[str, str]) -> None:
    owner_of = owners(found, pinned)
    for server, owner in owner_of.items():
        rest = [c for c in found if c.assignment != owner]
        after = owners(rest, pinned)
        if any(server in c.servers for c in rest):
            assert after[server] != owner
        else:
            assert server not in after
