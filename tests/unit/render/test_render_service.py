"""The Service in front of the engine."""

from __future__ import annotations

from typing import Any

import pytest
from kube_schema import assert_valid
from render_builders import generic, llamacpp, placement, server, vllm

from vram_operator.render import PlacedReplica, RenderSettings, render


@pytest.mark.parametrize(("spec", "port"), [(vllm(), 8000), (llamacpp(), 8080), (generic(), 8080)])
def test_service_targets_the_engine_port_of_the_servers_pods(spec: dict[str, Any], port: int) -> None:
    rendered = render(server(spec), [PlacedReplica(0, placement(), 0.5)], RenderSettings())
    service = rendered.service
    assert_valid(service)
    assert service["metadata"]["name"] == "chat"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = rendered.deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [p["name"] for p in container_ports] == ["http"]
