"""Environmental conditions on the real control plane (issue 9: 1, 2, 9, 10, 11, 12): a status with a
reason that is looked at again when its inputs change, never a permanent failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    GROUP,
    MARGIN_MIB,
    SMALL_MODEL,
    VERSION,
    Operator,
    condition,
    create,
    eventually,
    generic,
    get,
    gpu_node_status,
    phase_is,
    publish,
    reports_restored,
    vllm_server,
)

from localcluster import FakeNode
from localcluster.fleet import fake_gpu_uuid

pytestmark = pytest.mark.integration

QWEN_CONFIG = (
    Path(__file__).parents[1] / "fixtures" / "model-configs" / "Qwen__Qwen2.5-0.5B-Instruct.json"
).read_text()


def qwen(name: str, **model: Any) -> dict[str, Any]:
    return vllm_server(name, image="vllm/vllm-openai", model={"name": SMALL_MODEL, **model}, maxModelLen=4096)


def events_of(core_v1: client.CoreV1Api, namespace: str, name: str) -> list[Any]:
    return list(core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items)


def never_failed(custom: client.CustomObjectsApi, namespace: str, name: str, seconds: float) -> dict[str, Any]:
    """Watch a server for a while: it never reports Failed. Returns its last state."""
    deadline = time.monotonic() + seconds
    obj = get(custom, namespace, name)
    while time.monotonic() < deadline:
        obj = get(custom, namespace, name)
        assert (obj.get("status") or {}).get("phase") != "Failed", obj["status"]
        time.sleep(0.5)
    return obj


@pytest.fixture
def restore_fleet(custom_objects: client.CustomObjectsApi, gpu_fleet: list[FakeNode]) -> Iterator[list[FakeNode]]:
    """Whatever a test reports for the GpuNodes, every node reports its plain status afterwards."""
    with reports_restored(custom_objects, gpu_fleet):
        yield gpu_fleet


def test_full_fleet_is_pending_and_places_itself_when_room_appears(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    restore_fleet: list[FakeNode],
) -> None:
    """Defect 1: a vLLM server with auto utilization on a fleet with no room left."""
    workstation = next(n for n in restore_fleet if n.name == "workstation")
    for node in restore_fleet:  # every GPU but the workstation's first is full of foreign use
        processes = {
            i: [{"pid": 100 + i, "usedMiB": gpu.memory_mib - 100, "name": "filler"}]
            for i, gpu in enumerate(node.gpus)
            if (node.name, i) != ("workstation", 0)
        }
        publish(custom_objects, node, gpu_node_status(node, processes=processes))
    filler = generic("filler", f"{workstation.gpus[0].memory_mib - MARGIN_MIB - 100}Mi")  # 100 MiB left
    filler["spec"]["placement"] = {"node": "workstation", "gpus": [0]}
    create(custom_objects, namespace, filler)
    eventually(lambda: phase_is(custom_objects, namespace, "filler", "Placed", "Running"), "filler placed")

    create(custom_objects, namespace, qwen("qwen"))
    pending = eventually(lambda: phase_is(custom_objects, namespace, "qwen", "Pending", "Failed"), "qwen decided")
    assert pending["status"]["phase"] == "Pending", pending["status"]
    placed = condition(pending, "Placed")
    assert placed is not None and placed["status"] == "False" and placed["message"], placed
    never_failed(custom_objects, namespace, "qwen", 5)

    started = time.monotonic()
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "filler")
    moved = eventually(
        lambda: phase_is(custom_objects, namespace, "qwen", "Placed", "Running"), "qwen placed by itself", timeout=30
    )
    assert moved["status"]["placement"]["gpus"][0]["uuid"] == fake_gpu_uuid("workstation", 0)
    assert time.monotonic() - started < 30

    create(custom_objects, namespace, generic("big", "30Gi"))  # only an H100 could hold it, and they are full
    eventually(lambda: phase_is(custom_objects, namespace, "big", "Pending"), "big Pending")
    never_failed(custom_objects, namespace, "big", 3)
    h100 = next(n for n in restore_fleet if n.name.startswith("h100"))
    started = time.monotonic()
    publish(custom_objects, h100, gpu_node_status(h100))  # its foreign use is gone: a GpuNode gains memory
    grown = eventually(
        lambda: phase_is(custom_objects, namespace, "big", "Placed", "Running"), "big placed by itself", timeout=30
    )
    assert grown["status"]["placement"]["node"] == h100.name
    assert time.monotonic() - started < 30


def test_gpu_reporting_no_memory_moves_its_server_and_fails_nothing(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    restore_fleet: list[FakeNode],
) -> None:
    """Defect 2: NVML lost a GPU; the simulated agent reports memoryTotalMiB 0 for it."""
    create(custom_objects, namespace, generic("whisper", "3Gi"))
    placed = eventually(lambda: phase_is(custom_objects, namespace, "whisper", "Placed", "Running"), "whisper placed")
    before = placed["status"]["placement"]
    node = next(n for n in restore_fleet if n.name == before["node"])
    lost = before["gpus"][0]["index"]
    status = gpu_node_status(node)
    status["gpus"][lost].update({"memoryTotalMiB": 0, "memoryUsedMiB": 0, "memoryFreeMiB": 0})
    publish(custom_objects, node, status)
    moved = eventually(
        lambda: (
            (p := get(custom_objects, namespace, "whisper")["status"].get("placement"))
            and p["gpus"][0]["uuid"] != before["gpus"][0]["uuid"]
            and p
        ),
        "re-placement off the GPU with no memory",
    )
    assert moved["gpus"][0]["uuid"] != fake_gpu_uuid(node.name, lost)
    lost_events = [e for e in events_of(core_v1, namespace, "whisper") if e.reason == "GpuLost"]
    assert lost_events and "0MiB" in lost_events[0].message
    create(custom_objects, namespace, generic("next", "1Gi"))  # the fleet stays plannable
    eventually(lambda: phase_is(custom_objects, namespace, "next", "Placed", "Running"), "a new server placed")
    for name in ("whisper", "next"):
        assert get(custom_objects, namespace, name)["status"]["phase"] != "Failed"


def test_gpu_node_recreated_by_its_agent_keeps_its_servers(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    restore_fleet: list[FakeNode],
) -> None:
    """Defect 9: the agent deletes and re-creates its GpuNode about a second later."""
    core_v1 = client.CoreV1Api(custom_objects.api_client)
    create(custom_objects, namespace, generic("embed", "2Gi"))
    running = eventually(lambda: phase_is(custom_objects, namespace, "embed", "Running"), "embed Running")
    before = running["status"]["placement"]
    template = apps_v1.read_namespaced_deployment("embed", namespace).spec.template.metadata.annotations
    node = next(n for n in restore_fleet if n.name == before["node"])
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", node.name)
    time.sleep(1.2)
    publish(custom_objects, node, gpu_node_status(node))
    time.sleep(6)  # several runtime checks (every second)
    after = get(custom_objects, namespace, "embed")["status"]["placement"]
    assert [g["uuid"] for g in after["gpus"]] == [g["uuid"] for g in before["gpus"]]
    assert not [e for e in events_of(core_v1, namespace, "embed") if e.reason == "GpuLost"]
    annotations = apps_v1.read_namespaced_deployment("embed", namespace).spec.template.metadata.annotations
    assert annotations["vram.dev/placement-hash"] == template["vram.dev/placement-hash"]  # not restarted


def test_foreign_growth_sets_memory_fits_false_with_a_warning(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    restore_fleet: list[FakeNode],
) -> None:
    """Defect 10: a foreign process grows until the server's room is gone."""
    create(custom_objects, namespace, generic("clip", "4Gi"))
    running = eventually(lambda: phase_is(custom_objects, namespace, "clip", "Running"), "clip Running")
    placement = running["status"]["placement"]
    node = next(n for n in restore_fleet if n.name == placement["node"])
    index = placement["gpus"][0]["index"]
    total = node.gpus[index].memory_mib
    room = total - 4096  # what foreign use may take before clip no longer fits
    desktop = {"pid": 4343, "usedMiB": room, "name": "Xorg"}
    publish(custom_objects, node, gpu_node_status(node, processes={index: [desktop]}))
    time.sleep(3)
    fits = condition(get(custom_objects, namespace, "clip"), "MemoryFits")
    assert fits is not None and fits["status"] != "False", fits  # exactly the room left: still fits
    desktop["usedMiB"] = room + 1
    publish(custom_objects, node, gpu_node_status(node, processes={index: [desktop]}))
    grew = eventually(
        lambda: (c := condition(get(custom_objects, namespace, "clip"), "MemoryFits")) and c["status"] == "False" and c,
        "MemoryFits False",
    )
    assert grew["reason"] == "ForeignMemoryGrew"
    assert "4095MiB free" in grew["message"] and "4096MiB needed" in grew["message"]
    warning = eventually(
        lambda: next((e for e in events_of(core_v1, namespace, "clip") if e.reason == "ForeignMemoryGrew"), None),
        "ForeignMemoryGrew event",
    )
    assert warning.type == "Warning"


def test_missing_config_map_is_pending_and_its_creation_places_the_server(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
) -> None:
    """Defect 11: fixing what a server references recovers it, without touching the server."""
    create(custom_objects, namespace, qwen("qwen", configMapRef={"name": "qwen-config"}))
    pending = eventually(lambda: phase_is(custom_objects, namespace, "qwen", "Pending", "Failed"), "qwen decided")
    assert pending["status"]["phase"] == "Pending", pending["status"]
    placed = condition(pending, "Placed")
    assert placed is not None and (placed["status"], placed["reason"]) == ("False", "ConfigMapNotFound")
    assert "qwen-config" in placed["message"]
    time.sleep(2)
    core_v1.create_namespaced_config_map(
        namespace, {"metadata": {"name": "qwen-config"}, "data": {"config.json": QWEN_CONFIG}}
    )
    done = eventually(
        lambda: phase_is(custom_objects, namespace, "qwen", "Placed", "Running"), "qwen placed", timeout=30
    )
    assert done["status"]["estimate"]["source"]


def test_a_child_the_api_server_refuses_is_reported_not_retried(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    apps_v1: client.AppsV1Api,
    core_v1: client.CoreV1Api,
) -> None:
    """Defect 12: a Deployment of the server's name exists with another selector (immutable): 422."""
    labels = {"app": "someone-else"}
    apps_v1.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "clash"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            },
        },
    )
    create(custom_objects, namespace, generic("clash", "1Gi"))
    degraded = eventually(
        lambda: (c := condition(get(custom_objects, namespace, "clash"), "Degraded")) and c["status"] == "True" and c,
        "Degraded ChildRejected",
    )
    assert degraded["reason"] == "ChildRejected"
    assert "Deployment clash refused (422)" in degraded["message"] and "immutable" in degraded["message"]
    assert get(custom_objects, namespace, "clash")["status"]["phase"] == "Degraded"
    assert core_v1.read_namespaced_service("clash", namespace)  # the other children were applied
    warning = eventually(
        lambda: next((e for e in events_of(core_v1, namespace, "clash") if e.reason == "ChildRejected"), None),
        "ChildRejected event",
    )
    assert warning.type == "Warning"
    time.sleep(4)  # runtime checks come and go: the condition stays, the Event is not repeated
    assert condition(get(custom_objects, namespace, "clash"), "Degraded")["reason"] == "ChildRejected"  # type: ignore[index]
    rejected = [e for e in events_of(core_v1, namespace, "clash") if e.reason == "ChildRejected"]
    assert len(rejected) == 1 and (rejected[0].count or 1) == 1
