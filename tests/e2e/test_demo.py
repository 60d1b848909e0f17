"""The README's main command end to end: local cluster, simulated GPU runtime, operator, the workstation's
reference fleet, then the desktop of examples/shared-12gb with a vLLM server on auto and one set too low."""

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
import yaml

from vram_operator.api import GpuNode, InferenceServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

from localcluster.process import pid_alive  # noqa: E402

SERVERS = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
AUTO, TOO_LOW = "default/assistant", "default/chat-manual-040"
DESKTOP = "desktop"
SHARED_CARD = GpuNode.model_validate(yaml.safe_load((ROOT / "examples/shared-12gb/gpunode.yaml").read_text()))
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


def kubectl_table(output: str, command: str) -> dict[str, dict[str, str]]:
    """The rows the demo printed under `$ kubectl <command>`, by namespace/name, cells by column header."""
    lines = output.splitlines()
    header = lines[lines.index(f"$ kubectl {command}") + 1]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    ends = [start for _, start in columns[1:]] + [None]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[lines.index(header) + 1 :]:
        if not line.strip():
            break
        row = {name: line[start:end].strip() for (name, start), end in zip(columns, ends, strict=True)}
        rows[f"{row['NAMESPACE']}/{row['NAME']}"] = row
    return rows


def clients(state: dict[str, object]) -> tuple[Any, Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(state["kubeconfig"]))
    return client.CustomObjectsApi(api), client.CoreV1Api(api), client.AppsV1Api(api)


def servers_in_cluster(state: dict[str, object]) -> dict[str, InferenceServer]:
    custom, _, _ = clients(state)
    items = custom.list_cluster_custom_object("vram.dev", "v1alpha1", "inferenceservers")["items"]
    found = [InferenceServer.model_validate(item) for item in items]
    return {f"{s.metadata.namespace}/{s.metadata.name}": s for s in found}


def gpu_nodes(state: dict[str, object]) -> dict[str, GpuNode]:
    custom, _, _ = clients(state)
    items = custom.list_cluster_custom_object("vram.dev", "v1alpha1", "gpunodes")["items"]
    return {item["metadata"]["name"]: GpuNode.model_validate(item) for item in items}


def foreign_mib(node: GpuNode) -> dict[str, float]:
    """Per GPU UUID, the memory of processes outside Kubernetes (no pod) as the node's agent reports it."""
    assert node.status is not None
    return {gpu.uuid: sum(p.used_mib or 0 for p in gpu.processes if not p.pod_uid) for gpu in node.status.gpus}


def test_every_server_is_placed_running_and_measured(demo: tuple[str, dict[str, object]]) -> None:
    output, _ = demo
    rows = kubectl_table(output, "get infs -A")
    assert set(rows) == {f"ai/{name}" for name in SERVERS} | {AUTO, TOO_LOW}
    for key, row in rows.items():
        if key == TOO_LOW:
            continue
        assert row["PHASE"] == "Running" and row["READY"] == "True", row
        assert re.fullmatch(r"\d+MiB / \d+MiB \(\d+\.\d%\)", row["MEMORY"]), row
    # The desktop joins once the workstation's servers are decided: none of them moves there.
    assert {rows[f"ai/{name}"]["NODE"] for name in SERVERS} == {"workstation"}
    assert "ai-enrichment: budget 6963MiB exceeds workstation GPU 1" in output


def test_statuses_in_the_cluster_match(demo: tuple[str, dict[str, object]]) -> None:
    _, state = demo
    servers = servers_in_cluster(state)
    assert sorted(servers) == sorted([*(f"ai/{name}" for name in SERVERS), AUTO, TOO_LOW])
    foreign = {uuid: mib for node in gpu_nodes(state).values() for uuid, mib in foreign_mib(node).items()}
    by_gpu: dict[str, float] = {}
    for key, server in servers.items():
        assert server.status is not None
        if key == TOO_LOW:
            assert server.status.placement is None
            continue
        assert server.status.placement is not None and server.status.memory
        for gpu in server.status.placement.gpus:
            by_gpu[gpu.uuid] = by_gpu.get(gpu.uuid, 0.0) + server.status.placement.budget_mib
            # Reservations and the memory outside Kubernetes together fit on the card.
            assert by_gpu[gpu.uuid] + foreign[gpu.uuid] <= gpu.total_mib, f"GPU {gpu.uuid} over-committed"
        assert server.status.memory.used_mib <= server.status.placement.budget_mib


def test_the_desktop_is_the_shared_12gb_card_with_its_services_outside_kubernetes(
    demo: tuple[str, dict[str, object]],
) -> None:
    _, state = demo
    reported, example = gpu_nodes(state)[DESKTOP].status, SHARED_CARD.status
    assert reported is not None and example is not None
    ((gpu,), (card,)) = (reported.gpus, example.gpus)
    assert (gpu.name, gpu.memory_total_mib) == (card.name, card.memory_total_mib)
    outside = [(p.name, p.used_mib) for p in gpu.processes if not p.pod_uid]
    assert outside == [(p.name, p.used_mib) for p in card.processes]


def test_vllm_on_auto_gets_a_computed_utilization_that_counts_the_foreign_memory(
    demo: tuple[str, dict[str, object]],
) -> None:
    output, state = demo
    server = servers_in_cluster(state)[AUTO]
    status = server.status
    assert server.spec.gpu_memory_utilization == 0  # left to the operator
    assert status is not None and status.placement is not None and status.estimate is not None
    assert status.utilization_mode == "auto" and status.gpu_memory_utilization is not None
    utilization = status.gpu_memory_utilization
    row = kubectl_table(output, "get infs -A")[AUTO]
    assert (row["NODE"], float(row["UTIL"]), row["PHASE"]) == (DESKTOP, utilization, "Running")
    (gpu,) = status.placement.gpus
    assert SHARED_CARD.status is not None
    outside = SHARED_CARD.status.gpus[0].processes
    foreign = sum(p.used_mib or 0 for p in outside)
    # The foreign memory is counted, process by process.
    assert f"foreign {foreign:.0f}MiB" in status.utilization_explanation[0]
    placed = next(c for c in status.conditions if c.type == "Placed")
    assert all(f"{p.name} {p.used_mib:.0f}MiB" in placed.message for p in outside)
    # Enough for one full request, within its reservation, and vLLM's start-up check passes: the card
    # has utilization x total free beside the services outside Kubernetes.
    assert status.estimate.min_utilization <= utilization
    assert utilization * gpu.total_mib <= status.placement.budget_mib
    assert utilization * gpu.total_mib <= gpu.total_mib - foreign
    # Its simulated vLLM printed the start-up lines the operator read back.
    assert status.engine_report is not None and status.engine_report.kv_cache_tokens
    assert f"GPU KV cache size: {status.engine_report.kv_cache_tokens:,} tokens" in output
    assert f"--gpu-memory-utilization {utilization:.2f}, computed:" in output


def test_vllm_at_a_too_low_manual_utilization_is_refused_with_the_engines_failure(
    demo: tuple[str, dict[str, object]],
) -> None:
    output, state = demo
    server = servers_in_cluster(state)[TOO_LOW]
    status, set_by_hand = server.status, server.spec.gpu_memory_utilization
    assert status is not None and status.estimate is not None and set_by_hand > 0
    row = kubectl_table(output, "get infs -A")[TOO_LOW]
    assert (row["NODE"], float(row["UTIL"]), row["PHASE"], row["REASON"]) == (
        "",
        set_by_hand,
        "Pending",
        "InsufficientMemory",
    )
    placed = next(c for c in status.conditions if c.type == "Placed")
    assert (placed.status, placed.reason) == ("False", "InsufficientMemory")
    # The card has room for what it asks; vLLM would fail there: the predicted failure is vLLM's own.
    assert "the engine would fail" in placed.message
    assert "No available memory for the cache blocks" in placed.message
    assert f"not placed, InsufficientMemory: {placed.message}" in output
    # The estimate: no KV cache at the value set by hand, which is below the smallest that starts,
    # while the smallest that starts would fit beside the services outside Kubernetes.
    assert status.estimate.kv_cache_tokens == 0
    assert set_by_hand < status.estimate.min_utilization
    assert SHARED_CARD.status is not None
    card = SHARED_CARD.status.gpus[0]
    assert status.estimate.min_utilization * card.memory_total_mib <= card.memory_free_mib
    _, core, apps = clients(state)
    assert "chat-manual-040" not in {d.metadata.name for d in apps.list_namespaced_deployment("default").items}
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=chat-manual-040").items
    assert {(e.type, e.reason) for e in events} >= {("Warning", "InsufficientMemory")}


def test_demo_runs_control_plane_agent_and_operator(demo: tuple[str, dict[str, object]]) -> None:
    _, state = demo
    components = state["components"]
    assert isinstance(components, list)
    assert {c["name"] for c in components} >= {"kube-apiserver", "etcd", "operator", "simulate"}


def test_demo_says_what_is_simulated(demo: tuple[str, dict[str, object]]) -> None:
    output, _ = demo
    assert SHARED_CARD.status is not None
    foreign = sum(p.used_mib or 0 for p in SHARED_CARD.status.gpus[0].processes)
    simulated = output[output.index("Simulated here:") : output.index("Real:")]
    for part in ('the nodes "workstation" (KWOK', '"desktop" (KWOK', "processes outside Kubernetes",
                 f"whisper-server and piper-tts, {foreign:.0f}MiB", "start-up lines they print"):  # fmt: skip
        assert part in " ".join(simulated.split()), part
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
    measured = _until(lambda: (_server(kubeconfig, "detector").get("status") or {}).get("memory"), "detector measured")
    detector = _server(kubeconfig, "detector")["status"]
    (gpu,) = detector["placement"]["gpus"]
    assert measured["display"].startswith(f"Memory: 128MiB / {gpu['totalMiB']:.0f}MiB")  # measured where placed
    placed = next(c for c in detector["conditions"] if c["type"] == "Placed")
    assert "most free memory" in placed["message"]  # as the demo says

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
