"""Host access: a server's pass-through fields reach the host only when the operator allows it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from render_builders import generic, placement, server

from vram_operator.render import RenderError, RenderSettings, render_deployment
from vram_operator.render.host_access import HostAccess, host_access

REFUSING = RenderSettings()
ALLOWING = RenderSettings(allow_host_access=True)
HOST_ROOT = {"name": "root", "hostPath": {"path": "/"}}
HARMLESS = [
    {"name": "scratch", "emptyDir": {}},
    {"name": "config", "configMap": {"name": "engine-config"}},
    {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
]


def test_refusing_is_the_default() -> None:
    assert RenderSettings().allow_host_access is False


def test_host_path_volume_is_refused_naming_the_spec_field() -> None:
    spec = generic(volumes=[*HARMLESS, HOST_ROOT], volumeMounts=[{"name": "root", "mountPath": "/host"}])
    with pytest.raises(RenderError) as refused:
        render_deployment(server(spec), placement(), None, REFUSING)
    assert refused.value.field == "spec.volumes[3].hostPath"
    assert refused.value.reason == "HostAccessRefused"
    assert "hostPath volume 'root' (/)" in str(refused.value)
    assert "--allow-host-access" in str(refused.value)
    assert "admission.allowHostAccess" in str(refused.value)


def test_host_path_volume_renders_when_allowed() -> None:
    spec = generic(volumes=[HOST_ROOT], volumeMounts=[{"name": "root", "mountPath": "/host", "readOnly": True}])
    deployment = render_deployment(server(spec), placement(), None, ALLOWING).deployment
    assert_valid(deployment)
    assert deployment["spec"]["template"]["spec"]["volumes"] == [HOST_ROOT]


def test_harmless_volumes_render_when_host_access_is_refused() -> None:
    deployment = render_deployment(server(generic(volumes=HARMLESS)), placement(), None, REFUSING).deployment
    assert deployment["spec"]["template"]["spec"]["volumes"] == HARMLESS


def test_the_operators_own_pod_fields_reach_no_host() -> None:
    # tensor-parallel vLLM adds a /dev/shm volume of its own: memory-backed, not the host's
    spec = {"engine": "vllm", "image": "vllm/vllm-openai:v0.19.0", "model": {"name": "m"}, "tensorParallelSize": 2}
    deployment = render_deployment(server(spec), placement("GPU-a", "GPU-b"), 0.9, REFUSING).deployment
    assert host_access(deployment["spec"]["template"]["spec"]) == []


def test_every_kind_of_host_access_in_a_pod_is_found() -> None:
    pod: dict[str, Any] = {
        "hostNetwork": True,
        "hostPID": False,
        "hostIPC": True,
        "volumes": [{"name": "ok", "emptyDir": {}}, {"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}],
        "initContainers": [{"name": "init", "securityContext": {"privileged": True}}],
        "containers": [
            {
                "name": "engine",
                "securityContext": {"privileged": False, "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}},
                "ports": [{"containerPort": 8000}, {"containerPort": 9000, "hostPort": 9000}],
            }
        ],
    }
    assert [access.field for access in host_access(pod)] == [
        "volumes[1].hostPath",
        "hostNetwork",
        "hostIPC",
        "initContainers[0].securityContext.privileged",
        "containers[0].securityContext.capabilities.add",
        "containers[0].ports[1].hostPort",
    ]
    assert HostAccess("volumes[1].hostPath", "hostPath volume 'docker' (/var/run/docker.sock)") in host_access(pod)


def test_dropped_capabilities_and_false_flags_are_no_host_access() -> None:
    pod = {
        "hostNetwork": False,
        "containers": [{"name": "c", "securityContext": {"privileged": False, "capabilities": {"drop": ["ALL"]}}}],
    }
    assert host_access(pod) == []


VOLUME_SOURCES = st.sampled_from(
    [
        ("emptyDir", {}),
        ("configMap", {"name": "cm"}),
        ("secret", {"secretName": "s"}),
        ("persistentVolumeClaim", {"claimName": "pvc"}),
        ("hostPath", {"path": "/"}),
        ("hostPath", {"path": "/srv/models", "type": "Directory"}),
    ]
)


@given(st.lists(VOLUME_SOURCES, max_size=6), st.booleans())
def test_a_rendered_pod_reaches_the_host_only_when_allowed(sources: list[tuple[str, Any]], allowed: bool) -> None:
    volumes = [{"name": f"v{i}", kind: source} for i, (kind, source) in enumerate(sources)]
    settings = ALLOWING if allowed else REFUSING
    host_paths = [i for i, volume in enumerate(volumes) if "hostPath" in volume]
    try:
        deployment = render_deployment(server(generic(volumes=volumes)), placement(), None, settings).deployment
    except RenderError as error:
        assert not allowed and host_paths
        assert error.field == f"spec.volumes[{host_paths[0]}].hostPath"
        return
    assert allowed or not host_paths
    assert deployment["spec"]["template"]["spec"].get("volumes", []) == volumes
