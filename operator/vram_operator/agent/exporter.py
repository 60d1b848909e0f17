"""Prometheus metrics of the node agent, on a registry it owns.

Names follow Prometheus conventions (base units: `_bytes`, `_seconds`, `_total`) and stay stable;
docs/metrics.md lists them. GPU series carry dcgm-exporter's labels so they join with DCGM's:
`gpu` (device index), `UUID`, `modelName`, `Hostname` (the node), plus `node` (the same name).

- vram_agent_gpu_memory_total_bytes        total memory of a GPU or MIG device
- vram_agent_gpu_memory_used_bytes         used memory
- vram_agent_gpu_memory_free_bytes         free memory
- vram_agent_gpu_memory_reserved_bytes     memory the driver/firmware reserves
- vram_agent_gpu_healthy                   1 when the GPU answers, 0 when it is lost or in error
- vram_agent_gpu_foreign_bytes             memory used by processes of no pod (desktop, other services)
- vram_agent_gpu_unattributed_bytes        used memory no listed process accounts for
- vram_agent_pod_memory_used_bytes         memory used per pod and container on a GPU; labels
                                           node, Hostname, namespace, pod, container, gpu, UUID
- vram_agent_up                            1 when the last poll read the GPUs, else 0
- vram_agent_last_successful_poll_timestamp_seconds   Unix time of the last poll that read the GPUs
- vram_agent_poll_duration_seconds         duration of the last poll (read, attribute, build)
- vram_agent_errors_total                  errors by `kind`: backend (a GPU or the driver failed),
                                           api (a status write failed), poll (the poll itself failed)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vram_operator.api.gpu_node import GpuNodeStatus

ERROR_KINDS = ("backend", "api", "poll")
MIB = 1024 * 1024  # the agent measures in MiB; the metrics are in bytes
GPU_LABELS = ("node", "Hostname", "gpu", "UUID", "modelName")
POD_LABELS = ("node", "Hostname", "namespace", "pod", "container", "gpu", "UUID")


class _StatusCollector(Collector):
    """Turns the last built GpuNodeStatus into gauges at scrape time."""

    def __init__(self, node: str) -> None:
        self._node = node
        self.status: GpuNodeStatus | None = None
        self.up = 0.0
        self.last_success: float | None = None
        self.duration_s: float | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node = self._node
        gpu_labels = list(GPU_LABELS)
        memory = {
            key: GaugeMetricFamily(f"vram_agent_gpu_memory_{key}_bytes", f"GPU memory {key}.", labels=gpu_labels)
            for key in ("total", "used", "free", "reserved")
        }
        healthy = GaugeMetricFamily("vram_agent_gpu_healthy", "1 when the GPU answers, else 0.", labels=gpu_labels)
        foreign = GaugeMetricFamily(
            "vram_agent_gpu_foreign_bytes", "GPU memory used by processes of no pod.", labels=gpu_labels
        )
        unattributed = GaugeMetricFamily(
            "vram_agent_gpu_unattributed_bytes",
            "Used GPU memory no listed process accounts for.",
            labels=gpu_labels,
        )
        per_pod = GaugeMetricFamily(
            "vram_agent_pod_memory_used_bytes",
            "GPU memory used by a pod's container on a GPU.",
            labels=list(POD_LABELS),
        )
        for gpu in self.status.gpus if self.status else ():
            labels = [node, node, str(gpu.index), gpu.uuid, gpu.name]
            memory["total"].add_metric(labels, gpu.memory_total_mib * MIB)
            memory["used"].add_metric(labels, gpu.memory_used_mib * MIB)
            memory["free"].add_metric(labels, gpu.memory_free_mib * MIB)
            memory["reserved"].add_metric(labels, gpu.memory_reserved_mib * MIB)
            healthy.add_metric(labels, 1.0 if gpu.healthy else 0.0)
            unattributed.add_metric(labels, gpu.unattributed_mib * MIB)
            foreign_mib = 0.0
            pods: dict[tuple[str, str, str], float] = {}
            for process in gpu.processes:
                used = process.used_mib or 0.0
                if process.pod_uid is None:
                    foreign_mib += used
                    continue
                key = (process.pod_namespace or "", process.pod_name or process.pod_uid, process.container or "")
                pods[key] = pods.get(key, 0.0) + used
            foreign.add_metric(labels, foreign_mib * MIB)
            for (namespace, pod, container), used in sorted(pods.items()):
                per_pod.add_metric([node, node, namespace, pod, container, str(gpu.index), gpu.uuid], used * MIB)
        yield from memory.values()
        yield from (healthy, foreign, unattributed, per_pod)

        health = [
            ("vram_agent_up", "1 when the last poll read the GPUs.", self.up),
            (
                "vram_agent_last_successful_poll_timestamp_seconds",
                "Unix time of the last poll that read the GPUs.",
                self.last_success,
            ),
            ("vram_agent_poll_duration_seconds", "Duration of the last poll.", self.duration_s),
        ]
        for name, documentation, value in health:
            if value is not None:
                family = GaugeMetricFamily(name, documentation, labels=["node"])
                family.add_metric([node], value)
                yield family


class AgentMetrics:
    """The agent's metrics; the poll loop feeds them, start_http_server serves them."""

    def __init__(self, node: str) -> None:
        self.registry = CollectorRegistry()
        self._collector = _StatusCollector(node)
        self.registry.register(self._collector)
        self._errors = Counter("vram_agent_errors", "Agent errors by kind.", ["node", "kind"], registry=self.registry)
        for kind in ERROR_KINDS:  # present at 0 from the start, so rate() works from the first error
            self._errors.labels(node, kind)
        self._node = node

    def observe_poll(self, status: GpuNodeStatus | None, *, read_ok: bool, duration_s: float, now: float) -> None:
        """Record one poll: the status it built (None if the poll failed) and whether it read the GPUs."""
        if status is not None:
            self._collector.status = status
        self._collector.up = 1.0 if read_ok else 0.0
        self._collector.duration_s = duration_s
        if read_ok:
            self._collector.last_success = now

    def count_error(self, kind: str, amount: int = 1) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        self._errors.labels(self._node, kind).inc(amount)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve /metrics on a background (daemon) thread; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_port)
