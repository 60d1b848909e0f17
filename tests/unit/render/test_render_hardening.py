"""Hardened server pods: safe defaults engines tolerate, overridable per server, host access still guarded."""

from __future__ import annotations

from typing import Any

import pytest
from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, generic, llamacpp, placement, server, vllm

from vram_operator.render import RenderError, RenderSettings, render_deployment
from vram_operator.render.hardening import HOST_MEMORY_PER_RANK_MIB, host_memory_mib

REFUSING = RenderSettings()
ALLOWING = RenderSettings(allow_host_access=True)


def _pod(spec: dict[str, Any], weights_mib: float | None = None, settings: RenderSettings = REFUSING) -> dict[str, Any]:
    gpus = (UUID_A, UUID_B)[: spec.get("tensorParallelSize", 1)]
    deployment = render_deployment(server(spec), placement(*gpus), 0.5, settings, weights_mib=weights_mib).deployment
    assert_valid(deployment)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("spec", [vllm(), llamacpp(), generic()], ids=["vllm", "llamacpp", "generic"])
def test_every_engine_gets_the_safe_defaults(spec: dict[str, Any]) -> None:
    pod = _pod(spec, weights_mib=4000)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    engine = pod["containers"][0]
    assert engine["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    # vLLM's and llama.cpp's official images run as root: no runAsNonRoot by default.
    assert "runAsNonRoot" not in pod["securityContext"]
    assert set(engine["resources"]["requests"]) == {"cpu", "memory"}


def test_host_memory_is_sized_from_the_weights_of_every_rank() -> None:
    pod = _pod(vllm(tensorParallelSize=2), weights_mib=15000.2)
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "2", "memory": f"{30001 + 2 * HOST_MEMORY_PER_RANK_MIB}Mi"}


def test_host_memory_without_an_estimate_is_the_process_floor() -> None:
    assert host_memory_mib(server(vllm()), None) == HOST_MEMORY_PER_RANK_MIB
    assert host_memory_mib(server(vllm()), 0) == HOST_MEMORY_PER_RANK_MIB
    assert host_memory_mib(server(vllm()), 1) == HOST_MEMORY_PER_RANK_MIB + 1


def test_the_servers_resources_win_per_key_and_a_limit_replaces_the_default_request() -> None:
    pod = _pod(vllm(resources={"requests": {"cpu": "8"}}), weights_mib=4000)
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": f"{4000 + 2048}Mi"}
    # A default request above a smaller limit would make the pod invalid: Kubernetes takes the limit.
    limited = _pod(vllm(resources={"limits": {"memory": "1Gi"}}), weights_mib=4000)["containers"][0]["resources"]
    assert limited == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}


def test_security_contexts_are_overridable_per_server() -> None:
    pod = _pod(
        vllm(
            podSecurityContext={"runAsNonRoot": True, "runAsUser": 1000},
            securityContext={"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        )
    )
    assert pod["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
        "runAsUser": 1000,
    }
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"securityContext": {"privileged": True}}, "spec.securityContext.privileged"),
        ({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}, "spec.securityContext.capabilities.add"),
        ({"securityContext": {"procMount": "Unmasked"}}, "spec.securityContext.procMount"),
        (
            {"podSecurityContext": {"windowsOptions": {"hostProcess": True}}},
            "spec.podSecurityContext.windowsOptions.hostProcess",
        ),
        (
            {"securityContext": {"windowsOptions": {"hostProcess": True}}},
            "spec.securityContext.windowsOptions.hostProcess",
        ),
    ],
)
def test_overrides_cannot_reopen_host_access_unless_allowed(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as refused:
        _pod(vllm(**spec))
    assert refused.value.field == field
    assert refused.value.reason == "HostAccessRefused"
    allowed = _pod(vllm(**spec), settings=ALLOWING)
    assert allowed["securityContext"].items() >= spec.get("podSecurityContext", {}).items()
    assert allowed["containers"][0]["securityContext"].items() >= spec.get("securityContext", {}).items()
