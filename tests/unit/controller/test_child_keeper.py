"""ChildKeeper over the fake Kube port: children restored to what the last reconcile applied."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from controller_builders import generic, gpu_node
from fake_kube import FakeKube

from vram_operator.api.inference_server import InferenceServer
from vram_operator.controller import annotations as notes
from vram_operator.controller.child_drift import comparable
from vram_operator.controller.child_keeper import DRIFT_REVERTED, WATCHED, ChildKeeper
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.runtime import Runtime, now, rfc3339
from vram_operator.controller.server_reconciler import ServerReconciler
from vram_operator.controller.settings import ControllerSettings

Event = tuple[str, str, str, str]


class Cluster:
    """One node, the reconciler and the keeper over a FakeKube whose `applied` is the live store."""

    def __init__(self) -> None:
        self.kube = FakeKube()
        self.rt = Runtime(settings=ControllerSettings(margin_mib=256), kube=self.kube, metrics=Metrics())
        self.events: list[Event] = []

        def post(server: InferenceServer, type_: str, reason: str, message: str) -> None:
            self.events.append((server.key, type_, reason, message))

        self.reconciler = ServerReconciler(self.rt, post)
        self.keeper = ChildKeeper(self.rt, post)
        self.nodes = [gpu_node("ws", 2, heartbeat=rfc3339(now()))]
        self.servers: dict[str, InferenceServer] = {}
        self.versions = 0
        self.watch_lag: dict[tuple[str, str], dict[str, Any] | None] = {}  # what the watch still shows

    def reconcile(self, server: InferenceServer) -> None:
        self.servers[server.key] = server
        index = {server.key: [server]}
        asyncio.run(self.reconciler.reconcile(server, index, self.nodes, replace=False))
        self.events.clear()

    def indexes(self) -> dict[str, Any]:
        watched: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in WATCHED.values()}
        live = {**self.kube.applied, **self.watch_lag}
        for (kind, name), obj in live.items():
            if kind in WATCHED and obj is not None:
                watched[WATCHED[kind]][f"ns/{name}"] = [comparable(obj)]
        return {**watched, "inference_servers": {k: [s] for k, s in self.servers.items()}}

    def check(self) -> None:
        asyncio.run(self.keeper.check(self.indexes()))

    def live(self, kind: str, name: str) -> dict[str, Any]:
        return self.kube.applied[(kind, name)]

    def edit(self, kind: str, name: str) -> dict[str, Any]:
        """A copy of the live object, stored as the live one with a new resourceVersion: what `kubectl edit` leaves."""
        edited = copy.deepcopy(self.live(kind, name))
        self.versions += 1
        edited["metadata"]["resourceVersion"] = str(self.versions)
        self.kube.applied[(kind, name)] = edited
        return edited


def engine_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_children_as_applied_are_left_alone_without_a_read() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    c.check()
    assert (c.events, c.kube.reads) == ([], 0)


def test_a_scaled_deployment_with_changed_env_is_reverted_with_one_event() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    rendered = c.live("Deployment", "a")
    edited = c.edit("Deployment", "a")
    edited["spec"]["replicas"] = 3
    for item in edited["spec"]["template"]["spec"]["containers"][0]["env"]:
        if item["name"] == "NVIDIA_VISIBLE_DEVICES":
            item["value"] = "all"
    c.check()
    assert c.live("Deployment", "a") == rendered
    assert engine_env(c.live("Deployment", "a"))["NVIDIA_VISIBLE_DEVICES"] == "GPU-ws-0"
    assert c.events == [
        ("ns/a", "Warning", DRIFT_REVERTED, "Deployment a: reverted replicas 3→1, env NVIDIA_VISIBLE_DEVICES")
    ]
    c.check()  # restored: nothing more to say
    assert len(c.events) == 1
    assert c.rt.metrics.registry.get_sample_value("vram_operator_drift_reverted_total", {"kind": "Deployment"}) == 1


def test_a_deleted_deployment_and_service_are_recreated() -> None:
    c = Cluster()
    c.reconcile(generic("a", replicas=2))
    replica = c.live("Deployment", "a-replica-1")
    del c.kube.applied[("Deployment", "a-replica-1")]
    del c.kube.applied[("Service", "a")]
    c.check()
    assert c.live("Deployment", "a-replica-1") == replica
    assert ("Service", "a") in c.kube.applied
    assert sorted(message for *_, message in c.events) == [
        "Deployment a-replica-1: recreated (it was deleted)",
        "Service a: recreated (it was deleted)",
    ]


def test_a_server_stopped_for_a_rollout_stays_at_zero_replicas() -> None:
    c = Cluster()
    c.reconcile(generic("a", annotations={notes.STOPPED: "true"}))
    assert c.live("Deployment", "a")["spec"]["replicas"] == 0
    c.edit("Deployment", "a")["spec"]["replicas"] = 1
    c.check()
    assert c.live("Deployment", "a")["spec"]["replicas"] == 0
    assert [m for *_, m in c.events] == ["Deployment a: reverted replicas 1→0"]


def test_a_watch_behind_the_last_apply_reads_again_and_writes_nothing() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    old = copy.deepcopy(c.live("Deployment", "a"))
    old["spec"]["template"]["metadata"]["annotations"]["vram.dev/placement-hash"] = "before"
    c.watch_lag[("Deployment", "a")] = old
    c.check()
    assert c.kube.reads == 1
    assert c.events == []


def test_a_deleted_server_or_one_never_applied_is_not_restored() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    del c.kube.applied[("Deployment", "a")]
    c.rt.forget("ns/a")  # the server was deleted: garbage collection takes its children
    c.check()
    assert ("Deployment", "a") not in c.kube.applied and c.events == []


def test_a_child_the_api_server_refuses_is_logged_not_retried_as_an_event() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    del c.kube.applied[("Service", "a")]
    c.kube.refuse_kinds["Service"] = "refused"
    c.check()
    assert c.events == []


def test_a_child_found_in_sync_is_compared_again_only_when_its_version_changes() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    c.check()
    assert set(c.keeper.in_sync) == {("Deployment", "ns/a"), ("Service", "ns/a")}
    c.edit("Service", "a")["spec"]["ports"][0]["port"] = 1
    c.check()
    assert [m for *_, m in c.events] == ["Service a: reverted ports[http].port 1→8080"]
    c.rt.forget("ns/a")
    c.check()
    assert c.keeper.in_sync == {}  # forgotten with the server


def test_an_env_variable_added_by_hand_is_deleted_by_a_strategic_merge_patch() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    c.edit("Deployment", "a")["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LD_PRELOAD", "value": "/x.so"}
    )
    c.check()
    deleted = {"name": "engine", "env": [{"name": "LD_PRELOAD", "$patch": "delete"}]}
    assert c.kube.child_patches == [(("Deployment", "a"), {"spec": {"template": {"spec": {"containers": [deleted]}}}})]
    assert [m for *_, m in c.events] == ["Deployment a: reverted env LD_PRELOAD (added)"]


def test_a_drift_a_restore_cannot_remove_is_not_announced_nor_applied_every_check() -> None:
    c = Cluster()
    c.reconcile(generic("a"))
    applied = c.kube.apply

    def apply_as_a_webhook_would(obj: dict[str, Any]) -> None:  # the stored object keeps a value of its own
        applied(obj)
        if obj["kind"] == "Service":
            c.edit("Service", "a")["spec"]["type"] = "NodePort"

    c.kube.apply = apply_as_a_webhook_would  # type: ignore[method-assign]
    c.edit("Service", "a")["spec"]["type"] = "NodePort"
    c.check()
    assert c.events == []
    reads = c.kube.reads
    c.check()
    c.check()
    assert c.kube.reads == reads  # left alone: no read, no apply, no Event
    c.edit("Service", "a")["metadata"]["labels"]["vram.dev/server"] = "b"  # another drift is handled
    c.check()
    assert [m for *_, m in c.events] == ["Service a: reverted metadata.labels.vram.dev/server b→a"]  # not the type
