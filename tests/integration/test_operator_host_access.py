"""The operator's own refusal of host access (issue 10 item 9), for clusters installed without the
admission policy: a hostPath server fails with reason HostAccessRefused and gets no Deployment, unless
the operator runs with --allow-host-access. No policy is installed in this module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import Operator, condition, create, eventually, generic, phase_is, start_operator

from localcluster import FakeNode

pytestmark = pytest.mark.integration

HOST_MODELS = {"name": "models", "hostPath": {"path": "/srv/models", "type": "Directory"}}
SCRATCH = {"name": "scratch", "emptyDir": {}}


def with_volume(name: str, volume: dict[str, Any]) -> dict[str, Any]:
    body = generic(name, "1Gi")
    body["spec"]["volumes"] = [volume]
    body["spec"]["volumeMounts"] = [{"name": volume["name"], "mountPath": "/models", "readOnly": True}]
    return body


def pod_volumes(apps_v1: client.AppsV1Api, namespace: str, name: str) -> list[Any] | None:
    try:
        deployment: Any = apps_v1.read_namespaced_deployment(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        return None
    return list(deployment.spec.template.spec.volumes or [])


@pytest.fixture
def allowing_operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode]
) -> Iterator[Operator]:
    yield from start_operator(kubeconfig, namespace, tmp_path, "--allow-host-access")


def test_host_path_server_is_refused_by_default(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    create(custom_objects, namespace, with_volume("scratch", SCRATCH))
    create(custom_objects, namespace, with_volume("host-models", HOST_MODELS))
    failed = eventually(lambda: phase_is(custom_objects, namespace, "host-models", "Failed"), "host-models Failed")
    estimated = condition(failed, "Estimated")
    assert estimated is not None and estimated["reason"] == "HostAccessRefused"
    assert estimated["message"].startswith("spec.volumes[0].hostPath: host access refused")
    assert "--allow-host-access" in estimated["message"]
    assert "placement" not in failed["status"]
    # the harmless volume renders (the same operator, the same check)
    volumes = eventually(lambda: pod_volumes(apps_v1, namespace, "scratch"), "the scratch Deployment")
    assert [v.name for v in volumes] == ["scratch"]
    assert pod_volumes(apps_v1, namespace, "host-models") is None

    def refused_event() -> bool | None:
        events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=host-models").items
        return any(e.type == "Warning" and e.reason == "HostAccessRefused" for e in events) or None

    assert eventually(refused_event, "a HostAccessRefused Warning event")


def test_allow_host_access_renders_the_host_path(
    allowing_operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, apps_v1: client.AppsV1Api
) -> None:
    create(custom_objects, namespace, with_volume("host-models", HOST_MODELS))
    volumes = eventually(lambda: pod_volumes(apps_v1, namespace, "host-models"), "the host-models Deployment")
    assert [(v.name, v.host_path.path) for v in volumes] == [("models", "/srv/models")]
    placed = eventually(lambda: phase_is(custom_objects, namespace, "host-models", "Placed", "Running"), "placed")
    estimated = condition(placed, "Estimated")
    assert estimated is not None and estimated["status"] == "True"
