"""status.engineReport from the engine's start-up log, and EstimateAccurate against the estimate."""

from __future__ import annotations

import asyncio
import dataclasses

from controller_builders import A5500, A5500_MIB, generic, node, vllm_server
from test_server_reconciler import QWEN_CONFIG, Harness, live_node

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuProcess
from vram_operator.api.inference_server import (
    EngineReportStatus,
    EstimateStatus,
    InferenceServerStatus,
)
from vram_operator.controller.engine_reports import (
    MAX_LOG_READS,
    engine_report,
    pods_to_read,
    with_estimate_accuracy,
)
from vram_operator.controller.measured_runs import MEASURED_RUNS_CONFIG_MAP
from vram_operator.controller.pods import PodFacts
from vram_operator.controller.runtime import now, rfc3339
from vram_operator.controller.server_status import Outcome, decided_status
from vram_operator.sizing.measured import MeasuredRun

NOW = "2026-11-30T21:00:00Z"


def pod(name: str, uid: str, *, ready: bool = True) -> PodFacts:
    return PodFacts(
        uid=uid, name=name, namespace="ns", ready=ready, restarts=0, crashing=False, container="engine",
        termination_message="",
    )  # fmt: skip


def vllm_log(weights_gib: float, kv_gib: float, tokens: int) -> str:
    return (
        "(APIServer pid=1) INFO 11-30 20:59:01 [api_server.py:1272] vLLM API server version 0.11.0\n"
        f"(EngineCore pid=9) INFO 11-30 20:59:30 [gpu_model_runner.py:2653] Model loading took {weights_gib} GiB "
        "memory and 4.2 seconds\n"
        f"(EngineCore pid=9) INFO 11-30 20:59:40 [gpu_worker.py:298] Available KV cache memory: {kv_gib} GiB\n"
        f"(EngineCore pid=9) INFO 11-30 20:59:40 [kv_cache_utils.py:1087] GPU KV cache size: {tokens:,} tokens\n"
        "(EngineCore pid=9) INFO 11-30 20:59:40 [kv_cache_utils.py:1091] Maximum concurrency for 4,096 tokens "
        "per request: 2.00x\n"
    )


def gpu_with_process(uuid: str, *, pod_uid: str, used: float) -> GpuDeviceStatus:
    return GpuDeviceStatus(
        index=0, uuid=uuid, name=A5500, memory_total_mib=A5500_MIB, memory_used_mib=used,
        memory_free_mib=A5500_MIB - used, processes=[GpuProcess(pid=42, used_mib=used, pod_uid=pod_uid)],
    )  # fmt: skip


def with_report(estimate: EstimateStatus, report: EngineReportStatus) -> InferenceServerStatus:
    return InferenceServerStatus(estimate=estimate, engine_report=report)


def accuracy(status: InferenceServerStatus) -> tuple[str, str, str]:
    found = next(c for c in status.conditions if c.type == "EstimateAccurate")
    return found.status, found.reason, found.message


def test_estimate_off_names_the_figure_and_both_values() -> None:
    status = with_report(
        EstimateStatus(weights_mib=1000.0, kv_cache_mib=2000.0, kv_cache_tokens=20000),
        EngineReportStatus(weights_mib=1000.0, kv_cache_mib=1500.0, kv_cache_tokens=19000),
    )
    state, reason, message = accuracy(with_estimate_accuracy(status, 0.10, generation=1, now=NOW))
    assert (state, reason) == ("False", "EstimateOff")
    assert "kvCacheMiB: estimated 2000, the engine reported 1500 (+33.3%)" in message


def test_estimate_within_the_threshold_is_accurate_at_the_boundary() -> None:
    estimate = EstimateStatus(weights_mib=1100.0)
    at = with_report(estimate, EngineReportStatus(weights_mib=1000.0))
    assert accuracy(with_estimate_accuracy(at, 0.11, generation=1, now=NOW))[:2] == ("True", "EstimateAccurate")
    assert accuracy(with_estimate_accuracy(at, 0.09, generation=1, now=NOW))[:2] == ("False", "EstimateOff")


def test_no_report_sets_no_condition() -> None:
    status = InferenceServerStatus(estimate=EstimateStatus(weights_mib=1.0))
    assert with_estimate_accuracy(status, 0.1, generation=1, now=NOW) == status


def test_only_ready_pods_whose_log_is_still_to_be_read_are_read() -> None:
    pods = [pod("b", "2"), pod("a", "1"), pod("c", "3", ready=False), pod("d", "4")]
    reads = {"2": MAX_LOG_READS, "4": MAX_LOG_READS - 1}
    assert [p.name for p in pods_to_read(pods, reads)] == ["a", "d"]


def test_a_log_without_a_report_yet_is_read_again_a_bounded_number_of_times() -> None:
    h = placed_vllm({})
    for _ in range(MAX_LOG_READS + 2):
        check_with_pods(h, pod("llm-1", "p1"))
    assert h.kube.log_reads == [("ns", "llm-1")] * MAX_LOG_READS
    assert h.status("ns/llm").engine_report is None


def test_a_log_served_late_is_still_read() -> None:
    h = placed_vllm({})
    check_with_pods(h, pod("llm-1", "p1"))  # Ready, but its log is not there yet
    h.kube.pod_logs[("ns", "llm-1")] = vllm_log(1.0, 2.0, 3000)
    check_with_pods(h, pod("llm-1", "p1"))
    report = h.status("ns/llm").engine_report
    assert report is not None and report.kv_cache_tokens == 3000
    check_with_pods(h, pod("llm-1", "p1"))
    assert len(h.kube.log_reads) == 2  # complete: not read again


def test_an_odd_version_string_is_kept_as_printed_within_its_bound() -> None:
    for version in ("0.11.0+cu118", "nightly", "v" * 100):
        text = vllm_log(1.0, 2.0, 10).replace("version 0.11.0", f"version {version}")
        report = engine_report("vllm", text, "p", NOW)
        assert report is not None and report.engine_version == version[:64]


def test_a_log_without_figures_gives_no_report() -> None:
    assert engine_report("vllm", "INFO starting\n", "p", NOW) is None
    report = engine_report("vllm", vllm_log(1.5, 2.0, 100), "p", NOW)
    assert report is not None and report.engine_version == "0.11.0" and report.pod == "p"


def placed_vllm(kube_logs: dict[tuple[str, str], str]) -> Harness:
    h = Harness(live_node("ws", total=A5500_MIB))
    h.kube.config_maps[("ns", "cfg")] = {"config.json": QWEN_CONFIG.read_text()}
    h.kube.pod_logs.update(kube_logs)
    h.add(vllm_server())
    assert h.reconcile("ns/llm").placement is not None
    return h


def check_with_pods(h: Harness, *pods: PodFacts) -> None:
    """A check that sees these pods of ns/llm, rendered for its current placement (so they count as its)."""
    placed = h.status("ns/llm").placement
    if placed is not None:
        where = {
            "node": placed.node,
            "gpus": ",".join(g.uuid for g in placed.gpus),
            "budget_mib": str(int(placed.budget_mib)),
        }
        pods = tuple(dataclasses.replace(p, **where) for p in pods)
    indexes = h.indexes()
    indexes["server_pods"] = {"ns/llm": list(pods)}
    asyncio.run(h.reconciler.check_servers(indexes))


def test_the_engine_report_is_read_once_per_pod_and_compared() -> None:
    h = placed_vllm({})
    estimate = h.status("ns/llm").estimate
    assert estimate is not None and estimate.kv_cache_mib > 0
    exact_kv_gib = estimate.kv_cache_mib / 1024
    h.kube.pod_logs[("ns", "llm-1")] = vllm_log(estimate.weights_mib / 1024, exact_kv_gib, estimate.kv_cache_tokens)
    check_with_pods(h, pod("llm-1", "p1", ready=False))
    assert h.status("ns/llm").engine_report is None and h.kube.log_reads == []  # not started yet
    check_with_pods(h, pod("llm-1", "p1"))
    report = h.status("ns/llm").engine_report
    assert report is not None and report.pod == "llm-1" and report.kv_cache_tokens == estimate.kv_cache_tokens
    assert h.condition("ns/llm", "EstimateAccurate")[:2] == ("True", "EstimateAccurate")
    check_with_pods(h, pod("llm-1", "p1"))
    assert h.kube.log_reads == [("ns", "llm-1")]  # once per pod
    samples = {
        s.labels["figure"]: s.value
        for s in h.rt.metrics.registry.collect()
        for s in s.samples
        if s.name == "vram_operator_estimate_error_ratio"
    }
    assert set(samples) == {"weightsMiB", "kvCacheMiB", "kvCacheTokens"}
    assert abs(samples["kvCacheMiB"]) < 0.01


def test_a_new_pod_reporting_a_smaller_kv_cache_turns_the_estimate_off() -> None:
    h = placed_vllm({})
    estimate = h.status("ns/llm").estimate
    assert estimate is not None
    h.kube.pod_logs[("ns", "llm-2")] = vllm_log(estimate.weights_mib / 1024, estimate.kv_cache_mib / 1024 / 2, 10)
    check_with_pods(h, pod("llm-2", "p2"))
    state, reason, message = h.condition("ns/llm", "EstimateAccurate")
    assert (state, reason) == ("False", "EstimateOff")
    assert "kvCacheTokens" in message or "kvCacheMiB" in message
    assert h.reasons().count("EstimateOff") == 1
    check_with_pods(h, pod("llm-2", "p2"))
    assert h.reasons().count("EstimateOff") == 1  # one Event per transition


def test_a_generic_server_reads_no_report() -> None:
    assert engine_report("generic", vllm_log(1, 1, 1), "x", NOW) is None


def test_a_second_server_of_the_model_is_sized_from_the_first_ones_measured_run() -> None:
    h = placed_vllm({})
    first = h.status("ns/llm")
    assert first.estimate is not None and first.placement is not None
    h.kube.pod_logs[("ns", "llm-1")] = vllm_log(first.estimate.weights_mib / 1024 * 1.05, 1.25, 4321)
    used = first.placement.budget_mib + 300.0  # CUDA graphs beyond vLLM's share
    h.nodes = [
        node("ws", gpu_with_process(first.placement.gpus[0].uuid, pod_uid="p1", used=used), heartbeat=rfc3339(now()))
    ]
    check_with_pods(h, pod("llm-1", "p1"))
    records = h.kube.config_maps[("default", MEASURED_RUNS_CONFIG_MAP)]
    (run,) = [MeasuredRun.from_json(text) for text in records.values()]
    assert run is not None and run.kv_cache_tokens == 4321 and run.budget_mib == round(used, 1)
    assert run.server == "ns/llm" and run.gpu_product == A5500 and run.engine_version == "0.11.0"
    check_with_pods(h, pod("llm-1", "p1"))
    assert len(h.kube.config_maps[("default", MEASURED_RUNS_CONFIG_MAP)]) == 1  # kept once per pod

    twin = vllm_server().model_copy(update={"metadata": ObjectMeta(name="llm2", namespace="ns", generation=1, uid="v")})
    h.nodes.append(live_node("other", total=A5500_MIB))
    h.add(twin)
    outcome = h.reconcile("ns/llm2")
    assert outcome.placement is not None and outcome.estimate is not None
    assert outcome.placement.budget_mib == run.budget_mib and outcome.estimate.source == "measured"
    assert outcome.estimate.kv_cache_tokens == 4321
    assert h.condition("ns/llm2", "Estimated")[2].startswith("sized from a measured run of ns/llm on NVIDIA RTX A5500")
    placed = [m for key, _, reason, m in h.events if key == "ns/llm2" and reason == "Placed"]
    assert placed and "sized from a measured run of ns/llm" in placed[0]


def test_a_run_that_cannot_be_kept_leaves_the_server_running_and_is_tried_once_per_pod() -> None:
    h = placed_vllm({})
    placed = h.status("ns/llm").placement
    assert placed is not None
    h.kube.refuse_config_maps.add(("default", MEASURED_RUNS_CONFIG_MAP))
    h.kube.pod_logs[("ns", "llm-1")] = vllm_log(1.0, 2.0, 3000)
    h.nodes = [node("ws", gpu_with_process(placed.gpus[0].uuid, pod_uid="p1", used=9000.0), heartbeat=rfc3339(now()))]
    check_with_pods(h, pod("llm-1", "p1"))
    check_with_pods(h, pod("llm-1", "p1"))
    status = h.status("ns/llm")
    assert status.engine_report is not None and status.memory is not None and status.phase == "Running"
    assert ("default", MEASURED_RUNS_CONFIG_MAP) not in h.kube.config_maps
    assert h.rt.runs_recorded == {"ns/llm": "llm-1"}


def test_a_generic_servers_log_is_never_read() -> None:
    h = Harness(live_node("ws"))
    h.add(generic("svc"))
    assert h.reconcile("ns/svc").placement is not None
    indexes = h.indexes()
    indexes["server_pods"] = {"ns/svc": [pod("svc-1", "g1")]}
    asyncio.run(h.reconciler.check_servers(indexes))
    assert h.kube.log_reads == []


def test_an_unplaced_server_loses_its_report_and_its_estimate_accuracy() -> None:
    report = EngineReportStatus(weights_mib=1000.0)
    off = with_estimate_accuracy(with_report(EstimateStatus(weights_mib=2000.0), report), 0.1, generation=1, now=NOW)
    assert accuracy(off)[0] == "False"
    cleared = with_estimate_accuracy(off.model_copy(update={"engine_report": None}), 0.1, generation=1, now=NOW)
    assert all(c.type != "EstimateAccurate" for c in cleared.conditions)
    unplaced = decided_status(off, Outcome(unplaced_reason="InsufficientMemory"), generation=2, now=NOW)
    assert unplaced.engine_report is None
