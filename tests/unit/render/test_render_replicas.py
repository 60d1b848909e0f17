"""Replicas: one Deployment per replica, each pinned to its own GPU(s) with its own utilization."""

from __future__ import annotations

from typing import Any

from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, container, env_of, placement, server, vllm

from vram_operator.render import PlacedReplica, RenderSettings, render

ENVVAR = RenderSettings()
DRA = RenderSettings(pinning_mode="dra")
UUID_C = "GPU-00000000-cccc-cccc-cccc-000000000003"


def three_replicas() -> list[PlacedReplica]:
    return [
        PlacedReplica(0, placement(UUID_A, node="workstation"), 0.35),
        PlacedReplica(1, placement(UUID_B, node="h100-0"), 0.11),
        PlacedReplica(2, placement(UUID_C, node="h100-1"), 0.12),
    ]


def affinity_nodes(deployment: dict[str, Any]) -> list[str]:
    pod = deployment["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [value for term in terms for field in term["matchFields"] for value in field["values"]]


def test_each_replica_gets_a_deployment_pinned_to_its_own_gpu() -> None:
    rendered = render(server(vllm(replicas=3)), three_replicas(), ENVVAR)
    names = [d["metadata"]["name"] for d in rendered.deployments]
    assert names == ["chat", "chat-replica-1", "chat-replica-2"]
    assert [env_of(d)["NVIDIA_VISIBLE_DEVICES"] for d in rendered.deployments] == [UUID_A, UUID_B, UUID_C]
    assert [affinity_nodes(d) for d in rendered.deployments] == [["workstation"], ["h100-0"], ["h100-1"]]
    utilizations = [
        container(d)["args"][container(d)["args"].index("--gpu-memory-utilization") + 1] for d in rendered.deployments
    ]
    assert utilizations == ["0.35", "0.11", "0.12"]
    for deployment in rendered.deployments:
        assert_valid(deployment)
        assert deployment["spec"]["replicas"] == 1  # one pod per placement, never N pods on one GPU
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # Replica i's Deployment selects only its own pods; the Service selects every replica's.
    selectors = [d["spec"]["selector"]["matchLabels"] for d in rendered.deployments]
    assert selectors[1] == {"vram.dev/server": "chat", "vram.dev/replica": "1"}
    assert selectors[2] == {"vram.dev/server": "chat", "vram.dev/replica": "2"}
    assert rendered.service["spec"]["selector"] == {"vram.dev/server": "chat"}
    assert rendered.objects[-1] is rendered.service


def test_one_replica_renders_exactly_as_before() -> None:
    rendered = render(server(vllm()), [PlacedReplica(0, placement(UUID_A), 0.5)], ENVVAR)
    (deployment,) = rendered.deployments
    assert deployment["metadata"]["name"] == "chat"
    assert "vram.dev/replica" not in deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == {"vram.dev/server": "chat"}


def test_a_stopped_server_keeps_every_replica_deployment_at_zero_pods() -> None:
    rendered = render(server(vllm(replicas=0)), three_replicas(), ENVVAR)
    assert [d["spec"]["replicas"] for d in rendered.deployments] == [0, 0, 0]


def test_dra_claims_per_replica_gpu_and_shared_where_replicas_share_a_gpu() -> None:
    replicas = [
        PlacedReplica(0, placement(UUID_A), 0.3),
        PlacedReplica(1, placement(UUID_B), 0.3),
        PlacedReplica(2, placement(UUID_A), 0.3),
    ]
    rendered = render(server(vllm(replicas=3)), replicas, DRA)
    claims = [c["metadata"]["name"] for c in rendered.resource_claims]
    assert len(claims) == 2 == len(set(claims))
    refs = [d["spec"]["template"]["spec"]["resourceClaims"][0]["resourceClaimName"] for d in rendered.deployments]
    assert refs[0] == refs[2] != refs[1]
    assert set(refs) == set(claims)
