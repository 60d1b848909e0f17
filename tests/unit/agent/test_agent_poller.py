from __future__ import annotations

import argparse
import json
from pathlib import Path

import pynvml
import pytest
from agent_fakes import MIB, FakeCustomObjects, FakeDevice, FakeNvml, containerd_cgroup, write_proc

from vram_operator.agent.exporter import AgentMetrics
from vram_operator.agent.main import add_arguments, run
from vram_operator.agent.nvml_backend import NvmlBackend
from vram_operator.agent.pods import PodDirectory
from vram_operator.agent.poller import Agent, rfc3339
from vram_operator.agent.reporter import GpuNodeReporter
from vram_operator.agent.snapshot import NodeSnapshot

UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"
POD = {
    "metadata": {"uid": UID, "name": "llama-0", "namespace": "ml"},
    "status": {"containerStatuses": [{"name": "vllm", "containerID": "containerd://" + "a" * 64}]},
}


def test_one_poll_attributes_reports_and_exports(tmp_path: Path) -> None:
    write_proc(tmp_path, 4242, containerd_cgroup(UID, "a" * 64), "python3")
    write_proc(tmp_path, 1800, "0::/user.slice/user-1000.slice/session-2.scope\n", "Xorg")
    device = FakeDevice(uuid="GPU-a", used=7000 * MIB, compute=[(4242, 6134 * MIB)], graphics=[(1800, 350 * MIB)])
    api, metrics = FakeCustomObjects(), AgentMetrics("node-1")
    agent = Agent(
        NvmlBackend(FakeNvml([device])),
        proc_root=tmp_path,
        pods=PodDirectory(lambda: [POD]),
        metrics=metrics,
        reporter=GpuNodeReporter(api, "node-1"),
        wall_clock=lambda: 1_767_225_600.0,
    )

    status = agent.poll_once()

    assert status is not None
    written = api.objects["node-1"]["status"]
    assert written["lastHeartbeat"] == "2026-01-01T00:00:00Z"
    vllm, desktop = written["gpus"][0]["processes"]
    assert (vllm["podNamespace"], vllm["podName"], vllm["container"], vllm["usedMiB"]) == (
        "ml",
        "llama-0",
        "vllm",
        6134,
    )
    assert (desktop["name"], "podUID" in desktop) == ("Xorg", False)
    assert written["gpus"][0]["unattributedMiB"] == 7000 - 6134 - 350


class Exploding:
    name = "nvml"

    def snapshot(self) -> NodeSnapshot:
        raise RuntimeError("boom")


def test_a_failing_backend_does_not_stop_the_agent(tmp_path: Path) -> None:
    metrics = AgentMetrics("node-1")
    agent = Agent(Exploding(), proc_root=tmp_path, metrics=metrics)  # type: ignore[arg-type]
    assert agent.poll_once() is None
    assert metrics.registry.get_sample_value("vram_agent_errors_total", {"node": "node-1", "kind": "poll"}) == 1
    assert metrics.registry.get_sample_value("vram_agent_up", {"node": "node-1"}) == 0


def test_no_nvml_still_reports_an_empty_node(tmp_path: Path) -> None:
    api, metrics = FakeCustomObjects(), AgentMetrics("node-1")
    nvml = FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    agent = Agent(NvmlBackend(nvml), proc_root=tmp_path, metrics=metrics, reporter=GpuNodeReporter(api, "node-1"))
    agent.poll_once()
    conditions = {c["type"]: c["reason"] for c in api.objects["node-1"]["status"]["conditions"]}
    assert conditions == {"Ready": "LibraryNotFound", "NvmlAvailable": "LibraryNotFound"}
    assert metrics.registry.get_sample_value("vram_agent_errors_total", {"node": "node-1", "kind": "backend"}) == 1


def test_api_errors_are_counted_and_polling_goes_on(tmp_path: Path) -> None:
    api, metrics = FakeCustomObjects(), AgentMetrics("node-1")
    api.fail_next = [500]
    agent = Agent(
        NvmlBackend(FakeNvml([FakeDevice(uuid="GPU-a")])),
        proc_root=tmp_path,
        metrics=metrics,
        reporter=GpuNodeReporter(api, "node-1"),
    )
    assert agent.poll_once() is not None
    assert metrics.registry.get_sample_value("vram_agent_errors_total", {"node": "node-1", "kind": "api"}) == 1


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--backend", "simulated"], "--profile"),
        (["--interval", "0"], "--interval"),
        (["--interval", "30", "--heartbeat", "10"], "--heartbeat"),
        (["--metrics-port", "70000"], "--metrics-port"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], field: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(parse(["--node-name", "n", *argv])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}") and err.count("\n") == 1


def test_node_name_is_required(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert run(parse([])) == 2
    assert "--node-name" in capsys.readouterr().err


def test_a_bad_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("gpus: [{name: x, memoryTotalMiB: zero}]")
    args = parse(["--node-name", "n", "--backend", "simulated", "--profile", str(profile), "--once"])
    assert run(args) == 2
    assert "gpus.0.memoryTotalMiB" in capsys.readouterr().err


def test_once_prints_the_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("gpus: [{name: T4, memoryTotalMiB: 15360, processes: [{pid: 5, usedMiB: 100, name: x}]}]")
    args = parse(
        [
            "--node-name",
            "n",
            "--backend",
            "simulated",
            "--profile",
            str(profile),
            "--once",
            "--proc-root",
            str(tmp_path),
        ]
    )
    assert run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["backend"], printed["gpuCount"], printed["gpus"][0]["memoryUsedMiB"]) == ("simulated", 1, 100)
