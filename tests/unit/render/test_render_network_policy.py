"""The server's NetworkPolicy: in-cluster clients to the engine port only; egress left to the engine."""

from __future__ import annotations

from typing import Any

import pytest
from kube_schema import assert_valid
from render_builders import generic, llamacpp, placement, server, vllm

from vram_operator.render import PlacedReplica, RenderSettings, render

ON = RenderSettings()
OFF = RenderSettings(server_network_policy=False)


@pytest.mark.parametrize("spec", [vllm(), llamacpp(), generic()], ids=["vllm", "llamacpp", "generic"])
def test_the_policy_admits_in_cluster_clients_to_the_engine_port_only(spec: dict[str, Any]) -> None:
    rendered = render(server(spec), [PlacedReplica(0, placement(), 0.5)], ON)
    policy = rendered.network_policy
    assert policy is not None
    assert_valid(policy)
    pod = rendered.deployment["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": port}]}
    ]
    # Egress stays open: the engines download their models at start.
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["metadata"]["ownerReferences"][0]["name"] == "chat"
    # Applied before the pods it protects.
    kinds = [obj["kind"] for obj in rendered.objects]
    assert kinds.index("NetworkPolicy") < kinds.index("Deployment")


def test_the_policy_can_be_turned_off() -> None:
    rendered = render(server(vllm()), [PlacedReplica(0, placement(), 0.5)], OFF)
    assert rendered.network_policy is None
    assert "NetworkPolicy" not in [obj["kind"] for obj in rendered.objects]
