"""The GPU side of a randomized run, behind one small interface (GpuTwin).

The driver changes the GPUs only through it (faults, foreign memory) and reads the GPUs' truth from
it (what each running engine holds, what foreign processes hold) to check invariants from outside.
PublishedTwin is the stand-in used when the simulated GPU runtime is not available: it publishes
GpuNode statuses itself, with one process per running pod holding what its engine reserves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_harness import Twin as HarnessTwin

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid
from model_based.generate import GpuSlot
from model_based.gpu_facts import EngineUse, GpuTruth, engine_reservation, pod_gpus, running

GROUP, VERSION = "vram.dev", "v1alpha1"
PUBLISH_SECONDS = 1.0


class GpuTwin(Protocol):
    def start(self, namespaces: Iterable[str], seed: int = 0) -> None:
        """Play the GPUs for the pods of these namespaces; every GPU healthy, no spike, agents live."""

    def stop(self) -> None: ...

    def lose_gpu(self, uuid: str) -> None: ...

    def recover_gpu(self, uuid: str) -> None: ...

    def set_foreign(self, uuid: str, mib: float) -> None:
        """A process outside Kubernetes holding `mib` on the GPU (0: none)."""

    def stall_agent(self, node: str) -> None: ...

    def resume_agent(self, node: str) -> None: ...

    def gpus(self) -> list[GpuTruth]: ...

    def engine_use(self) -> list[EngineUse]: ...


def usable_slots(nodes: list[FakeNode], per_node: dict[str, int]) -> list[GpuSlot]:
    """The first `per_node[name]` GPUs of the named nodes: the part of the fleet a run may use."""
    return [
        GpuSlot(node.name, index, fake_gpu_uuid(node.name, index), gpu.memory_mib)
        for node in nodes
        for index, gpu in enumerate(node.gpus)
        if index < per_node.get(node.name, 0)
    ]


class PublishedTwin:
    """GpuNode statuses written by the test: pods' engines hold what they reserve, nothing fails."""

    def __init__(self, api: client.ApiClient, nodes: list[FakeNode], usable: list[GpuSlot]) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.api = api
        self.nodes = nodes
        self.usable = {slot.uuid for slot in usable}
        self.namespaces: list[str] = []
        self.lost: set[str] = set()
        self.foreign: dict[str, float] = {}
        self.stalled: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, namespaces: Iterable[str], seed: int = 0) -> None:
        self.stop()
        self.namespaces = list(namespaces)
        self.lost, self.foreign, self.stalled = set(), {}, set()
        self.stopping.clear()
        self.publish_all()
        self.thread = threading.Thread(target=self._loop, name="published-twin", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.stopping.set()
            self.thread.join()
            self.thread = None
        self.lost, self.foreign, self.stalled = set(), {}, set()
        self.publish_all()  # the plain fleet again for whoever comes next

    def lose_gpu(self, uuid: str) -> None:
        with self.lock:
            self.lost.add(uuid)

    def recover_gpu(self, uuid: str) -> None:
        with self.lock:
            self.lost.discard(uuid)

    def set_foreign(self, uuid: str, mib: float) -> None:
        with self.lock:
            self.foreign[uuid] = mib

    def stall_agent(self, node: str) -> None:
        with self.lock:
            self.stalled.add(node)

    def resume_agent(self, node: str) -> None:
        with self.lock:
            self.stalled.discard(node)

    def gpus(self) -> list[GpuTruth]:
        with self.lock:
            return [
                GpuTruth(
                    node.name,
                    index,
                    uuid,
                    float(gpu.memory_mib),
                    self._foreign_mib(uuid, gpu.memory_mib),
                    uuid not in self.lost,
                    node.name not in self.stalled,
                )
                for node in self.nodes
                for index, gpu in enumerate(node.gpus)
                for uuid in [fake_gpu_uuid(node.name, index)]
            ]

    def engine_use(self) -> list[EngineUse]:
        totals = {t.uuid: t.total_mib for t in self.gpus()}
        uses = []
        for pod in self._pods():
            for uuid in pod_gpus(pod):
                if uuid in totals and uuid not in self.lost:
                    key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                    uses.append(EngineUse(key, uuid, engine_reservation(pod, totals[uuid])))
        return uses

    # --- publishing ---

    def _foreign_mib(self, uuid: str, total_mib: int) -> float:
        return self.foreign.get(uuid, 0.0) if uuid in self.usable else float(total_mib)

    def _pods(self) -> list[dict[str, Any]]:
        pods = []
        for namespace in self.namespaces:
            listed = self.core.list_namespaced_pod(namespace).items
            pods.extend(p for p in self.api.sanitize_for_serialization(listed) if running(p))  # type: ignore[no-untyped-call]
        return pods

    def _loop(self) -> None:
        while not self.stopping.wait(PUBLISH_SECONDS):
            try:
                self.publish_all()
            except Exception as error:  # an API hiccup must not end the agents
                print(f"published twin: {error}")

    def publish_all(self) -> None:
        pods = self._pods() if self.namespaces else []
        with self.lock:
            live = [node for node in self.nodes if node.name not in self.stalled]
        for node in live:
            self._publish(node, pods)

    def _publish(self, node: FakeNode, pods: list[dict[str, Any]]) -> None:
        gpus = []
        for index, gpu in enumerate(node.gpus):
            uuid = fake_gpu_uuid(node.name, index)
            processes: list[dict[str, Any]] = []
            foreign = self._foreign_mib(uuid, gpu.memory_mib)
            if foreign:
                processes.append({"pid": 100 + index, "name": "foreign", "usedMiB": int(foreign)})
            if uuid not in self.lost:
                for number, pod in enumerate(p for p in pods if uuid in pod_gpus(p)):
                    processes.append(
                        {
                            "pid": 1000 + number,
                            "usedMiB": int(engine_reservation(pod, gpu.memory_mib)),
                            "podUID": pod["metadata"]["uid"],
                            "podNamespace": pod["metadata"]["namespace"],
                            "podName": pod["metadata"]["name"],
                            "container": "engine",
                        }
                    )
            used = min(sum(p["usedMiB"] for p in processes), gpu.memory_mib)
            gpus.append(
                {
                    "index": index,
                    "uuid": uuid,
                    "name": gpu.product,
                    "memoryTotalMiB": gpu.memory_mib,
                    "memoryUsedMiB": used,
                    "memoryFreeMiB": gpu.memory_mib - used,
                    "healthy": uuid not in self.lost,
                    "processes": processes,
                }
            )
        heartbeat = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"backend": "simulated", "lastHeartbeat": heartbeat, "gpus": gpus}
        try:
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", node.name, {"status": status})
        except ApiException as error:
            if error.status != 404:
                raise
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": node.name}}
            self.custom.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body)
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", node.name, {"status": status})


class SimulatedTwin:
    """The simulated GPU runtime (`vram-operator simulate`), one subprocess per run seeded with the
    run's seed: engines that start, fail and crash-loop as vLLM, llama.cpp and generic services would.
    Faults go through its faults file; the truth comes from its state file."""

    def __init__(self, kubeconfig: Path, nodes: list[FakeNode], usable: list[GpuSlot], work: Path) -> None:
        self.kubeconfig = kubeconfig
        self.nodes = nodes
        self.usable = {slot.uuid for slot in usable}
        self.work = work
        self.runs = 0
        self.process: HarnessTwin | None = None
        self.faults: dict[str, Any] = {}
        self.stalled: set[str] = set()

    def start(self, namespaces: Iterable[str], seed: int = 0) -> None:
        self.stop()
        self.runs += 1
        work = self.work / f"twin-{self.runs}"
        work.mkdir(parents=True, exist_ok=True)
        self.process = HarnessTwin(self.kubeconfig, work, seed=seed)
        self.faults, self.stalled = {"nodes": {}}, set()
        for node in self.nodes:  # the GPUs the run may not use are held whole by a foreign process
            for index, gpu in enumerate(node.gpus):
                if fake_gpu_uuid(node.name, index) not in self.usable:
                    held = {"pid": 90000 + index, "name": "held-by-test", "usedMiB": gpu.memory_mib}
                    self._gpu(node.name, index)["processes"] = [held]
        self.process.set_faults(self.faults)
        self.process.start()
        self.process.wait_tick()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def lose_gpu(self, uuid: str) -> None:
        self._change(uuid, lost=True)

    def recover_gpu(self, uuid: str) -> None:
        self._change(uuid, lost=False)

    def set_foreign(self, uuid: str, mib: float) -> None:
        self._change(uuid, foreignMiB=mib)

    def stall_agent(self, node: str) -> None:
        self.stalled.add(node)
        self._node(node)["agentStalled"] = True
        self._write()

    def resume_agent(self, node: str) -> None:
        self.stalled.discard(node)
        self._node(node)["agentStalled"] = False
        self._write()

    def gpus(self) -> list[GpuTruth]:
        state = self.process.state() if self.process else {}
        return [
            GpuTruth(
                gpu["node"],
                int(gpu["index"]),
                uuid,
                float(gpu["totalMiB"]),
                float(gpu.get("foreignMiB", 0)),
                bool(gpu.get("healthy", True)),
                gpu["node"] not in self.stalled,
            )
            for uuid, gpu in (state.get("gpus") or {}).items()
        ]

    def engine_use(self) -> list[EngineUse]:
        """What every running engine reserves by its own rule (any namespace: the GPU's truth)."""
        state = self.process.state() if self.process else {}
        return [
            EngineUse(f"{pod['namespace']}/{pod['name']}", uuid, float(mib))
            for pod in (state.get("pods") or {}).values()
            if pod.get("state") == "Running"
            for uuid, mib in (pod.get("reservedMiB") or {}).items()
        ]

    def _slot(self, uuid: str) -> tuple[str, int]:
        return next(
            (node.name, index)
            for node in self.nodes
            for index in range(len(node.gpus))
            if fake_gpu_uuid(node.name, index) == uuid
        )

    def _node(self, name: str) -> dict[str, Any]:
        nodes: dict[str, Any] = self.faults.setdefault("nodes", {})
        found: dict[str, Any] = nodes.setdefault(name, {})
        return found

    def _gpu(self, node: str, index: int) -> dict[str, Any]:
        found: dict[str, Any] = self._node(node).setdefault("gpus", {}).setdefault(index, {})
        return found

    def _change(self, uuid: str, **fields: Any) -> None:
        self._gpu(*self._slot(uuid)).update(fields)
        self._write()

    def _write(self) -> None:
        if self.process is not None:
            self.process.set_faults(self.faults)
