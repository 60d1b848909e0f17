"""Measured runs kept in the cluster: one ConfigMap in the operator's namespace, one record per model,
settings and GPU product (sizing/measured.py), written when a server's engine has reported and its
memory was measured, read before each decision.

A ConfigMap rather than a custom resource: it needs no CRD installed and upgraded beside the
operator, the operator already reads ConfigMaps, and the records are small and bounded
(sizing.measured.MAX_RECORDS of a few hundred bytes each, well within a ConfigMap's 1 MiB).
"""

from __future__ import annotations

from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus
from vram_operator.sizing.measured import MeasuredRun, settings_key

MEASURED_RUNS_CONFIG_MAP = "vram-operator-measured-runs"


def measured_run(server: InferenceServer, status: InferenceServerStatus, now: str) -> MeasuredRun | None:
    """The run a server's status shows: the engine's complete report on its placed GPU, and what the
    agent measured there (the budget kept is the larger of what was reserved and what was used)."""
    report, placement = status.engine_report, status.placement
    if report is None or placement is None or not placement.gpus or status.memory is None:
        return None
    if report.weights_mib is None or report.kv_cache_mib is None or report.kv_cache_tokens is None:
        return None
    used = max((gpu.used_mib for gpu in status.memory.per_gpu), default=0.0)
    gpu = placement.gpus[0]
    return MeasuredRun(
        settings=settings_key(server.spec),
        gpu_product=gpu.name,
        gpu_total_mib=gpu.total_mib,
        budget_mib=round(max(placement.budget_mib, used), 1),
        utilization=status.gpu_memory_utilization,
        weights_mib=report.weights_mib,
        kv_cache_mib=report.kv_cache_mib,
        kv_cache_tokens=report.kv_cache_tokens,
        max_concurrency=report.max_concurrency or 0.0,
        engine_version=report.engine_version,
        server=server.key,
        measured_at=now,
    )
