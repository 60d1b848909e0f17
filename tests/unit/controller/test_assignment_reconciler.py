"""The GpuAssignment reconciler over a fake Kube: one owner per server, events on the assignment,
warnings once, a Preview planned again when its inputs change (and written only when its plan does)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf
from controller_builders import generic, gpu_node
from fake_kube import FakeKube

from vram_operator.api.gpu_assignment import GpuAssignment, GpuAssignmentStatus
from vram_operator.api.inference_server import InferenceServer, InferenceServerStatus, PlacedGpu, PlacementStatus
from vram_operator.controller import annotations as notes
from vram_operator.controller.assignments import AssignmentReconciler
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.pods import PodFacts
from vram_operator.controller.runtime import Runtime, now, rfc3339
from vram_operator.controller.settings import ControllerSettings

API_VERSION = "vram.dev/v1alpha1"


def running_on(server: InferenceServer, uuid: str, index: int) -> InferenceServer:
    placement = PlacementStatus(node="ws", gpus=[PlacedGpu(index=index, uuid=uuid)], budget_mib=4096)
    return server.model_copy(update={"status": InferenceServerStatus(placement=placement, phase="Running")})


def body(name: str, created: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    meta = {"name": name, "uid": f"uid-{name}", "generation": generation, "creationTimestamp": created}
    return {"apiVersion": API_VERSION, "kind": "GpuAssignment", "metadata": meta, "spec": spec}


def pin(gpu: int, mode: str = "Apply", server: str = "ns/det") -> dict[str, Any]:
    """A Manual assignment of one server (its selector matches nothing: it manages the pinned one only)."""
    return {
        "strategy": "Manual",
        "mode": mode,
        "serverSelector": {"matchLabels": {"app": "none"}},
        "assignments": [{"server": server, "node": "ws", "gpus": [gpu]}],
    }


class Harness:
    def __init__(self) -> None:
        self.kube = FakeKube()
        self.rt = Runtime(settings=ControllerSettings(margin_mib=256), kube=self.kube, metrics=Metrics())
        self.reconciler = AssignmentReconciler(self.rt)
        self.nodes = [gpu_node("ws", 2, heartbeat=rfc3339(now()))]
        self.servers = {"ns/det": running_on(generic("det"), "GPU-ws-0", 0)}
        self.bodies: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, list[PodFacts]] = {}

    def stored(self, name: str) -> tuple[GpuAssignment, kopf.Body]:
        """The assignment as the index shows it once our status writes have arrived."""
        raw = dict(self.bodies[name])
        if name in self.kube.assignment_statuses:
            raw["status"] = self.kube.assignment_statuses[name]
        return GpuAssignment.model_validate(raw), kopf.Body(cast(kopf.RawBody, raw))

    def indexes(self) -> dict[str, Any]:
        return {
            "inference_servers": {k: [s] for k, s in self.servers.items()},
            "gpu_nodes": {n.metadata.name: [n] for n in self.nodes},
            "server_pods": self.pods,
            "gpu_assignments": {name: [self.stored(name)] for name in self.bodies},
        }

    def create(self, name: str, created: str, spec: dict[str, Any]) -> None:
        self.bodies[name] = body(name, created, spec)
        asyncio.run(self.reconciler.reconcile(self.stored(name)[1], name, self.indexes()))

    def check(self) -> None:
        self.rt.indexes.update(self.indexes())
        asyncio.run(self.reconciler.check(self.indexes()))

    def status(self, name: str) -> GpuAssignmentStatus:
        return GpuAssignmentStatus.model_validate(self.kube.assignment_statuses[name])

    def condition(self, name: str, type_: str) -> tuple[str, str, str] | None:
        found = next((c for c in self.status(name).conditions if c.type == type_), None)
        return (found.status, found.reason, found.message) if found else None

    def events(self, name: str) -> list[tuple[str, str, str]]:
        return [
            (e["type"], e["reason"], e["message"])
            for _, e in self.kube.events
            if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "GpuAssignment"
        ]

    def pinned_by(self, key: str) -> str | None:
        found = notes.assigned_placement({k: v for k, v in self.kube.annotations.get(key, {}).items() if v})
        return found.assignment if found else None

    def arrive(self, key: str, uuid: str, index: int) -> None:
        """The server runs where its pin put it, with the pin annotation on it."""
        annotations = {k: v for k, v in self.kube.annotations.get(key, {}).items() if v is not None}
        server = self.servers[key]
        meta = server.metadata.model_copy(update={"annotations": annotations})
        self.servers[key] = running_on(server.model_copy(update={"metadata": meta}), uuid, index)
        # a rollout counts it as arrived only with a Ready pod rendered for that placement
        self.pods[key] = [PodFacts("uid", key.split("/")[1], "ns", True, 0, False, "engine", "", "ws", uuid, "4096")]


def test_the_second_assignment_leaves_an_owned_server_alone_until_the_owner_goes() -> None:
    h = Harness()
    h.create("first", "2026-01-01T00:00:00Z", pin(1))
    assert h.pinned_by("ns/det") == "first"
    h.arrive("ns/det", "GPU-ws-1", 1)
    h.check()
    assert h.condition("first", "Applied") == ("True", "RolloutDone", "1 healthy, 0 restarting, 0 pending (0 stopped)")

    h.create("second", "2026-01-02T00:00:00Z", pin(0))
    assert h.pinned_by("ns/det") == "first", "the loser does not touch the server"
    assert h.condition("second", "Conflict") == (
        "True",
        "ServerOwnedByOther",
        "ns/det is owned by GpuAssignment first",
    )
    assert [e.server for e in h.status("second").plan] == []
    warnings = [e for e in h.events("second") if e[0] == "Warning"]
    assert warnings == [("Warning", "ServerOwnedByOther", "left alone: ns/det is owned by GpuAssignment first")]
    h.check()
    h.check()
    assert h.pinned_by("ns/det") == "first"
    assert len([e for e in h.events("second") if e[1] == "ServerOwnedByOther"]) == 1, "warned once"
    assert h.condition("first", "Applied") == ("True", "RolloutDone", "1 healthy, 0 restarting, 0 pending (0 stopped)")
    assert h.condition("first", "Conflict") is None

    del h.bodies["first"]  # the owner is deleted: the next check hands the server on
    h.check()
    assert h.pinned_by("ns/det") == "second"
    assert h.condition("second", "Conflict") == (
        "False",
        "NoConflict",
        "no selected server is owned by another GpuAssignment",
    )
    assert [e.server for e in h.status("second").plan] == ["ns/det"]
    assert h.status("second").applied_revision == 2


def test_an_owner_that_stops_selecting_hands_the_server_on() -> None:
    h = Harness()
    h.servers["ns/emb"] = running_on(generic("emb"), "GPU-ws-1", 1)
    h.create("first", "2026-01-01T00:00:00Z", pin(1))
    h.arrive("ns/det", "GPU-ws-1", 1)
    h.create("second", "2026-01-02T00:00:00Z", pin(0))
    assert h.condition("second", "Conflict") == ("True", "ServerOwnedByOther", "ns/det is owned by GpuAssignment first")
    moved = pin(0, server="ns/emb")  # its only pin is another server now
    h.bodies["first"] = body("first", "2026-01-01T00:00:00Z", moved, generation=2)
    asyncio.run(h.reconciler.reconcile(h.stored("first")[1], "first", h.indexes()))
    h.check()
    assert h.condition("second", "Conflict") == (
        "False",
        "NoConflict",
        "no selected server is owned by another GpuAssignment",
    )
    assert h.pinned_by("ns/det") == "second"


def test_a_manual_overcommit_warns_once_on_the_assignment_and_lists_the_warning_once() -> None:
    h = Harness()
    h.servers["ns/det"] = running_on(generic("det", "30Gi"), "GPU-ws-0", 0)
    h.create("big", "2026-01-01T00:00:00Z", pin(1, mode="Preview"))
    over = [e for e in h.events("big") if e[1] == "OverCommitted"]
    assert len(over) == 1 and over[0][0] == "Warning"
    assert "ws GPU 1 (NVIDIA RTX A5500, GPU-ws-1) over-committed by" in over[0][2]
    warnings = h.status("big").warnings
    assert len([w for w in warnings if "over-commits" in w]) == 1
    assert not any(w.startswith("ns/det: ns/det") for w in warnings)
    h.nodes = [gpu_node("ws", 2, heartbeat=rfc3339(now()), foreign=100)]  # planned again, still over-committed
    h.check()
    assert len([e for e in h.events("big") if e[1] == "OverCommitted"]) == 1


def test_a_preview_is_planned_again_when_its_inputs_change_and_written_only_when_its_plan_does() -> None:
    h = Harness()
    h.create("look", "2026-01-01T00:00:00Z", {"strategy": "VRAMBased", "mode": "Preview"})
    assert [e.server for e in h.status("look").plan] == ["ns/det"]
    writes = h.kube.assignment_writes
    h.check()
    h.check()
    assert h.kube.assignment_writes == writes, "nothing changed: no write"
    h.servers["ns/emb"] = generic("emb")
    h.check()
    assert [e.server for e in h.status("look").plan] == ["ns/det", "ns/emb"]
    writes = h.kube.assignment_writes
    h.nodes = [gpu_node("ws", 2, heartbeat=rfc3339(now()))]  # a heartbeat only
    h.check()
    assert h.kube.assignment_writes == writes
    h.nodes = [gpu_node("ws", 2, heartbeat=rfc3339(now()), total=2048)]  # too small now
    h.check()
    assert [e.node for e in h.status("look").plan] == [None, None]
    del h.servers["ns/emb"]
    h.check()
    assert [e.server for e in h.status("look").plan] == ["ns/det"]


def test_a_restarted_operator_hands_over_a_server_whose_owner_went_while_it_was_down() -> None:
    h = Harness()
    h.create("first", "2026-01-01T00:00:00Z", pin(1))
    h.arrive("ns/det", "GPU-ws-1", 1)
    h.create("second", "2026-01-02T00:00:00Z", pin(0))
    assert h.condition("second", "Conflict") == ("True", "ServerOwnedByOther", "ns/det is owned by GpuAssignment first")
    del h.bodies["first"]
    h.reconciler = AssignmentReconciler(h.rt)  # a new process: only what is in the API is known
    asyncio.run(h.reconciler.reconcile(h.stored("second")[1], "second", h.indexes()))  # kopf's resume
    assert h.pinned_by("ns/det") == "second"
    assert h.status("second").applied_revision == 2
