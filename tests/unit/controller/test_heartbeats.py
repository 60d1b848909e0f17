"""A GpuNode whose agent went silent: Ready Unknown HeartbeatStale, set and cleared by the operator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from controller_builders import gpu_node
from fake_kube import FakeKube
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.base import Condition
from vram_operator.api.gpu_node import GpuNode
from vram_operator.controller.gpu_health import HEARTBEAT_STALE, stale_marked_conditions
from vram_operator.controller.gpu_view import stale_nodes
from vram_operator.controller.heartbeats import HeartbeatCheck
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.runtime import Runtime, rfc3339
from vram_operator.controller.settings import ControllerSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STALE_AFTER = timedelta(seconds=120)
AGENT_READY = Condition(
    type="Ready", status="True", reason="AllGpusHealthy", last_transition_time="2025-12-31T00:00:00Z"
)
NVML = Condition(
    type="NvmlAvailable", status="True", reason="NvmlInitialized", last_transition_time="2025-12-31T00:00:00Z"
)


def reported(seconds_ago: float | None, *conditions: Condition) -> GpuNode:
    node = gpu_node("ws", heartbeat=rfc3339(T0 - timedelta(seconds=seconds_ago or 0)))
    assert node.status is not None
    node.status.conditions = list(conditions)
    if seconds_ago is None:
        node.status.last_heartbeat = None
    node.metadata.resource_version = "42"
    return node


def judged(node: GpuNode) -> list[Condition] | None:
    return stale_marked_conditions(node, now=T0, stale_after=STALE_AFTER, now_text=rfc3339(T0))


def test_a_silent_agent_s_ready_becomes_unknown_and_its_other_conditions_stay() -> None:
    conditions = judged(reported(121, AGENT_READY, NVML))
    assert conditions is not None
    ready = next(c for c in conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.last_transition_time) == ("Unknown", HEARTBEAT_STALE, rfc3339(T0))
    assert ready.message == "no agent report since 2025-12-31T23:57:59Z (stale after 120s)"
    assert NVML in conditions


def test_the_threshold_itself_is_not_stale() -> None:
    assert judged(reported(120, AGENT_READY)) is None
    assert judged(reported(0, AGENT_READY)) is None


def test_a_mark_is_written_once_and_removed_when_the_agent_reports_again() -> None:
    marked = judged(reported(600, AGENT_READY, NVML))
    assert marked is not None
    assert judged(reported(900, *marked)) is None  # still silent: nothing to write
    assert judged(reported(5, *marked)) == [NVML]  # a report without conditions: the mark goes


def test_no_heartbeat_at_all_is_stale_and_a_gpu_node_no_agent_wrote_is_left_alone() -> None:
    conditions = judged(reported(None))
    assert conditions is not None and conditions[0].message == "no agent heartbeat reported (stale after 120s)"
    bare = gpu_node("ws")
    bare.status = None
    assert judged(bare) is None


@given(age=st.floats(0, 400))
def test_the_mark_and_the_placement_rule_agree(age: float) -> None:
    node = reported(age, AGENT_READY)
    assert (judged(node) is not None) == ("ws" in stale_nodes([node], T0, STALE_AFTER))


def test_the_check_writes_the_mark_on_the_version_it_judged() -> None:
    kube = FakeKube()
    rt = Runtime(settings=ControllerSettings(heartbeat_stale=STALE_AFTER), kube=kube, metrics=Metrics())
    silent = reported(10**6, AGENT_READY)  # far in the past of the real clock the check uses
    fresh = gpu_node("fresh", heartbeat=rfc3339(datetime.now(UTC)))
    events: list[tuple[str, str, str]] = []
    check = HeartbeatCheck(rt, lambda node, type_, reason, _: events.append((node.metadata.name, type_, reason)))
    asyncio.run(check.check({"gpu_nodes": {"ws": [silent], "fresh": [fresh]}}))
    [(name, patch)] = kube.gpu_node_patches
    assert name == "ws" and patch["metadata"] == {"resourceVersion": "42"}
    assert [(c["type"], c["status"], c["reason"]) for c in patch["status"]["conditions"]] == [
        ("Ready", "Unknown", HEARTBEAT_STALE)
    ]
    assert events == [("ws", "Warning", HEARTBEAT_STALE)]
    assert silent.status is not None
    silent.status.conditions = [Condition.model_validate(c) for c in patch["status"]["conditions"]]
    silent.status.last_heartbeat = rfc3339(datetime.now(UTC))  # reports again, without conditions
    asyncio.run(check.check({"gpu_nodes": {"ws": [silent]}}))
    assert kube.gpu_node_patches[-1][1]["status"]["conditions"] == []
    assert events[-1] == ("ws", "Normal", "HeartbeatResumed")


def test_a_write_the_agent_got_in_first_posts_nothing() -> None:
    kube = FakeKube()
    kube.patch_gpu_node_status = lambda name, patch: False  # type: ignore[method-assign]
    rt = Runtime(settings=ControllerSettings(heartbeat_stale=STALE_AFTER), kube=kube, metrics=Metrics())
    events: list[str] = []
    check = HeartbeatCheck(rt, lambda node, type_, reason, _: events.append(reason))
    asyncio.run(check.check({"gpu_nodes": {"ws": [reported(10**6, AGENT_READY)]}}))
    assert events == []
