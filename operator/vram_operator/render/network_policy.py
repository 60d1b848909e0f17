"""The server's NetworkPolicy: in-cluster clients may reach the serving port, nothing else comes in.

Ingress only. Egress stays open because the engines need it: vLLM and llama.cpp download the model
from Hugging Face at start unless a volume holds it, and a generic service's needs are unknown.
Ingress is any pod of any namespace (namespaceSelector {}) to the engine port: clients, gateways
and Prometheus scraping vLLM's /metrics all sit in the cluster. Traffic from outside the cluster
(NodePort, LoadBalancer) is not a pod and is refused: turn the policy off for servers exposed that
way (operator flag --no-server-network-policy, chart value networkPolicy.servers). The kubelet's
probes come from the node and are always allowed.
"""

from __future__ import annotations

from typing import Any

from vram_operator.api import InferenceServer
from vram_operator.render.engine import engine_port
from vram_operator.render.metadata import object_metadata, selector_labels
from vram_operator.render.settings import RenderSettings


def render_network_policy(server: InferenceServer, settings: RenderSettings) -> dict[str, Any] | None:
    """A NetworkPolicy named after the server (None when the operator renders none)."""
    if not settings.server_network_policy:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(server, settings),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(server)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"namespaceSelector": {}}],
                    "ports": [{"protocol": "TCP", "port": engine_port(server, settings)}],
                }
            ],
        },
    }
