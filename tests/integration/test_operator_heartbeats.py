"""A GpuNode whose agent went silent, on the real control plane: the operator marks it Ready=Unknown
(HeartbeatStale) and takes the mark back when the agent reports again; `kubectl get gpunodes`
shows Ready and the heartbeat's age."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from operator_harness import GROUP, VERSION, Operator, eventually, rfc3339

pytestmark = pytest.mark.integration

NODE = "silent-agent"
# The harness runs the operator with --heartbeat-stale-seconds 3600 and --check-interval 1.
LONG_AGO = timedelta(hours=2)


def report(custom: client.CustomObjectsApi, beat: datetime, conditions: list[dict[str, Any]] | None) -> None:
    """An agent's status write: a writer that sends conditions replaces them, one that does not keeps them."""
    status: dict[str, Any] = {"backend": "simulated", "lastHeartbeat": rfc3339(beat), "gpus": []}
    if conditions is not None:
        status["conditions"] = conditions
    custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", NODE, {"status": status})


def ready(custom: client.CustomObjectsApi) -> tuple[str, str] | None:
    node: Any = custom.get_cluster_custom_object(GROUP, VERSION, "gpunodes", NODE)
    found = next((c for c in (node.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)
    return None if found is None else (found["status"], found["reason"])


def node_events(core_v1: client.CoreV1Api, reason: str) -> list[Any]:
    selector = f"involvedObject.kind=GpuNode,involvedObject.name={NODE},reason={reason}"
    found: list[Any] = core_v1.list_event_for_all_namespaces(field_selector=selector).items
    return found


def agent_ready(now: datetime) -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": "True", "reason": "AllGpusHealthy", "lastTransitionTime": rfc3339(now)}]


@pytest.fixture
def silent_node(custom_objects: client.CustomObjectsApi) -> Iterator[None]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": NODE}}
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body)
    try:
        yield
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", NODE)


def table(dynamic_client: Any) -> dict[str, Any]:
    """What `kubectl get gpunodes NAME` prints, as the API server's Table."""
    found = dynamic_client.request(
        "GET",
        f"/apis/{GROUP}/{VERSION}/gpunodes/{NODE}",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    shown: dict[str, Any] = found.to_dict()
    return shown


def test_a_silent_agent_s_gpu_node_turns_stale_and_back(
    *,
    operator: Operator,
    silent_node: None,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    dynamic_client: Any,
) -> None:
    now = datetime.now(UTC)
    report(custom_objects, now - LONG_AGO, agent_ready(now - LONG_AGO))
    eventually(lambda: ready(custom_objects) == ("Unknown", "HeartbeatStale"), "Ready=Unknown HeartbeatStale")
    eventually(lambda: node_events(core_v1, "HeartbeatStale"), "a HeartbeatStale event (kubectl describe gpunode)")

    shown = table(dynamic_client)
    columns = [c["name"] for c in shown["columnDefinitions"]]
    assert {"Ready", "Heartbeat"} <= set(columns)
    cells = dict(zip(columns, shown["rows"][0]["cells"], strict=True))
    assert cells["Ready"] == "Unknown"
    assert cells["Heartbeat"] in {"120m", "121m"}  # the heartbeat's age (two hours), as kubectl prints it

    report(custom_objects, datetime.now(UTC), None)  # reports again, without conditions: the mark goes
    eventually(lambda: ready(custom_objects) is None, "the HeartbeatStale mark removed")
    eventually(lambda: node_events(core_v1, "HeartbeatResumed"), "a HeartbeatResumed event")

    report(custom_objects, datetime.now(UTC) - LONG_AGO, None)  # silent again: judged on the timer
    eventually(lambda: ready(custom_objects) == ("Unknown", "HeartbeatStale"), "marked stale again")

    report(custom_objects, datetime.now(UTC), agent_ready(datetime.now(UTC)))  # the agent's own Ready
    deadline = time.monotonic() + 3.0  # three check intervals: the operator leaves a fresh Ready alone
    while time.monotonic() < deadline:
        assert ready(custom_objects) == ("True", "AllGpusHealthy")
        time.sleep(0.3)
