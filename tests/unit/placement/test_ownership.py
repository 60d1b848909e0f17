"""One rule for who owns a GPU process: the pod UIDs of a server's pods; the pod name only without a UID."""

from __future__ import annotations

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuProcess
from vram_operator.placement.ownership import ProcessOwners, not_ours


def test_a_pod_uid_of_the_servers_pods_makes_the_process_the_servers() -> None:
    owners = ProcessOwners.of(["ai/chat"], {"ai/chat": {"uid-1", "uid-2"}})
    assert owners.owner_of(GpuProcess(pid=1, pod_uid="uid-2", pod_namespace="ai", pod_name="whatever")) == "ai/chat"


def test_a_pod_named_like_a_server_with_another_uid_is_foreign() -> None:
    owners = ProcessOwners.of(["ai/chat"], {"ai/chat": {"uid-1"}})
    impostor = GpuProcess(pid=1, used_mib=900, pod_uid="uid-9", pod_namespace="ai", pod_name="chat-7d9f-x2x")
    assert owners.owner_of(impostor) is None
    gpu = GpuDeviceStatus(
        index=0, uuid="GPU-0", memory_total_mib=24564, memory_used_mib=900, memory_free_mib=0, processes=[impostor]
    )
    assert not_ours(gpu, owners).mib == 900


def test_without_known_pods_the_name_rule_decides_even_with_a_uid() -> None:
    # Offline `plan` on hand-written GpuNodes: the pods are unknown, so the pod name is all there is.
    owners = ProcessOwners.of(["ai/chat"])
    assert owners.owner_of(GpuProcess(pid=1, pod_uid="any", pod_namespace="ai", pod_name="chat-7d9f-x2x")) == "ai/chat"


def test_a_process_without_uid_falls_back_to_the_name_rule_when_pods_are_known() -> None:
    owners = ProcessOwners.of(["ai/chat"], {"ai/chat": {"uid-1"}})
    assert owners.owner_of(GpuProcess(pid=1, pod_namespace="ai", pod_name="chat-0")) == "ai/chat"
    assert owners.owner_of(GpuProcess(pid=1, pod_namespace="web", pod_name="chat-0")) is None


def test_not_ours_is_foreign_processes_unattributed_and_driver_reserved() -> None:
    owners = ProcessOwners.of(["ai/chat"], {"ai/chat": {"uid-1"}})
    gpu = GpuDeviceStatus(
        index=0,
        uuid="GPU-0",
        memory_total_mib=24564,
        memory_used_mib=0,
        memory_free_mib=0,
        memory_reserved_mib=300,
        unattributed_mib=150,
        processes=[
            GpuProcess(pid=1, used_mib=6000, pod_uid="uid-1"),
            GpuProcess(pid=2, used_mib=1200, name="Xorg"),
            GpuProcess(pid=3, used_mib=None, name="python"),
        ],
    )
    found = not_ours(gpu, owners)
    assert found.mib == 1200 + 150 + 300
    assert found.detail == ("Xorg 1200MiB", "unattributed 150MiB", "driver reserved 300MiB")
