"""GpuAssignments against the real control plane: one owner per server, events where `kubectl describe`
finds them, a Manual over-commit warned, a Preview planned again when its inputs change."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    GROUP,
    VERSION,
    Operator,
    condition,
    create,
    delete_cluster_object,
    eventually,
    generic,
    get,
    gpu_node_status,
    manual_assignment,
    phase_is,
    publish,
)

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid

pytestmark = pytest.mark.integration
PLURAL = "gpuassignments"


def manual(name: str, namespace: str, mode: str, gpu: int, budget: str | None = None) -> dict[str, Any]:
    """A Manual assignment of the namespace's servers (label fleet=<namespace>), pinning det to a workstation GPU."""
    pin: dict[str, Any] = {"server": "det", "node": "workstation", "gpus": [gpu]}
    if budget is not None:
        pin["vramBudgetOverride"] = budget
    return manual_assignment(name, namespace, mode, [pin])


def assignment(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    return found


def described_events(custom: client.CustomObjectsApi, core: client.CoreV1Api, name: str) -> list[Any]:
    """The events `kubectl describe gpuassignment NAME` shows: every namespace, selected on the object's
    name, namespace (empty: cluster-scoped), kind and uid."""
    uid = assignment(custom, name)["metadata"]["uid"]
    selector = ",".join(
        [
            f"involvedObject.name={name}",
            "involvedObject.namespace=",
            "involvedObject.kind=GpuAssignment",
            f"involvedObject.uid={uid}",
        ]
    )
    items: list[Any] = core.list_event_for_all_namespaces(field_selector=selector).items
    return items


def pinned_to(custom: client.CustomObjectsApi, namespace: str, name: str) -> str | None:
    raw = (get(custom, namespace, name)["metadata"].get("annotations") or {}).get("vram.dev/assigned-placement")
    return str(json.loads(raw)["assignment"]) if raw else None


def gpu_of(custom: client.CustomObjectsApi, namespace: str, name: str) -> str | None:
    placement = (get(custom, namespace, name).get("status") or {}).get("placement") or {}
    return placement["gpus"][0]["uuid"] if placement.get("gpus") else None


def rolled_out(custom: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    found = assignment(custom, name)
    applied = condition(found, "Applied")
    return found if applied and (applied["status"], applied["reason"]) == ("True", "RolloutDone") else None


def delete(custom: client.CustomObjectsApi, name: str) -> None:
    delete_cluster_object(custom, PLURAL, name)


def test_one_assignment_owns_a_server_the_other_waits_and_takes_over(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, core_v1: client.CoreV1Api
) -> None:
    create(custom_objects, namespace, generic("det", "1Gi", labels={"fleet": namespace}))
    eventually(lambda: phase_is(custom_objects, namespace, "det", "Running"), "det Running")
    first, second = f"first-{namespace}", f"second-{namespace}"
    small, large = fake_gpu_uuid("workstation", 1), fake_gpu_uuid("workstation", 0)
    try:
        custom_objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, manual(first, namespace, "Apply", 1))
        eventually(lambda: gpu_of(custom_objects, namespace, "det") == small, "det moved by the first assignment")
        eventually(lambda: rolled_out(custom_objects, first), "first rolled out")

        custom_objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, manual(second, namespace, "Apply", 0))
        conflict = eventually(
            lambda: (c := condition(assignment(custom_objects, second), "Conflict")) and c["status"] == "True" and c,
            "a Conflict condition on the second assignment",
        )
        assert conflict["reason"] == "ServerOwnedByOther"
        assert conflict["message"] == f"{namespace}/det is owned by GpuAssignment {first}"
        warning = eventually(
            lambda: [e for e in described_events(custom_objects, core_v1, second) if e.reason == "ServerOwnedByOther"],
            "the ServerOwnedByOther event, as kubectl describe lists it",
        )
        assert warning[0].type == "Warning" and first in warning[0].message and f"{namespace}/det" in warning[0].message
        # The loser leaves the server alone: the first keeps it and still reports its rollout as done.
        time.sleep(2)  # two check intervals
        assert gpu_of(custom_objects, namespace, "det") == small
        assert pinned_to(custom_objects, namespace, "det") == first
        assert rolled_out(custom_objects, first)
        assert condition(assignment(custom_objects, first), "Conflict") is None
        assert [e["server"] for e in assignment(custom_objects, second)["status"]["plan"]] == []
        assert any(e.reason == "Applied" for e in described_events(custom_objects, core_v1, first))

        delete(custom_objects, first)  # the owner goes: the second takes the server over, no restart
        eventually(lambda: gpu_of(custom_objects, namespace, "det") == large, "det moved by the second assignment")
        eventually(lambda: pinned_to(custom_objects, namespace, "det") == second, "det pinned by the second")
        resolved = eventually(lambda: rolled_out(custom_objects, second), "second rolled out")
        assert condition(resolved, "Conflict")["status"] == "False"  # type: ignore[index]
        assert operator.alive(), operator.logs()
    finally:
        delete(custom_objects, first)
        delete(custom_objects, second)


def test_a_preview_follows_its_inputs_and_warns_of_an_overcommit_once(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    gpu_fleet: list[FakeNode],
) -> None:
    labels = {"fleet": namespace}
    create(custom_objects, namespace, generic("det", "1Gi", labels=labels))
    eventually(lambda: phase_is(custom_objects, namespace, "det", "Running"), "det Running")
    name = f"look-{namespace}"
    workstation = next(n for n in gpu_fleet if n.name == "workstation")
    small = fake_gpu_uuid("workstation", 1)

    def plan() -> dict[str, Any]:
        status = assignment(custom_objects, name).get("status") or {}
        return {e["server"]: e for e in status.get("plan", [])}

    custom_objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, manual(name, namespace, "Preview", 1))
    try:
        eventually(lambda: plan().get(f"{namespace}/det", {}).get("gpus") == [small], "det planned on the A400")
        assert assignment(custom_objects, name)["status"]["warnings"] == []

        # A server created, then deleted: the Preview follows.
        create(custom_objects, namespace, generic("emb", "512Mi", labels=labels))
        eventually(lambda: f"{namespace}/emb" in plan(), "the new server in the Preview")
        custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "emb")
        eventually(lambda: f"{namespace}/emb" not in plan(), "the deleted server gone from the Preview")

        # Foreign memory appears on the pinned GPU: the Manual pin over-commits it now.
        xorg = {"pid": 77, "usedMiB": 3000, "name": "Xorg"}
        publish(custom_objects, workstation, gpu_node_status(workstation, processes={1: [xorg]}))
        warned = eventually(
            lambda: [e for e in described_events(custom_objects, core_v1, name) if e.reason == "OverCommitted"],
            "an OverCommitted event, as kubectl describe lists it",
        )
        assert warned[0].type == "Warning"
        assert f"workstation GPU 1 (NVIDIA-RTX-A400, {small}) over-committed by 186MiB" in warned[0].message
        assert "foreign 3000MiB" in warned[0].message and "total 4094MiB" in warned[0].message
        warnings = eventually(
            lambda: assignment(custom_objects, name)["status"]["warnings"] or None, "the over-commit in the warnings"
        )
        over = [w for w in warnings if "over-commits" in w]
        assert len(over) == 1 and over[0].startswith(f"{namespace}/det: budget")
        assert not any(w.startswith(f"{namespace}/det: {namespace}/det") for w in warnings)

        # Settled: heartbeats and checks go on, the status is not rewritten and the event not repeated.
        version = assignment(custom_objects, name)["metadata"]["resourceVersion"]
        time.sleep(3)  # three check intervals
        publish(custom_objects, workstation, gpu_node_status(workstation, processes={1: [xorg]}))  # a heartbeat
        time.sleep(2)
        assert assignment(custom_objects, name)["metadata"]["resourceVersion"] == version
        assert len([e for e in described_events(custom_objects, core_v1, name) if e.reason == "OverCommitted"]) == 1
        assert operator.alive(), operator.logs()
    finally:
        publish(custom_objects, workstation, gpu_node_status(workstation))
        delete(custom_objects, name)


def test_assignment_events_are_on_the_assignment_and_an_overcommit_is_warned_once(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, core_v1: client.CoreV1Api
) -> None:
    create(custom_objects, namespace, generic("det", "1Gi", labels={"fleet": namespace}))
    name = f"big-{namespace}"
    # 4096MiB + the 256MiB margin on the 4094MiB A400: a Manual over-commit, allowed with a warning.
    body = manual(name, namespace, "Preview", 1, budget="4Gi")
    custom_objects.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    try:
        warned = eventually(
            lambda: [e for e in described_events(custom_objects, core_v1, name) if e.reason == "OverCommitted"],
            "an OverCommitted event, as kubectl describe lists it",
        )
        small = fake_gpu_uuid("workstation", 1)
        assert warned[0].type == "Warning"
        assert warned[0].message == (
            f"the plan over-commits workstation GPU 1 (NVIDIA-RTX-A400, {small}) over-committed by 258MiB: "
            f"reserved 4096MiB + foreign 0MiB + margin 256MiB > total 4094MiB (servers: {namespace}/det)"
        )
        warnings = assignment(custom_objects, name)["status"]["warnings"]
        over = [w for w in warnings if "over-commits" in w]
        assert len(over) == 1 and over[0].startswith(f"{namespace}/det: budget 4096MiB over-commits")
        assert not any(w.startswith(f"{namespace}/det: {namespace}/det") for w in warnings)
        assert operator.alive(), operator.logs()
    finally:
        delete(custom_objects, name)
