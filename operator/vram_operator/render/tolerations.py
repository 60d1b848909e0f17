"""Tolerations of rendered server pods for the taints GPU nodes carry.

GKE taints GPU node pools `nvidia.com/gpu=present:NoSchedule`, and many clusters taint GPU nodes
`nvidia.com/gpu`. The ExtendedResourceToleration admission plugin adds a matching toleration only to
pods that request `nvidia.com/gpu`; envvar-pinned pods request none, so the operator adds its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vram_operator.render.errors import RenderError

GPU_TAINT_TOLERATION: Mapping[str, str] = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEFAULT_TOLERATIONS: tuple[Mapping[str, Any], ...] = (GPU_TAINT_TOLERATION,)
_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_FIELD = "--server-tolerations"


def parse_tolerations(text: str) -> tuple[Mapping[str, Any], ...]:
    """A JSON list of Kubernetes Tolerations (`[]`: none), as the chart's operator.serverTolerations
    renders it; anything else is a RenderError naming the flag."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RenderError(f"not JSON: {error.msg} (expected a list of tolerations)", field=_FIELD) from None
    if not isinstance(value, list):
        raise RenderError(f"expected a JSON list of tolerations, got {type(value).__name__}", field=_FIELD)
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not item:
            raise RenderError(f"item {index} is not a toleration object", field=_FIELD)
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise RenderError(f"item {index}: unknown field(s) {', '.join(unknown)}", field=_FIELD)
    return tuple(value)
