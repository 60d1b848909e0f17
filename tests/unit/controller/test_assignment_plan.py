"""What a GpuAssignment's plan reports: warnings once, over-committed GPUs, and when a Preview is stale."""

from __future__ import annotations

from controller_builders import generic, gpu, gpu_node, node
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.gpu_node import GpuProcess
from vram_operator.api.inference_server import InferenceServerStatus, PlacedGpu, PlacementStatus
from vram_operator.controller.assignment_plan import WARNINGS_LIMIT, overcommits, plan_warnings, preview_inputs
from vram_operator.controller.decision import Inputs, decide
from vram_operator.placement.demand import ManualAssignment
from vram_operator.placement.result import GpuSummary


def test_a_manual_overcommit_is_warned_once_with_one_prefix() -> None:
    """The planner names the server in its over-commit warning, and lists it among the run's too:
    the plan once showed "ns/whisper: ns/whisper: budget ..." beside "ns/whisper: budget ..."."""
    whisper = generic("whisper", "30Gi")
    pin = ManualAssignment("ns/whisper", "ws", ("GPU-ws-0",))
    decided = decide(
        [whisper], Inputs(nodes=[gpu_node("ws", 1)], reserved=[], strategy="Manual", margin_mib=256), [pin]
    )
    outcome = decided.outcomes["ns/whisper"]
    assert outcome.placement is not None and any("over-commits" in w for w in outcome.warnings)
    warnings = plan_warnings(decided.plan_warnings, {"ns/whisper": outcome.warnings})
    assert [w for w in warnings if "over-commits" in w] == [
        next(w for w in decided.plan_warnings if "over-commits" in w)
    ]
    assert not any(w.startswith("ns/whisper: ns/whisper") for w in warnings)
    # The over-committed GPU is reported with its amounts.
    [message] = overcommits(decided.gpus, {"ns/whisper"}).values()
    assert message.startswith("ws GPU 0 (NVIDIA RTX A5500, GPU-ws-0) over-committed by 6412MiB")
    assert "reserved 30720MiB + foreign 0MiB + margin 256MiB > total 24564MiB (servers: ns/whisper)" in message


def test_server_warnings_get_their_server_once() -> None:
    per_server = {"ns/a": ["slow GPU", "ns/a: budget over", "ns/a[1]: replica warning"], "ns/b": ["slow GPU"]}
    assert plan_warnings(["GPU-x left out"], per_server) == [
        "GPU-x left out",
        "ns/a: slow GPU",
        "ns/a: budget over",
        "ns/a[1]: replica warning",
        "ns/b: slow GPU",
    ]
    # A server whose name starts like another's is still prefixed.
    assert plan_warnings([], {"ns/a": ["ns/ab: other"]}) == ["ns/a: ns/ab: other"]


@given(
    st.lists(st.sampled_from(["ns/a: x", "w", "ns/b: y"]), max_size=6),
    st.dictionaries(st.sampled_from(["ns/a", "ns/b"]), st.lists(st.sampled_from(["x", "ns/a: x", "z"]), max_size=4)),
)
def test_warnings_are_never_repeated_nor_twice_prefixed(run: list[str], per_server: dict[str, list[str]]) -> None:
    warnings = plan_warnings(run, per_server)
    assert len(warnings) == len(set(warnings)) <= WARNINGS_LIMIT
    assert not any(w.startswith(("ns/a: ns/a:", "ns/b: ns/b:")) for w in warnings)
    for server, found in per_server.items():
        for warning in found:
            assert warning in warnings or f"{server}: {warning}" in warnings


def test_warnings_are_capped() -> None:
    assert len(plan_warnings([f"w{i}" for i in range(WARNINGS_LIMIT + 5)], {})) == WARNINGS_LIMIT


def summary(free_after: float, servers: tuple[str, ...]) -> GpuSummary:
    return GpuSummary("ws", "GPU-ws-0", 0, "A5500", 24564, 24000 - free_after, 300, 256, free_after, servers)


def test_overcommits_only_below_zero_and_only_where_the_assignment_placed() -> None:
    assert overcommits([summary(0.0, ("ns/a",))], {"ns/a"}) == {}
    assert set(overcommits([summary(-0.5, ("ns/a",))], {"ns/a"})) == {"GPU-ws-0"}
    assert overcommits([summary(-100.0, ("other/x",))], {"ns/a"}) == {}
    assert set(overcommits([summary(-100.0, ("ns/a[2]",))], {"ns/a"})) == {"GPU-ws-0"}


def placed(uuid: str) -> InferenceServerStatus:
    return InferenceServerStatus(
        placement=PlacementStatus(node="ws", gpus=[PlacedGpu(index=0, uuid=uuid)], budget_mib=4096)
    )


def test_preview_inputs_change_with_what_the_plan_depends_on_only() -> None:
    servers = [generic("a"), generic("b")]
    nodes = [gpu_node("ws", 2)]
    base = preview_inputs(servers, nodes, frozenset())
    assert preview_inputs(list(reversed(servers)), nodes, frozenset()) == base
    # A heartbeat alone changes nothing.
    assert preview_inputs(servers, [gpu_node("ws", 2, heartbeat="2026-01-01T00:01:00Z")], frozenset()) == base
    # Servers created, deleted, edited, relabelled, placed.
    changed_servers = [
        [*servers, generic("c")],
        servers[:1],
        [
            servers[0],
            generic("b", "8Gi").model_copy(
                update={"metadata": servers[1].metadata.model_copy(update={"generation": 2})}
            ),
        ],
        [
            servers[0],
            servers[1].model_copy(update={"metadata": servers[1].metadata.model_copy(update={"labels": {"x": "y"}})}),
        ],
        [servers[0], servers[1].model_copy(update={"status": placed("GPU-ws-1")})],
    ]
    for changed in changed_servers:
        assert preview_inputs(changed, nodes, frozenset()) != base
    # GpuNodes: capacity, foreign memory, health, a cordon, a node gone, a stale agent.
    xorg = gpu("GPU-ws-0", index=0)
    xorg.processes.append(GpuProcess(pid=7, used_mib=2000, name="Xorg"))
    changed_nodes = [
        [gpu_node("ws", 2, total=16000)],
        [gpu_node("ws", 2, foreign=1500)],
        [node("ws", xorg, gpu("GPU-ws-1", index=1))],
        [gpu_node("ws", 2, healthy=False)],
        [gpu_node("ws", 2).model_copy(update={"spec": nodes[0].spec.model_copy(update={"cordoned": True})})],
        [],
    ]
    for changed_node in changed_nodes:
        assert preview_inputs(servers, changed_node, frozenset()) != base
    assert preview_inputs(servers, nodes, frozenset({"ws"})) != base
