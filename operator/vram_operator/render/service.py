"""The ClusterIP Service in front of a server's engine port."""

from __future__ import annotations

from typing import Any

from vram_operator.api import InferenceServer
from vram_operator.render.engine import engine_port
from vram_operator.render.metadata import object_metadata, selector_labels
from vram_operator.render.settings import RenderSettings


def render_service(server: InferenceServer, settings: RenderSettings) -> dict[str, Any]:
    """A ClusterIP Service named after the server, forwarding to the engine's "http" port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(server, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(server),
            "ports": [{"name": "http", "port": engine_port(server, settings), "targetPort": "http", "protocol": "TCP"}],
        },
    }
