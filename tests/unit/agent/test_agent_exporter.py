from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vram_operator.agent.attribution import ProcessIdentity
from vram_operator.agent.cgroup import CgroupOwner
from vram_operator.agent.exporter import AgentMetrics
from vram_operator.agent.pods import PodInfo
from vram_operator.agent.snapshot import GpuSample, NodeSnapshot, ProcessSample
from vram_operator.agent.status import build_status

UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"
PODS = {UID: PodInfo(UID, "ml", "llama-0", {"a" * 64: "vllm"})}
IDENTITIES = {
    1: ProcessIdentity(CgroupOwner(UID, "a" * 64), "python3"),
    2: ProcessIdentity(CgroupOwner(UID, "a" * 64), "python3"),
    3: ProcessIdentity(CgroupOwner(), "Xorg"),
}


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gpu_pod_foreign_and_health_metrics() -> None:
    gpu = GpuSample(
        index=0,
        uuid="GPU-a",
        name="RTX 4090",
        total_mib=24564,
        used_mib=8000,
        free_mib=16264,
        reserved_mib=300,
        processes=(ProcessSample(1, 5000.0), ProcessSample(2, 1000.0), ProcessSample(3, 400.0)),
    )
    lost = GpuSample(index=1, uuid="GPU-b", healthy=False)
    status = build_status(
        NodeSnapshot("nvml", (gpu, lost)), IDENTITIES, PODS, now="2026-01-01T00:00:00Z", agent_version="0"
    )
    metrics = AgentMetrics("node-1")
    metrics.observe_poll(status, read_ok=True, duration_s=0.004, now=1_700_000_000.0)
    metrics.count_error("api")

    got = samples(metrics)
    mib = 1024 * 1024
    # dcgm-exporter's labels: gpu = index, UUID, modelName, Hostname (the node); node kept too
    labels = (("Hostname", "node-1"), ("UUID", "GPU-a"), ("gpu", "0"), ("modelName", "RTX 4090"), ("node", "node-1"))
    assert got[("vram_agent_gpu_memory_total_bytes", labels)] == 24564 * mib
    assert got[("vram_agent_gpu_memory_used_bytes", labels)] == 8000 * mib
    assert got[("vram_agent_gpu_memory_free_bytes", labels)] == 16264 * mib
    assert got[("vram_agent_gpu_memory_reserved_bytes", labels)] == 300 * mib
    assert got[("vram_agent_gpu_foreign_bytes", labels)] == 400 * mib
    assert got[("vram_agent_gpu_unattributed_bytes", labels)] == (8000 - 6400) * mib
    assert got[("vram_agent_gpu_healthy", labels)] == 1
    lost = (("Hostname", "node-1"), ("UUID", "GPU-b"), ("gpu", "1"), ("modelName", ""), ("node", "node-1"))
    assert got[("vram_agent_gpu_healthy", lost)] == 0
    pod_labels = (
        ("Hostname", "node-1"),
        ("UUID", "GPU-a"),
        ("container", "vllm"),
        ("gpu", "0"),
        ("namespace", "ml"),
        ("node", "node-1"),
        ("pod", "llama-0"),
    )
    assert got[("vram_agent_pod_memory_used_bytes", pod_labels)] == 6000 * mib  # two processes, one container
    node = (("node", "node-1"),)
    assert got[("vram_agent_up", node)] == 1
    assert got[("vram_agent_last_successful_poll_timestamp_seconds", node)] == 1_700_000_000
    assert got[("vram_agent_poll_duration_seconds", node)] == pytest.approx(0.004)
    assert got[("vram_agent_errors_total", (("kind", "api"), ("node", "node-1")))] == 1
    assert got[("vram_agent_errors_total", (("kind", "backend"), ("node", "node-1")))] == 0


def test_a_failed_read_sets_up_to_zero_and_keeps_the_last_success_time() -> None:
    metrics = AgentMetrics("node-1")
    metrics.observe_poll(None, read_ok=True, duration_s=0.01, now=100.0)
    metrics.observe_poll(None, read_ok=False, duration_s=0.02, now=200.0)
    got = samples(metrics)
    node = (("node", "node-1"),)
    assert got[("vram_agent_up", node)] == 0
    assert got[("vram_agent_last_successful_poll_timestamp_seconds", node)] == 100


def test_before_any_poll_only_health_metrics_exist() -> None:
    names = {name for name, _ in samples(AgentMetrics("n"))}
    assert "vram_agent_up" in names
    assert "vram_agent_gpu_memory_total_bytes" not in names
    assert "vram_agent_last_successful_poll_timestamp_seconds" not in names


def test_unknown_error_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown error kind"):
        AgentMetrics("n").count_error("disk")


def test_metrics_are_served_over_http() -> None:
    metrics = AgentMetrics("node-1")
    metrics.count_error("backend", 2)
    port = metrics.serve(0, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    errors = {s.labels["kind"]: s.value for s in families["vram_agent_errors"].samples if s.name.endswith("_total")}
    assert errors == {"backend": 2, "api": 0, "poll": 0}
