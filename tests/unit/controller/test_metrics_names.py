"""The operator's and the agent's metric names and labels: Prometheus conventions and dcgm-exporter's labels."""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vram_operator.agent.exporter import AgentMetrics
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNodeStatus, GpuProcess
from vram_operator.controller.metrics import Metrics

MIB = 1024 * 1024
# A name ends with its base unit (bytes, seconds), _total for counters, or is a ratio / 0-1 state.
CONVENTION = re.compile(r"^vram_(operator|agent)_[a-z_]+_(bytes|seconds|total|ratio)$|^vram_agent_(up|gpu_healthy)$")


def families(registry: object) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = generate_latest(registry).decode()  # type: ignore[arg-type]
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def fed_operator() -> Metrics:
    metrics = Metrics()
    metrics.reconciles.labels("InferenceServer", "placed").inc()
    metrics.reconcile_seconds.labels("InferenceServer").observe(0.1)
    metrics.placements.labels("VRAMBased", "placed").inc()
    metrics.record_server_reserved("ml", "llama", 7000.0)
    metrics.record_server_measured("ml", "llama", [6500.0, 6900.0])
    metrics.estimate_ratio.labels("ml", "llama").set(0.97)
    metrics.record_gpu("ws", 1, "GPU-b", reserved_mib=7000.0, measured_mib=6900.0)
    metrics.corrections.labels("KVCacheTooSmall", "raiseUtilization").inc()
    metrics.replacements.labels("GpuLost").inc()
    metrics.drift_reverted.labels("Deployment").inc()
    return metrics


def fed_agent() -> AgentMetrics:
    metrics = AgentMetrics("ws")
    process = GpuProcess(pid=1, used_mib=100.0, pod_uid="u", pod_namespace="ml", pod_name="p", container="c")
    gpu = GpuDeviceStatus(
        index=1,
        uuid="GPU-b",
        name="NVIDIA A400",
        memory_total_mib=4094,
        memory_used_mib=100,
        memory_free_mib=3994,
        processes=[process],
    )
    metrics.observe_poll(GpuNodeStatus(gpus=[gpu]), read_ok=True, duration_s=0.01, now=1.0)
    return metrics


def test_every_name_is_in_base_units_or_a_counter() -> None:
    samples = [
        sample for got in (families(fed_operator().registry), families(fed_agent().registry)) for sample in got.values()
    ]
    names = {re.sub(r"_(bucket|count|sum)$", "", name) for series in samples for name, _, _ in series}
    names = {name for name in names if not name.endswith("_created")}  # the client's creation-time samples
    assert len(names) >= 20
    for name in names:
        assert CONVENTION.match(name), name
    assert not [name for name in names if "mib" in name]


def test_gpu_series_carry_dcgm_labels() -> None:
    dcgm = {"gpu": "1", "UUID": "GPU-b", "Hostname": "ws", "node": "ws"}
    for name in ("vram_operator_gpu_reserved_bytes", "vram_operator_gpu_measured_bytes"):
        ((_, labels, _),) = families(fed_operator().registry)[name]
        assert labels == dcgm
    agent = families(fed_agent().registry)
    ((_, labels, value),) = agent["vram_agent_gpu_memory_total_bytes"]
    assert labels == dcgm | {"modelName": "NVIDIA A400"}
    assert value == 4094 * MIB
    ((_, labels, value),) = agent["vram_agent_pod_memory_used_bytes"]
    assert labels == dcgm | {"namespace": "ml", "pod": "p", "container": "c"}
    assert value == 100 * MIB


def test_server_gauges_are_per_gpu_so_tensor_parallel_compares_with_its_reservation() -> None:
    got = families(fed_operator().registry)
    ((_, _, reserved),) = got["vram_operator_server_reserved_bytes"]
    ((_, _, measured),) = got["vram_operator_server_measured_bytes"]
    assert reserved == 7000 * MIB
    assert measured == 6900 * MIB  # the fuller of its two GPUs, not 13400 summed over both
    assert measured <= reserved


def test_no_measurement_sets_no_measured_gauge() -> None:
    metrics = Metrics()
    metrics.record_server_measured("ml", "llama", [])
    assert families(metrics.registry)["vram_operator_server_measured_bytes"] == []
