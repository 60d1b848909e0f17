"""Operator settings, from the `vram-operator run` flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from vram_operator.placement.planner import DEFAULT_MARGIN_MIB
from vram_operator.render import RenderSettings


@dataclass(frozen=True)
class ControllerSettings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    strategy: str = "VRAMBased"  # for servers no GpuAssignment manages
    margin_mib: float = float(DEFAULT_MARGIN_MIB)
    heartbeat_stale: timedelta = timedelta(seconds=120)
    # A GpuNode missing for less than this is unknown (its agent may be re-creating it), not lost.
    gpu_node_grace: timedelta = timedelta(seconds=60)
    check_interval: float = 10.0  # seconds between runtime checks of a server
    max_corrections: int = 3
    # EstimateAccurate=False when a figure the engine reported is further than this from the estimate.
    estimate_error_threshold: float = 0.10
    # Where the measured runs are kept (the ConfigMap controller.measured_runs names): the operator's namespace.
    measured_runs_namespace: str = "default"
    # Nodes with a GpuNode are labelled off the NVIDIA device plugin (controller/device_plugin.py).
    device_plugin_label: bool = True
    render: RenderSettings = field(default_factory=RenderSettings)
