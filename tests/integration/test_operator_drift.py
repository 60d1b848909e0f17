"""Children kept as rendered, on the real control plane: a Deployment changed (`kubectl set env`,
`kubectl scale`) or deleted by hand is restored within a check interval or so, with an Event."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from operator_harness import Operator, create, eventually, generic, get

pytestmark = pytest.mark.integration

SERVER_LABEL = "vram.dev/server"
STOPPED = "vram.dev/stopped-for-rollout"
# The harness runs the operator with --check-interval 1: a restore must not wait much longer than
# a watch event plus one check (the bound leaves room for a loaded CI machine).
RESTORED_WITHIN = 15.0


def engine_env(deployment: Any) -> dict[str, str]:
    return {e.name: e.value for e in deployment.spec.template.spec.containers[0].env or []}


def drift_events(core_v1: client.CoreV1Api, namespace: str, server: str) -> list[str]:
    events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={server}").items
    return [e.message for e in events if e.reason == "DriftReverted"]


def read(apps_v1: client.AppsV1Api, namespace: str, name: str) -> Any:
    try:
        return apps_v1.read_namespaced_deployment(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def set_env(apps_v1: client.AppsV1Api, namespace: str, name: str, variable: str, value: str) -> None:
    """What `kubectl set env deploy/<name> VARIABLE=value` does: another field manager changes the value."""
    names = [e.name for e in read(apps_v1, namespace, name).spec.template.spec.containers[0].env]
    path = f"/spec/template/spec/containers/0/env/{names.index(variable)}/value"
    apps_v1.patch_namespaced_deployment(
        name, namespace, [{"op": "replace", "path": path, "value": value}], field_manager="kubectl-set"
    )


def add_env(apps_v1: client.AppsV1Api, namespace: str, name: str, variable: str, value: str) -> None:
    """`kubectl set env deploy/<name> VARIABLE=value` for a variable the container does not have."""
    add = {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": variable, "value": value}}
    apps_v1.patch_namespaced_deployment(name, namespace, [add], field_manager="kubectl-set")


def scale(apps_v1: client.AppsV1Api, namespace: str, name: str, replicas: int) -> None:
    """What `kubectl scale --replicas=N deploy/<name>` does: the scale subresource."""
    body = {"spec": {"replicas": replicas}}
    apps_v1.patch_namespaced_deployment_scale(name, namespace, body, field_manager="kubectl")


def test_set_env_and_scale_are_reverted_with_an_event(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    create(custom_objects, namespace, generic("web", "2Gi", replicas=2))
    eventually(lambda: read(apps_v1, namespace, "web-replica-1"), "web's two Deployments")
    pinned = engine_env(read(apps_v1, namespace, "web"))["NVIDIA_VISIBLE_DEVICES"]
    assert pinned.startswith("GPU-")

    set_env(apps_v1, namespace, "web", "NVIDIA_VISIBLE_DEVICES", "all")
    add_env(apps_v1, namespace, "web", "LD_PRELOAD", "/tmp/hook.so")
    scale(apps_v1, namespace, "web", 3)
    started = time.monotonic()
    eventually(
        lambda: (
            (d := read(apps_v1, namespace, "web")).spec.replicas == 1
            and engine_env(d)["NVIDIA_VISIBLE_DEVICES"] == pinned
            and "LD_PRELOAD" not in engine_env(d)
        ),
        "the env and replicas of web reverted",
        timeout=RESTORED_WITHIN,
    )
    print(f"set env and scale reverted after {time.monotonic() - started:.1f}s")
    named = ("Deployment web: reverted", "env NVIDIA_VISIBLE_DEVICES", "replicas 3→1", "env LD_PRELOAD (added)")
    text = eventually(
        lambda: all(part in (t := " | ".join(drift_events(core_v1, namespace, "web"))) for part in named) and t,
        "DriftReverted events naming what was reverted",
    )
    assert "all" not in text.replace("Deployment web: reverted", "")  # env values are not shown


def test_a_deleted_deployment_is_recreated_with_an_event(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    create(custom_objects, namespace, generic("web", "2Gi", replicas=2))
    eventually(lambda: read(apps_v1, namespace, "web-replica-1"), "web's two Deployments")
    uid = read(apps_v1, namespace, "web-replica-1").metadata.uid
    apps_v1.delete_namespaced_deployment("web-replica-1", namespace)
    started = time.monotonic()
    recreated = eventually(
        lambda: (d := read(apps_v1, namespace, "web-replica-1")) is not None and d.metadata.uid != uid and d,
        "web-replica-1 recreated",
        timeout=RESTORED_WITHIN,
    )
    print(f"deleted Deployment recreated after {time.monotonic() - started:.1f}s")
    assert recreated.metadata.owner_references[0].name == "web"
    eventually(
        lambda: "Deployment web-replica-1: recreated (it was deleted)" in drift_events(core_v1, namespace, "web"),
        "the recreation event",
    )
    assert (get(custom_objects, namespace, "web")["status"] or {}).get("phase") != "Failed"


def test_a_server_stopped_for_a_rollout_is_kept_at_zero_replicas(
    *,
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
) -> None:
    body: dict[str, Any] = generic("paused", "1Gi")
    body["metadata"]["annotations"] = {STOPPED: "true"}
    create(custom_objects, namespace, body)
    eventually(lambda: (d := read(apps_v1, namespace, "paused")) is not None and d, "paused's Deployment")
    assert read(apps_v1, namespace, "paused").spec.replicas == 0
    scale(apps_v1, namespace, "paused", 1)
    eventually(
        lambda: read(apps_v1, namespace, "paused").spec.replicas == 0,
        "the rollout's stop kept",
        timeout=RESTORED_WITHIN,
    )
