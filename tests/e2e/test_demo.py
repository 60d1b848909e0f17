"""The README's main command end to end: local cluster, simulated GPU runtime, operator, reference fleet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vram_operator.api import InferenceServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

from localcluster.process import pid_alive  # noqa: E402

SERVERS = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
DEMO_TIMEOUT = 600


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, object]]]:
    state = tmp_path_factory.mktemp("demo") / "state.json"
    env = {**os.environ, "VRAM_DEMO_STATE": str(state)}
    command = [sys.executable, str(ROOT / "hack" / "demo.py")]
    pids: list[int] = []
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        recorded = json.loads(state.read_text())
        pids = [int(c["pid"]) for c in recorded["components"]]
        yield done.stdout, recorded
    finally:
        subprocess.run([*command, "--down"], env=env, capture_output=True, timeout=120, check=False)
        assert not state.exists()
        # --down stops every process the demo started (zombies awaiting their adopter count as gone).
        assert [pid for pid in pids if pid_alive(pid)] == []


def test_every_server_is_placed_running_and_measured(demo: tuple[str, dict[str, object]]) -> None:
    output, _ = demo
    for name in SERVERS:
        line = next(line for line in output.splitlines() if line.startswith(f"ai/{name} "))
        assert " Running " in line, line
        assert re.search(r"Memory: \d+MiB / \d+MiB \(\d+\.\d%\)", line), line
    assert "ai-enrichment: budget 6963MiB exceeds workstation GPU 1" in output


def test_statuses_in_the_cluster_match(demo: tuple[str, dict[str, object]]) -> None:
    from kubernetes import client, config

    _, state = demo
    api = config.new_client_from_config(config_file=str(state["kubeconfig"]))
    items = client.CustomObjectsApi(api).list_namespaced_custom_object("vram.dev", "v1alpha1", "ai", "inferenceservers")
    servers = [InferenceServer.model_validate(item) for item in items["items"]]
    assert sorted(s.metadata.name for s in servers) == sorted(SERVERS)
    by_gpu: dict[str, float] = {}
    for server in servers:
        assert server.status is not None and server.status.placement is not None and server.status.memory
        for gpu in server.status.placement.gpus:
            by_gpu[gpu.uuid] = by_gpu.get(gpu.uuid, 0.0) + server.status.placement.budget_mib
            total = gpu.total_mib
            assert by_gpu[gpu.uuid] <= total, f"GPU {gpu.uuid} over-committed"
        assert server.status.memory.used_mib <= server.status.placement.budget_mib


def test_demo_runs_control_plane_agent_and_operator(demo: tuple[str, dict[str, object]]) -> None:
    _, state = demo
    components = state["components"]
    assert isinstance(components, list)
    assert {c["name"] for c in components} >= {"kube-apiserver", "etcd", "operator", "simulate"}


def test_demo_says_what_is_simulated(demo: tuple[str, dict[str, object]]) -> None:
    output, _ = demo
    assert 'Simulated here: the node "workstation" (KWOK)' in output
    assert "Real: the control plane and the operator." in output


def _apply_file(kubeconfig: str, path: str) -> None:
    import yaml
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    body = yaml.safe_load(Path(path).read_text())
    client.CustomObjectsApi(api).create_namespaced_custom_object("vram.dev", "v1alpha1", "ai", "inferenceservers", body)


def _server(kubeconfig: str, name: str) -> dict[str, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "vram.dev", "v1alpha1", "ai", "inferenceservers", name
    )
    return found


def _until(check: Callable[[], dict[str, Any] | None], what: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1.0)
    pytest.fail(f"timed out waiting for {what}")


def test_what_the_demo_says_to_try(demo: tuple[str, dict[str, object]]) -> None:
    """The "Try" lines work: a server applied later is measured; the vLLM one crash-loops with vLLM's
    own message and runs once the operator has raised its utilization."""
    from kubernetes import client, config

    output, state = demo
    kubeconfig = str(state["kubeconfig"])
    files = dict(re.findall(r"kubectl apply -f (\S+/try-(\w+)\.yaml)", output))
    by_name = {name: path for path, name in files.items()}
    assert set(by_name) == {"detector", "qwen"}
    _apply_file(kubeconfig, by_name["detector"])
    status = _until(lambda: (_server(kubeconfig, "detector").get("status") or {}).get("memory"), "detector measured")
    assert status["display"].startswith("Memory: 128MiB / 24564MiB")

    api = config.new_client_from_config(config_file=kubeconfig)
    for name in ("ai-enrichment", "ai-florence"):  # as the demo says: frees the A400
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "vram.dev", "v1alpha1", "ai", "inferenceservers", name
        )
    _apply_file(kubeconfig, by_name["qwen"])

    def degraded() -> dict[str, Any] | None:
        conditions = (_server(kubeconfig, "qwen").get("status") or {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), None)
        return found if found and found["reason"] == "MaxModelLenTooLarge" else None

    assert "To serve at least one request with the model's max seq len (4096)" in _until(degraded, "crash")["message"]

    def corrected() -> dict[str, Any] | None:
        status = _server(kubeconfig, "qwen").get("status") or {}
        raised = (status.get("gpuMemoryUtilization") or 0) > 0.45
        return status if raised and status.get("phase") == "Running" and status.get("memory") else None

    assert _until(corrected, "qwen corrected and running")["memory"]["usedMiB"] > 0.45 * 4094
