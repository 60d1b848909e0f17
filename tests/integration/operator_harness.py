"""The harness for the operator integration tests: the operator run as a subprocess
(`python -m vram_operator.controller`), GpuNode objects written as a simulated agent would, and small
InferenceServer and wait helpers. The fixtures built on it (gpu_fleet, operator) are in conftest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid

T = TypeVar("T")
GROUP, VERSION = "vram.dev", "v1alpha1"
MARGIN_MIB = 256
TIMEOUT = 90.0
SMALL_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # catalogued: sized without a config.json; 24 layers, context 32768
VLLM_IMAGE = "vllm/vllm-openai:v0.19.0"


def eventually(produce: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = produce()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def gpu_node_status(
    node: FakeNode,
    *,
    heartbeat: datetime | None = None,
    unhealthy: frozenset[int] = frozenset(),
    processes: dict[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """What a simulated agent reports for a fake node."""
    processes = processes or {}
    gpus = []
    for index, gpu in enumerate(node.gpus):
        used = sum(p.get("usedMiB", 0) for p in processes.get(index, []))
        gpus.append(
            {
                "index": index,
                "uuid": fake_gpu_uuid(node.name, index),
                "name": gpu.product,
                "memoryTotalMiB": gpu.memory_mib,
                "memoryUsedMiB": used,
                "memoryFreeMiB": gpu.memory_mib - used,
                "healthy": index not in unhealthy,
                "processes": processes.get(index, []),
            }
        )
    return {"backend": "simulated", "lastHeartbeat": rfc3339(heartbeat or datetime.now(UTC)), "gpus": gpus}


def write_gpu_node_status(custom: client.CustomObjectsApi, name: str, status: dict[str, Any]) -> None:
    """Create the GpuNode if it is not there yet, then replace its status (as an agent's write)."""
    try:
        custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "gpunodes",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": name}},
        )
    except ApiException as error:
        if error.status != 409:
            raise
    custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", name, {"status": status})


def delete_cluster_object(custom: client.CustomObjectsApi, plural: str, name: str) -> None:
    """Delete a cluster-scoped object of ours (gpunodes, gpuassignments); one already gone is fine."""
    try:
        custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
    except ApiException as error:
        if error.status != 404:
            raise


def publish(custom: client.CustomObjectsApi, node: FakeNode, status: dict[str, Any]) -> None:
    write_gpu_node_status(custom, node.name, status)


@contextmanager
def reports_restored(custom: client.CustomObjectsApi, nodes: list[FakeNode]) -> Iterator[None]:
    """For a fixture that changes what the GpuNodes report: every node reports its plain status again after."""
    try:
        yield
    finally:
        for node in nodes:
            publish(custom, node, gpu_node_status(node))


class LoggedProcess:
    """A child process of the tests, started again as often as a test likes; the output of each start goes to
    its own numbered log file, `<log_dir>/<name>-<start>.log`."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name, self.argv, self.log_dir = name, argv, log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.name}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def kill(self) -> None:
        """kill -9: no cleanup, no graceful shutdown."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.log_dir.glob(f"{self.name}-*.log")))


class Operator(LoggedProcess):
    """The operator as a subprocess, restricted to one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, log_dir: Path, *extra: str) -> None:
        argv = [
            sys.executable,
            "-m",
            "vram_operator.controller",
            "--standalone",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--check-interval",
            "1",
            "--heartbeat-stale-seconds",
            "3600",
            "--metrics-port",
            "0",
            "--health-port",
            "0",
            "--margin-mib",
            str(MARGIN_MIB),
            # measured runs kept in the test's own namespace: one test's runs never size another's servers
            "--measured-runs-namespace",
            namespace,
            *extra,
        ]
        super().__init__("operator", argv, log_dir)


def start_operator(kubeconfig: Path, namespace: str, tmp_path: Path, *extra: str) -> Iterator[Operator]:
    operator = Operator(kubeconfig, namespace, tmp_path, *extra)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        print(operator.logs())  # shown by pytest when the test fails


class Twin(LoggedProcess):
    """The simulated GPU runtime (`vram-operator simulate`) as a subprocess, with its faults and state files."""

    def __init__(self, kubeconfig: Path, work: Path, *, seed: int = 0, interval: float = 0.5) -> None:
        self.faults_path = work / "faults.yaml"
        self.state_path = work / "twin-state.json"
        self.logs_dir = work / "engine-logs"  # served as the pods' logs (KWOK Logs objects)
        self.logs_dir.mkdir(exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "vram_operator.cli",
            "simulate",
            "--kubeconfig",
            str(kubeconfig),
            "--faults",
            str(self.faults_path),
            "--state-file",
            str(self.state_path),
            "--seed",
            str(seed),
            "--interval",
            str(interval),
            "--backoff-seconds",
            "1",
            "--backoff-max-seconds",
            "4",
            "--heartbeat",
            "5",
            "--logs-dir",
            str(self.logs_dir),
        ]
        super().__init__("twin", argv, work)

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Replace the faults file (atomically: the twin never reads half of it)."""
        temporary = self.faults_path.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(faults))
        temporary.replace(self.faults_path)

    def state(self) -> dict[str, Any]:
        """The twin's last state file ({} before its first pass)."""
        try:
            found: dict[str, Any] = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return found

    def wait_tick(self, timeout: float = 30.0) -> dict[str, Any]:
        """The state of a pass that began after this call."""
        after = self.state().get("tick", 0)
        return eventually(lambda: (s := self.state()) and s.get("tick", 0) > after + 1 and s, "a twin pass", timeout)


def start_twin(kubeconfig: Path, work: Path, *, seed: int = 0) -> Iterator[Twin]:
    twin = Twin(kubeconfig, work, seed=seed)
    twin.set_faults({})
    twin.start()
    try:
        yield twin
    finally:
        if twin.alive():
            twin.set_faults({})  # leave the GpuNodes healthy and every node in place for the next module
            twin.wait_tick()
        twin.stop()
        print(twin.logs())


def inference_server(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name} if labels is None else {"name": name, "labels": labels}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceServer", "metadata": metadata, "spec": spec}


def generic(name: str, budget: str, replicas: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec = {"engine": "generic", "image": "example.invalid/detector:1", "vramBudget": budget, "replicas": replicas}
    return inference_server(name, spec, labels or {})


def vllm_server(
    name: str,
    *,
    image: str = VLLM_IMAGE,
    model: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A vLLM InferenceServer of SMALL_MODEL (unless `model` says otherwise); `spec` adds the other fields."""
    model = {"name": SMALL_MODEL} if model is None else model
    return inference_server(name, {"engine": "vllm", "image": image, "model": model, **spec}, labels)


def _namespaced(server: str, namespace: str) -> str:
    return server if "/" in server else f"{namespace}/{server}"


def manual_assignment(name: str, namespace: str, mode: str, pins: list[dict[str, Any]]) -> dict[str, Any]:
    """A Manual GpuAssignment of the servers labelled fleet=<namespace>; a pin names a server of that namespace by
    its name, one of another namespace as <namespace>/<name>."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GpuAssignment",
        "metadata": {"name": name},
        "spec": {
            "strategy": "Manual",
            "mode": mode,
            "serverSelector": {"matchLabels": {"fleet": namespace}},
            "assignments": [{**pin, "server": _namespaced(pin["server"], namespace)} for pin in pins],
        },
    }


def create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", body)


def get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", name)
    return found


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def phase_is(custom: client.CustomObjectsApi, namespace: str, name: str, *phases: str) -> dict[str, Any] | None:
    obj = get(custom, namespace, name)
    return obj if (obj.get("status") or {}).get("phase") in phases else None


def totals(nodes: list[FakeNode]) -> dict[str, float]:
    return {fake_gpu_uuid(n.name, i): float(g.memory_mib) for n in nodes for i, g in enumerate(n.gpus)}
