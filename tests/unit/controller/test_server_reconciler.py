"""ServerReconciler over a fake Kube port: the reconcile and runtime-check branches without a cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from controller_builders import A5500_MIB, generic, gpu, gpu_node, node, vllm_server
from fake_kube import FakeKube

from vram_operator.api.gpu_node import GpuNode, GpuProcess
from vram_operator.api.inference_server import (
    InferenceServer,
    InferenceServerStatus,
    ManualPlacement,
)
from vram_operator.controller.book import ReservationBook
from vram_operator.controller.measured_runs import MEASURED_RUNS_CONFIG_MAP
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.pods import PodFacts
from vram_operator.controller.runtime import CHILD_APPLY_THREADS, Runtime, now, rfc3339
from vram_operator.controller.server_reconciler import ServerReconciler
from vram_operator.controller.settings import ControllerSettings

QWEN_CONFIG = Path(__file__).parents[2] / "fixtures" / "model-configs" / "Qwen__Qwen2.5-0.5B-Instruct.json"
Event = tuple[str, str, str, str]  # (server key, type, reason, message)


def live_node(name: str, count: int = 1, **kw: Any) -> GpuNode:
    """A GpuNode that reported just now: the reconciler leaves out nodes whose heartbeat is stale."""
    return gpu_node(name, count, heartbeat=rfc3339(now()), **kw)


class Harness:
    def __init__(self, *nodes: GpuNode, grace: float = 60.0) -> None:
        self.kube = FakeKube()
        settings = ControllerSettings(margin_mib=256, gpu_node_grace=timedelta(seconds=grace))
        self.rt = Runtime(settings=settings, kube=self.kube, metrics=Metrics())
        self.events: list[Event] = []
        self.reconciler = ServerReconciler(self.rt, lambda s, t, r, m: self.events.append((s.key, t, r, m)))
        self.servers: dict[str, InferenceServer] = {}
        self.nodes = list(nodes)

    def add(self, server: InferenceServer) -> InferenceServer:
        self.servers[server.key] = server
        return server

    def stored(self, key: str) -> InferenceServer:
        """The server as the index would show it after our status writes."""
        server = self.servers[key]
        written = self.rt.written.get(key)
        return server.model_copy(update={"status": written[1]}) if written else server

    def indexes(self) -> dict[str, Any]:
        return {
            "gpu_nodes": {n.metadata.name: [n] for n in self.nodes},
            "inference_servers": {k: [self.stored(k)] for k in self.servers},
            "server_pods": {},
        }

    def reconcile(self, key: str) -> Any:
        index = self.indexes()
        return asyncio.run(
            self.reconciler.reconcile(self.stored(key), index["inference_servers"], self.nodes, replace=False)
        )

    def check(self) -> None:
        asyncio.run(self.reconciler.check_servers(self.indexes()))

    def status(self, key: str) -> InferenceServerStatus:
        return self.rt.written[key][1]

    def condition(self, key: str, type_: str) -> tuple[str, str, str]:
        found = next(c for c in self.status(key).conditions if c.type == type_)
        return found.status, found.reason, found.message

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.events]


def test_a_refused_child_is_reported_once_and_cleared_when_accepted() -> None:
    h = Harness(live_node("ws"))
    h.kube.refuse_kinds["Service"] = 'Service "a.b" is invalid: metadata.name: must be a DNS-1035 label'
    h.add(generic("a"))
    outcome = h.reconcile("ns/a")  # no exception: nothing for kopf to retry every 60 s
    assert outcome.placement is not None
    assert ("Deployment", "a") in h.kube.applied
    status, reason, message = h.condition("ns/a", "Degraded")
    assert (status, reason, h.status("ns/a").phase) == ("True", "ChildRejected", "Degraded")
    assert "DNS-1035" in message and "Service a refused (422)" in message
    assert h.reasons().count("ChildRejected") == 1
    h.reconcile("ns/a")  # still refused: no second Event
    assert h.reasons().count("ChildRejected") == 1
    del h.kube.refuse_kinds["Service"]
    h.reconcile("ns/a")
    assert h.condition("ns/a", "Degraded")[:2] == ("False", "Healthy")
    assert ("Service", "a") in h.kube.applied


def test_a_server_waits_for_room_and_is_placed_once_a_server_is_deleted() -> None:
    h = Harness(live_node("ws", total=8192))
    h.add(generic("filler", "7Gi"))
    assert h.reconcile("ns/filler").placement is not None
    h.add(generic("late", "4Gi"))
    late = h.reconcile("ns/late")
    assert late.placement is None and not late.spec_error
    assert h.status("ns/late").phase == "Pending"
    assert h.condition("ns/late", "Placed")[:2] == ("False", "InsufficientMemory")
    h.rt.record_unplaced("ns/late", 0.0, placed=False)
    del h.servers["ns/filler"]
    h.rt.forget("ns/filler")  # what the delete handler does: retry unplaced servers now
    h.check()
    assert h.status("ns/late").phase == "Placed"


def test_a_missing_gpu_node_waits_out_its_grace_then_the_server_moves() -> None:
    ws, other = live_node("ws"), live_node("other")
    h = Harness(ws, other)
    h.add(generic("a"))
    first = h.reconcile("ns/a").placement
    assert first is not None
    writes = h.kube.status_writes
    h.nodes = [n for n in h.nodes if n.metadata.name != first.node]  # the agent deletes its GpuNode
    h.check()
    assert "GpuLost" not in h.reasons() and h.kube.status_writes == writes  # unknown, not lost
    h.nodes = [ws, other]  # re-created a second later
    h.check()
    assert h.status("ns/a").placement == first and first.node not in h.rt.missing_since
    h.nodes = [n for n in h.nodes if n.metadata.name != first.node]
    h.check()
    h.rt.missing_since[first.node] -= timedelta(seconds=60)  # the grace period has passed
    h.check()
    assert "GpuLost" in h.reasons()
    moved = h.status("ns/a").placement
    assert moved is not None and moved.node != first.node


def test_a_gpu_that_reports_no_memory_moves_its_server_and_nothing_fails() -> None:
    h = Harness(live_node("ws", 2))
    h.add(generic("a"))
    first = h.reconcile("ns/a").placement
    assert first is not None
    lost = first.gpus[0]
    reported = [gpu(f"GPU-ws-{i}", 0 if i == lost.index else A5500_MIB) for i in range(2)]
    h.nodes = [node("ws", *reported, heartbeat=rfc3339(now()))]
    h.check()
    gpu_lost = [m for _, _, r, m in h.events if r == "GpuLost"]
    assert gpu_lost and "0MiB" in gpu_lost[0]
    moved = h.status("ns/a").placement
    assert moved is not None and moved.gpus[0].uuid != lost.uuid
    assert h.status("ns/a").phase != "Failed"


def test_foreign_growth_warns_before_a_restart_fails() -> None:
    h = Harness(live_node("ws", total=8192))
    h.add(generic("a", "4Gi"))
    assert h.reconcile("ns/a").placement is not None
    h.check()
    assert h.condition("ns/a", "MemoryFits")[0] == "Unknown"
    h.nodes = [live_node("ws", total=8192, foreign=4096)]  # exactly the room left: still fits
    h.check()
    assert h.condition("ns/a", "MemoryFits")[0] == "Unknown"
    h.nodes = [live_node("ws", total=8192, foreign=4097)]
    h.check()
    status, reason, message = h.condition("ns/a", "MemoryFits")
    assert (status, reason) == ("False", "ForeignMemoryGrew")
    assert "4095MiB free" in message and "4096MiB needed" in message
    assert h.reasons().count("ForeignMemoryGrew") == 1
    h.check()
    assert h.reasons().count("ForeignMemoryGrew") == 1  # one Event per transition


def test_a_config_map_that_appears_places_the_servers_naming_it() -> None:
    h = Harness(live_node("ws"))
    h.add(vllm_server())
    outcome = h.reconcile("ns/llm")
    assert (outcome.unplaced_reason, outcome.spec_error, h.status("ns/llm").phase) == (
        "ConfigMapNotFound",
        False,
        "Pending",
    )
    h.kube.config_maps[("ns", "cfg")] = {"config.json": QWEN_CONFIG.read_text()}
    h.rt.indexes.update(h.indexes())
    asyncio.run(h.reconciler.reconcile_referencing(("ns", "cfg"), h.indexes()["inference_servers"]))
    assert h.status("ns/llm").placement is not None


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_every_refused_child_kind_is_named(kind: str) -> None:
    h = Harness(live_node("ws"))
    h.kube.refuse_kinds[kind] = "invalid"
    h.add(generic("a"))
    h.reconcile("ns/a")
    assert f"{kind} a refused" in h.condition("ns/a", "Degraded")[2]


def test_a_partly_placed_server_waits_out_a_missing_gpu_node_before_retrying() -> None:
    # 2 of 3 replicas placed (on a and b); b's GpuNode disappears (its agent re-creates it): within the
    # grace period the check neither retries the missing replica nor drops replica 1's Deployment.
    a, b = live_node("a", total=12000), live_node("b", total=12000)
    h = Harness(a, b, grace=600)
    h.add(generic("web", "10Gi", replicas=3))
    outcome = h.reconcile("ns/web")
    assert sorted(r.placement.node for r in outcome.replicas) == ["a", "b"] and outcome.replicas_missing == 1
    running = {name for kind, name in h.kube.applied if kind == "Deployment"}
    assert running == {"web", "web-replica-1"}
    h.nodes = [a]
    h.check()
    assert {name for kind, name in h.kube.applied if kind == "Deployment"} == running
    assert sorted(p.node for p in h.status("ns/web").placed_replicas()) == ["a", "b"]


def test_a_host_path_volume_is_refused_with_its_reason_and_nothing_applied() -> None:
    h = Harness(live_node("ws"))
    server = generic("a")
    volumes = [{"name": "root", "hostPath": {"path": "/"}}]
    h.add(server.model_copy(update={"spec": server.spec.model_copy(update={"volumes": volumes})}))
    outcome = h.reconcile("ns/a")
    assert outcome.placement is None
    status, reason, message = h.condition("ns/a", "Estimated")
    assert (status, reason, h.status("ns/a").phase) == ("False", "HostAccessRefused", "Failed")
    assert message.startswith("spec.volumes[0].hostPath: host access refused (hostPath volume 'root' (/))")
    assert h.kube.applied == {}
    assert h.reasons() == ["HostAccessRefused"]
    assert h.rt.book.pending.get("ns/a") is None  # no GPU stays reserved for it


def test_a_tensor_parallel_servers_gauges_compare_per_gpu() -> None:
    """TP=2 with 4096 MiB reserved on each GPU, using 3000 + 3500 MiB: the gauges hold 4096 and 3500 MiB
    (per GPU), not the 6500 MiB sum that a panel or alert would compare with one GPU's reservation."""
    h = Harness(live_node("ws", 2))
    server = generic("tp", "4Gi")
    server.spec.tensor_parallel_size = 2
    h.add(server)
    assert h.reconcile("ns/tp").placement is not None
    pod = PodFacts(
        uid="pod-tp",
        name="tp-0",
        namespace="ns",
        ready=True,
        restarts=0,
        crashing=False,
        container="c",
        termination_message="",
    )
    used = {"GPU-ws-0": 3000.0, "GPU-ws-1": 3500.0}
    h.nodes = [
        node(
            "ws",
            *(
                g.model_copy(update={"processes": [GpuProcess(pid=7, used_mib=used[g.uuid], pod_uid="pod-tp")]})
                for g in live_node("ws", 2).status.gpus  # type: ignore[union-attr]
            ),
            heartbeat=rfc3339(now()),
        )
    ]
    indexes = h.indexes() | {"server_pods": {"ns/tp": [pod]}}
    asyncio.run(h.reconciler.check_servers(indexes))
    mib = 1024 * 1024
    registry = h.rt.metrics.registry
    labels = {"namespace": "ns", "server": "tp"}
    assert registry.get_sample_value("vram_operator_server_reserved_bytes", labels) == 4096 * mib
    assert registry.get_sample_value("vram_operator_server_measured_bytes", labels) == 3500 * mib


def test_a_server_left_without_a_placement_keeps_no_deployment() -> None:
    # Before: a spec edit that could not be placed (a pin to a GPU too small) gave up the reservation in
    # status but left the old Deployments running on GPUs the ledger counted as free.
    # Found by the randomized driver (tests/model_based, seed 3).
    h = Harness(
        node("ws", gpu("GPU-0"), gpu("GPU-1"), gpu("GPU-2", foreign=A5500_MIB - 1024), heartbeat=rfc3339(now()))
    )
    det = h.add(generic("det", "6Gi", replicas=2))
    assert h.reconcile("ns/det").placement is not None
    assert sorted(n for k, n in h.kube.applied if k == "Deployment") == ["det", "det-replica-1"]
    pinned = det.spec.model_copy(update={"placement": ManualPlacement(node="ws", gpus=[2])})
    h.servers["ns/det"] = det.model_copy(update={"spec": pinned})
    assert h.reconcile("ns/det").placement is None
    assert h.status("ns/det").phase == "Pending"
    assert [n for k, n in h.kube.applied if k == "Deployment"] == []
    # Placed again (the pin lifted): its Deployments come back.
    h.servers["ns/det"] = det
    assert h.reconcile("ns/det").placement is not None
    assert sorted(n for k, n in h.kube.applied if k == "Deployment") == ["det", "det-replica-1"]


def test_a_pod_crashing_for_a_reason_no_correction_fixes_is_degraded() -> None:
    # Before: a pod in CrashLoopBackOff for anything but a vLLM memory error (here its GPU fell off the
    # bus while the node's agent was silent) left the server Degraded=False "Healthy".
    # Found by the randomized driver (tests/model_based, seed 16).
    h = Harness(live_node("ws"))
    h.add(generic("a"))
    assert h.reconcile("ns/a").placement is not None
    message = "Traceback (most recent call last):\nRuntimeError: CUDA error: no CUDA-capable device is detected"
    pod = PodFacts("uid-p", "a-7d9f", "ns", False, 26, True, "engine", message)
    plain = h.indexes
    h.indexes = lambda: {**plain(), "server_pods": {"ns/a": [pod]}}  # type: ignore[method-assign]
    h.check()
    status, reason, text = h.condition("ns/a", "Degraded")
    assert (status, reason) == ("True", "EngineCrashing")
    assert text == "pod a-7d9f crashing (26 restarts): RuntimeError: CUDA error: no CUDA-capable device is detected"
    assert h.status("ns/a").phase == "Degraded"
    h.indexes = lambda: {**plain(), "server_pods": {"ns/a": [dataclasses.replace(pod, ready=True)]}}  # type: ignore[method-assign]
    h.check()
    assert h.condition("ns/a", "Degraded")[:2] == ("False", "Healthy")


def test_a_new_server_lists_no_deployments_and_a_placed_one_looks_for_stale_ones() -> None:
    # A server without a status has no children yet (its status is written before any child): no
    # list call to find stale ones. Once placed, a reconcile still deletes replicas scaled away.
    h = Harness(live_node("ws", 2))
    h.add(generic("a", "4Gi", replicas=2))
    assert h.reconcile("ns/a").placement is not None
    assert h.kube.deployment_lists == 0
    assert ("Deployment", "a-replica-1") in h.kube.applied
    h.servers["ns/a"] = generic("a", "4Gi", replicas=1)
    h.reconcile("ns/a")
    assert h.kube.deployment_lists == 1
    assert ("Deployment", "a-replica-1") not in h.kube.applied


def test_servers_decided_together_read_the_measured_runs_once_per_batch() -> None:
    h = Harness(live_node("ws", 2, total=81559))
    keys = [h.add(generic(f"s{i}", "2Gi")).key for i in range(12)]

    async def together() -> list[Any]:
        index = h.indexes()
        return await asyncio.gather(
            *(h.reconciler.reconcile(h.stored(k), index["inference_servers"], h.nodes, replace=False) for k in keys)
        )

    outcomes = asyncio.run(together())
    assert all(outcome.placement is not None for outcome in outcomes)
    measured_reads = [r for r in h.kube.config_map_reads if r[1] == MEASURED_RUNS_CONFIG_MAP]
    assert 1 <= len(measured_reads) == h.rt.batcher.runs < len(keys)


def test_one_check_pass_reads_the_standing_reservations_once_whatever_the_fleet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(live_node("ws", 2, total=81559))
    for i in range(10):
        h.add(generic(f"s{i}", "2Gi"))
        h.reconcile(f"ns/s{i}")
    reads: list[int] = []
    standing = ReservationBook.standing

    def counted(book: ReservationBook, *args: Any, **kwargs: Any) -> list[InferenceServer]:
        reads.append(1)
        return standing(book, *args, **kwargs)

    monkeypatch.setattr(ReservationBook, "standing", counted)
    h.check()
    assert h.kube.status_writes >= 10  # every placed server was observed
    assert len(reads) <= 2  # the pass's view and the GPU gauges, not one per server


def test_a_decided_status_is_written_while_every_api_thread_applies_children() -> None:
    # Children of earlier decisions can hold every default API thread (slow server-side applies under
    # load); the status of the next decision, its state of record, must not wait behind them.
    h = Harness(live_node("ws"))
    server = h.add(generic("a"))
    release = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        busy = loop.run_in_executor(None, release.wait)  # the only default thread, applying a child
        try:
            await asyncio.wait_for(h.reconciler.write_status(server, InferenceServerStatus(phase="Pending")), 5)
        finally:
            release.set()
            await busy

    asyncio.run(main())
    assert h.kube.statuses["ns/a"]["phase"] == "Pending"


def test_a_server_check_reads_only_the_gpu_nodes_its_replicas_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # Scanning every GpuNode for every server costs servers x nodes per pass; a server's memory is
    # measured from the nodes that report its GPUs, and it is found all the same.
    from vram_operator.controller import server_reconciler

    h = Harness(*(live_node(f"n{i}", 1) for i in range(8)))
    for i in range(4):
        h.add(generic(f"s{i}", "20Gi"))
        h.reconcile(f"ns/s{i}")
    read: list[int] = []
    measure = server_reconciler.measure_server

    def counted(pod_uids: Any, uuids: Any, nodes: Any) -> Any:
        statuses = list(nodes)
        read.append(len(statuses))
        return measure(pod_uids, uuids, statuses)

    monkeypatch.setattr(server_reconciler, "measure_server", counted)
    h.check()
    assert read == [1, 1, 1, 1]


def test_a_server_check_judges_its_gpus_health_on_its_own_node_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Looking a placement's node up in the list of every GpuNode, for every server, costs servers x
    # nodes per pass (seconds at 5,000 servers): the pass finds it by name.
    from vram_operator.controller import server_reconciler

    h = Harness(*(live_node(f"n{i}", 1) for i in range(8)))
    for i in range(4):
        h.add(generic(f"s{i}", "20Gi"))
        h.reconcile(f"ns/s{i}")
    given: list[list[str]] = []
    health = server_reconciler.placement_health

    def counted(placement: Any, nodes: Any, **kwargs: Any) -> Any:
        given.append([node.metadata.name for node in nodes])
        return health(placement, nodes, **kwargs)

    monkeypatch.setattr(server_reconciler, "placement_health", counted)
    h.check()
    placed_on = sorted(h.status(f"ns/s{i}").placement.node for i in range(4))  # type: ignore[union-attr]
    assert sorted(name for names in given for name in names) == placed_on


def reconcile_at_once(h: Harness, keys: list[str]) -> list[Any]:
    """Every server reconciled at once, as a flood of new servers reaches the operator."""

    async def flood() -> list[Any]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))  # as the operator
        index = h.indexes()
        return await asyncio.gather(
            *(h.reconciler.reconcile(h.stored(k), index["inference_servers"], h.nodes, replace=False) for k in keys)
        )

    return asyncio.run(flood())


def test_a_flood_of_decisions_applies_its_children_after_its_statuses_a_few_at_a_time() -> None:
    # Children interleaved with a flood's decisions slow the decisions (each apply brings the API
    # server the controllers' writes too): none is applied while a decision is pending, and then
    # a few threads' worth at once.
    h = Harness(live_node("ws", 2, total=81559))
    keys = [h.add(generic(f"s{i}", "1Gi")).key for i in range(3 * CHILD_APPLY_THREADS)]
    in_flight, most = 0, 0
    statuses_before_apply: list[int] = []
    counting = threading.Lock()
    apply = h.kube.apply

    def slow_apply(obj: dict[str, Any]) -> None:
        nonlocal in_flight, most
        with counting:
            statuses_before_apply.append(h.kube.status_writes)
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.02)
        with counting:
            in_flight -= 1
        apply(obj)

    h.kube.apply = slow_apply  # type: ignore[method-assign]
    patch = h.kube.patch_server_status

    def slow_patch(namespace: str, name: str, body: dict[str, Any]) -> None:
        time.sleep(0.01 * int(name[1:]) / len(keys))  # the API server answers some later than others
        patch(namespace, name, body)

    h.kube.patch_server_status = slow_patch  # type: ignore[method-assign]

    outcomes = reconcile_at_once(h, keys)
    assert all(outcome.placement is not None for outcome in outcomes)
    assert len([kind for kind, _ in h.kube.applied if kind == "Deployment"]) == len(keys)
    assert set(statuses_before_apply) == {len(keys)}  # every status written before the first child
    assert 1 < most <= CHILD_APPLY_THREADS


def test_a_flood_of_decisions_writes_all_its_statuses_at_once() -> None:
    # A status write waits on a busy API server: a flood's decided statuses must not queue for a few
    # threads (with 8, that queue was most of a decision's latency in a flood of 1,000 servers). Each
    # write here waits until every decision's write is in flight: too few threads and none returns.
    h = Harness(live_node("ws", 2, total=81559))
    keys = [h.add(generic(f"s{i}", "1Gi")).key for i in range(32)]
    all_in_flight = threading.Barrier(len(keys), timeout=10)
    patch = h.kube.patch_server_status

    def waiting_patch(namespace: str, name: str, body: dict[str, Any]) -> None:
        all_in_flight.wait()
        patch(namespace, name, body)

    h.kube.patch_server_status = waiting_patch  # type: ignore[method-assign]

    outcomes = reconcile_at_once(h, keys)
    assert all(outcome.placement is not None for outcome in outcomes)
    assert h.kube.status_writes == len(keys)


@pytest.mark.parametrize("replicas", [0, 1, 2])
def test_a_placement_and_the_first_check_before_anything_runs_write_one_status(replicas: int) -> None:
    h = Harness(live_node("ws", 2, total=81559))
    server = h.add(generic("a", "1Gi"))
    h.servers[server.key] = server.model_copy(update={"spec": server.spec.model_copy(update={"replicas": replicas})})
    h.reconcile("ns/a")
    decided = h.status("ns/a")
    h.check()  # no pod yet, no agent data: what the decision's status already says
    assert h.kube.status_writes == 1
    assert h.condition("ns/a", "Ready") == ("False", "PodsNotReady", f"0/{replicas} pods ready")
    assert h.condition("ns/a", "MemoryFits")[:2] == ("Unknown", "NoAgentData")
    assert h.condition("ns/a", "Degraded")[:2] == ("False", "Healthy")
    assert decided.phase == h.status("ns/a").phase == "Placed"
