"""Prometheus metrics of the operator, on a registry of its own (served at /metrics).

Names follow Prometheus conventions (base units: `_bytes`, `_seconds`, `_total`) and stay stable;
docs/metrics.md lists them. GPU series carry dcgm-exporter's labels (`gpu` = index, `UUID`,
`Hostname` = node) plus `node`, so they join with DCGM's and the agent's.

vram_operator_reconcile_total{kind,outcome}            reconciles by resource kind and outcome
vram_operator_reconcile_seconds{kind}                  reconcile latency (histogram)
vram_operator_placements_total{strategy,outcome}       placement decisions (placed, unplaced, failed)
vram_operator_server_reserved_bytes{namespace,server}  VRAM reserved for a server on each of its GPUs
vram_operator_server_measured_bytes{namespace,server}  VRAM the server uses on its fullest GPU (per GPU,
                                                       so a tensor-parallel server compares with its reservation)
vram_operator_gpu_reserved_bytes{node,Hostname,gpu,UUID}   VRAM reserved on a GPU by all servers
vram_operator_gpu_measured_bytes{node,Hostname,gpu,UUID}   VRAM our servers' processes use on a GPU
vram_operator_estimate_ratio{namespace,server}         measured / predicted per GPU (1.0 = exact)
vram_operator_estimate_error_ratio{namespace,server,figure}  estimate / engine's own report - 1 (0.0 = exact)
vram_operator_corrections_total{reason,action}         corrections of memory failures
vram_operator_replacements_total{reason}               servers re-placed (GPU lost, unhealthy)
vram_operator_drift_reverted_total{kind}               children changed or deleted by hand, restored
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Reconcile latency includes waiting for the batch and the API: seconds to minutes under a burst.
MIB = 1024 * 1024  # the operator sizes in MiB; the metrics are in bytes
GPU_LABELS = ("node", "Hostname", "gpu", "UUID")
# The figures of an engine's report compared with the estimate (status field names).
REPORTED_FIGURES = ("weightsMiB", "kvCacheMiB", "kvCacheTokens")
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter(
            "vram_operator_reconcile", "Reconciles by kind and outcome.", ["kind", "outcome"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "vram_operator_reconcile_seconds", "Reconcile latency.", ["kind"], buckets=RECONCILE_BUCKETS, registry=r
        )
        self.placements = Counter(
            "vram_operator_placements",
            "Placement decisions by strategy and outcome.",
            ["strategy", "outcome"],
            registry=r,
        )
        self.server_reserved = Gauge(
            "vram_operator_server_reserved_bytes",
            "VRAM reserved for a server on each of its GPUs.",
            ["namespace", "server"],
            registry=r,
        )
        self.server_measured = Gauge(
            "vram_operator_server_measured_bytes",
            "VRAM a server uses on the one of its GPUs where it uses most.",
            ["namespace", "server"],
            registry=r,
        )
        self.gpu_reserved = Gauge(
            "vram_operator_gpu_reserved_bytes", "VRAM reserved on a GPU by all servers.", GPU_LABELS, registry=r
        )
        self.gpu_measured = Gauge(
            "vram_operator_gpu_measured_bytes", "VRAM our servers' processes use on a GPU.", GPU_LABELS, registry=r
        )
        self.estimate_ratio = Gauge(
            "vram_operator_estimate_ratio", "Measured / predicted VRAM per GPU.", ["namespace", "server"], registry=r
        )
        self.estimate_error = Gauge(
            "vram_operator_estimate_error_ratio",
            "Estimate / the engine's own start-up report - 1, per figure (weightsMiB, kvCacheMiB, kvCacheTokens).",
            ["namespace", "server", "figure"],
            registry=r,
        )
        self.corrections = Counter(
            "vram_operator_corrections", "Corrections of memory failures.", ["reason", "action"], registry=r
        )
        self.replacements = Counter(
            "vram_operator_replacements", "Servers re-placed off lost or unhealthy GPUs.", ["reason"], registry=r
        )

        self.drift_reverted = Counter(
            "vram_operator_drift_reverted",
            "Children (Deployment, Service) changed or deleted by hand and restored.",
            ["kind"],
            registry=r,
        )

    def record_server_reserved(self, namespace: str, server: str, budget_mib: float) -> None:
        """The budget each of the server's GPUs holds for it (per GPU, like the measured gauge)."""
        self.server_reserved.labels(namespace, server).set(budget_mib * MIB)

    def record_server_measured(self, namespace: str, server: str, per_gpu_used_mib: Sequence[float]) -> None:
        """Use on the server's fullest GPU: a TP=2 server's 2 x 7 GiB compares with its 7 GiB per GPU, not 14."""
        if per_gpu_used_mib:
            self.server_measured.labels(namespace, server).set(max(per_gpu_used_mib) * MIB)

    def record_gpu(self, node: str, index: int, uuid: str, *, reserved_mib: float, measured_mib: float) -> None:
        labels = (node, node, str(index), uuid)
        self.gpu_reserved.labels(*labels).set(reserved_mib * MIB)
        self.gpu_measured.labels(*labels).set(measured_mib * MIB)

    def forget_server(self, namespace: str, server: str) -> None:
        for gauge in (self.server_reserved, self.server_measured, self.estimate_ratio):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, server)
        for figure in REPORTED_FIGURES:
            with contextlib.suppress(KeyError):
                self.estimate_error.remove(namespace, server, figure)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
