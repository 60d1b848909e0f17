"""Placement rules with the operator on the real control plane: MIG devices, process ownership by pod UID,
and engine fit. Each test writes its own GpuNode (a node with no Node object: its pods stay Pending, the
placement is what is checked) and pins its servers there with spec.placement.node."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from operator_harness import (
    MARGIN_MIB,
    Operator,
    condition,
    create,
    delete_cluster_object,
    eventually,
    generic,
    get,
    rfc3339,
    vllm_server,
    write_gpu_node_status,
)

pytestmark = pytest.mark.integration

A100_MIB = 81920
SLICE_MIB = 40192  # a 3g.40gb MIG device


def gpu(index: int, uuid_: str, name: str, total: float, **extra: Any) -> dict[str, Any]:
    used = sum(p.get("usedMiB", 0) for p in extra.get("processes", []))
    return {
        "index": index,
        "uuid": uuid_,
        "name": name,
        "memoryTotalMiB": total,
        "memoryUsedMiB": used,
        "memoryFreeMiB": total - used,
        **extra,
    }


def write_gpu_node(custom: client.CustomObjectsApi, name: str, gpus: list[dict[str, Any]]) -> None:
    status = {"backend": "simulated", "lastHeartbeat": rfc3339(datetime.now(UTC)), "gpus": gpus}
    write_gpu_node_status(custom, name, status)


@pytest.fixture
def gpu_node_name(custom_objects: client.CustomObjectsApi) -> Iterator[str]:
    """A fresh GpuNode name, deleted after the test (GpuNodes are cluster-wide: others must not see it)."""
    name = f"placement-{uuid.uuid4().hex[:8]}"
    yield name
    delete_cluster_object(custom_objects, "gpunodes", name)


def pinned(body: dict[str, Any], node: str) -> dict[str, Any]:
    body["spec"]["placement"] = {"node": node}
    return body


def placement_of(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    placement: dict[str, Any] | None = (get(custom, namespace, name).get("status") or {}).get("placement")
    return placement


def not_placed(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    """The Placed=False condition once the operator has decided, else None."""
    found = condition(get(custom, namespace, name), "Placed")
    return found if found is not None and found["status"] == "False" else None


@pytest.mark.parametrize("marked", [True, False], ids=["migEnabled", "parent-named-only"])
def test_mig_slices_take_servers_and_their_gpu_never_does(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, gpu_node_name: str, marked: bool
) -> None:
    """Issue: four 30 GiB servers were placed on one 80 GB A100 with two 3g.40gb slices.

    The agent marks a GPU in MIG mode (migEnabled); an older agent only names it as its devices' parent.
    """
    parent = f"GPU-{gpu_node_name}-a100"
    slices = [f"MIG-{gpu_node_name}-{i}" for i in range(2)]
    write_gpu_node(
        custom_objects,
        gpu_node_name,
        [
            gpu(0, parent, "NVIDIA A100-SXM4-80GB", A100_MIB, **({"migEnabled": True} if marked else {})),
            *(
                gpu(0, uuid_, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", SLICE_MIB, mig=True, parentUuid=parent)
                for uuid_ in slices
            ),
        ],
    )
    names = [f"detector-{i}" for i in range(4)]
    for name in names:
        create(custom_objects, namespace, pinned(generic(name, "30Gi"), gpu_node_name))
    decided = eventually(
        lambda: (
            all(placement_of(custom_objects, namespace, n) or not_placed(custom_objects, namespace, n) for n in names)
            and names
        ),
        "a decision for every server",
    )
    placements = {n: placement_of(custom_objects, namespace, n) for n in decided}
    placed = {n: p for n, p in placements.items() if p is not None}
    assert len(placed) == 2, placements
    assert sorted(p["gpus"][0]["uuid"] for p in placed.values()) == slices  # one per slice, never the parent
    assert all(p["gpus"][0]["mig"] for p in placed.values())
    for name in set(names) - set(placed):
        held = not_placed(custom_objects, namespace, name)
        assert held is not None and held["reason"] == "InsufficientMemory", held
    # Still two after the operator has had time to retry the unplaced ones.
    time.sleep(3)
    again = [placement_of(custom_objects, namespace, n) for n in names]
    assert sorted(p["gpus"][0]["uuid"] for p in again if p) == slices
    assert operator.alive(), operator.logs()


def test_a_pod_named_like_a_server_with_a_foreign_uid_is_foreign(
    operator: Operator,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    gpu_node_name: str,
) -> None:
    """Ownership by pod UID: "chat-impostor-0" is not chat's because its UID is none of chat's pods'."""
    total = 24564
    gpu_uuid = f"GPU-{gpu_node_name}-0"
    impostor = {
        "pid": 900,
        "usedMiB": 12000,
        "podUID": "00000000-0000-0000-0000-00000000beef",
        "podNamespace": namespace,
        "podName": "chat-impostor-0",
    }
    write_gpu_node(custom_objects, gpu_node_name, [gpu(0, gpu_uuid, "NVIDIA RTX A5500", total, processes=[impostor])])
    create(custom_objects, namespace, pinned(generic("chat", "4Gi"), gpu_node_name))
    eventually(lambda: placement_of(custom_objects, namespace, "chat"), "chat placed")
    pod = eventually(
        lambda: next(iter(core_v1.list_namespaced_pod(namespace, label_selector="vram.dev/server=chat").items), None),
        "chat's pod",
    )
    own = {
        "pid": 901,
        "usedMiB": 4000,
        "podUID": pod.metadata.uid,
        "podNamespace": namespace,
        "podName": pod.metadata.name,
    }
    write_gpu_node(
        custom_objects, gpu_node_name, [gpu(0, gpu_uuid, "NVIDIA RTX A5500", total, processes=[impostor, own])]
    )
    time.sleep(2)  # the operator's GpuNode index catches up with the new process list

    # free = 24564 - 256 margin - 4096 chat - 12000 impostor = 8212 MiB: 10 GiB does not fit. Were the impostor
    # chat's (the pod-name rule), 20212 MiB would be free and it would be placed.
    create(custom_objects, namespace, pinned(generic("next", "10Gi"), gpu_node_name))
    held = eventually(lambda: not_placed(custom_objects, namespace, "next"), "next not placed")
    assert held["reason"] == "InsufficientMemory", held
    assert "chat-impostor-0 12000MiB" in held["message"], held["message"]
    assert f"{total - MARGIN_MIB - 4096 - 12000}MiB free" in held["message"], held["message"]
    assert placement_of(custom_objects, namespace, "next") is None

    # chat's own pod (its UID) is inside chat's reservation, not foreign: 5 GiB fits in the 8212 MiB left
    # (it would not, 4212 MiB, were the 4000 MiB of chat's process counted as well).
    create(custom_objects, namespace, pinned(generic("fits", "5Gi"), gpu_node_name))
    placed = eventually(lambda: placement_of(custom_objects, namespace, "fits"), "fits placed")
    assert placed["gpus"][0]["uuid"] == gpu_uuid
    assert operator.alive(), operator.logs()


def test_dedicated_manual_utilization_goes_where_the_engine_starts(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, gpu_node_name: str
) -> None:
    """Issue: the dedicated Qwen2.5 32B at manual 0.92 landed on a 4 GB RTX A400, Placed and MemoryFits True."""
    write_gpu_node(
        custom_objects,
        gpu_node_name,
        [
            gpu(0, f"GPU-{gpu_node_name}-a400", "NVIDIA RTX A400", 4094),
            gpu(1, f"GPU-{gpu_node_name}-h100", "NVIDIA H100 80GB HBM3", 81559),
        ],
    )
    body = vllm_server(
        "qwen-32b",
        engineVersion="0.19.0",
        model={"name": "Qwen/Qwen2.5-32B-Instruct"},
        maxModelLen=16384,
        isolation="dedicated",
        gpuMemoryUtilization=0.92,
        placement={"node": gpu_node_name},
    )
    create(custom_objects, namespace, body)
    placement = eventually(lambda: placement_of(custom_objects, namespace, "qwen-32b"), "qwen-32b placed")
    assert placement["gpus"][0]["uuid"] == f"GPU-{gpu_node_name}-h100"
    assert placement["budgetMiB"] >= 0.92 * 81559 - 1
    fits = condition(get(custom_objects, namespace, "qwen-32b"), "MemoryFits")
    assert fits is None or fits["status"] != "False", fits
    assert operator.alive(), operator.logs()
