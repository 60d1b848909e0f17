"""Inventory: foreign memory, schedulability, bandwidth lookup, process owners."""

from __future__ import annotations

import pytest

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeSpec, GpuNodeStatus, GpuProcess
from vram_operator.placement.bandwidth import bandwidth_of
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.inventory import Inventory, SlotCache, make_slot
from vram_operator.placement.ownership import ProcessOwners


def _node(name: str, gpus: list[GpuDeviceStatus], *, cordoned: bool = False) -> GpuNode:
    return GpuNode(metadata=ObjectMeta(name=name), spec=GpuNodeSpec(cordoned=cordoned), status=GpuNodeStatus(gpus=gpus))


def _gpu(index: int, processes: list[GpuProcess], **kw: object) -> GpuDeviceStatus:
    return GpuDeviceStatus(
        index=index,
        uuid=f"GPU-{index}",
        name="NVIDIA RTX A5500",
        memory_total_mib=24564,
        memory_used_mib=sum(p.used_mib or 0 for p in processes),
        memory_free_mib=0,
        processes=processes,
        **kw,  # type: ignore[arg-type]
    )


def test_foreign_counts_unowned_processes_unattributed_and_driver_reserved() -> None:
    ours = GpuProcess(pid=1, used_mib=6000, pod_namespace="ai", pod_name="chat-7d9f-abc")
    desktop = GpuProcess(pid=2, used_mib=1200, name="Xorg")
    other_pod = GpuProcess(pid=3, used_mib=800, pod_namespace="ai", pod_name="other-0")
    gpu = _gpu(0, [ours, desktop, other_pod], unattributed_mib=150, memory_reserved_mib=300)
    inventory = Inventory.from_gpu_nodes([_node("n1", [gpu])], ProcessOwners.of(["ai/chat"]))
    slot = inventory.slots[0]
    assert slot.foreign_mib == 1200 + 800 + 150 + 300
    assert any("Xorg" in d for d in slot.foreign_detail)
    assert slot.usable


def test_cordoned_and_stale_nodes_are_unschedulable_and_unhealthy_gpus_unusable() -> None:
    nodes = [
        _node("a", [_gpu(0, [])], cordoned=True),
        _node("b", [_gpu(1, [])]),
        _node("c", [_gpu(2, [], healthy=False)]),
    ]
    inventory = Inventory.from_gpu_nodes(nodes, ProcessOwners(), stale_nodes=frozenset({"b"}))
    by_node = {s.node: s for s in inventory.slots}
    assert not by_node["a"].schedulable
    assert not by_node["b"].schedulable
    assert by_node["c"].schedulable and not by_node["c"].healthy
    assert not any(s.usable for s in inventory.slots)


def test_without_pod_uids_the_owner_is_the_longest_matching_server_name() -> None:
    owner = ProcessOwners.of(["ai/chat", "ai/chat-small", "web/chat"]).owner_of
    assert owner(GpuProcess(pid=1, pod_namespace="ai", pod_name="chat-small-5f-x")) == "ai/chat-small"
    assert owner(GpuProcess(pid=1, pod_namespace="ai", pod_name="chat-5f-x")) == "ai/chat"
    assert owner(GpuProcess(pid=1, pod_namespace="ai", pod_name="chatter-0")) is None
    assert owner(GpuProcess(pid=1, name="python")) is None


@pytest.mark.parametrize(
    ("name", "gbps"),
    [
        ("NVIDIA H100 80GB HBM3", 3350),
        ("NVIDIA H100 PCIe", 2000),
        ("NVIDIA H200", 4800),
        ("NVIDIA A100-SXM4-80GB", 2039),
        ("NVIDIA A10", 600),
        ("NVIDIA L4", 300),
        ("NVIDIA L40S", 864),
        ("NVIDIA RTX A400", 96),
        ("NVIDIA RTX A4000", 448),
        ("NVIDIA GeForce RTX 4090", 1008),
        ("Tesla T4", 320),
    ],
)
def test_bandwidth_table_matches_whole_tokens(name: str, gbps: float) -> None:
    found = bandwidth_of(name, 1)
    assert (found.gbps, found.estimated) == (gbps, False)


def test_unknown_product_bandwidth_is_estimated_from_memory() -> None:
    small, large = bandwidth_of("Mystery GPU", 8192), bandwidth_of("Mystery GPU", 49152)
    assert small.estimated and large.estimated
    assert small.gbps < large.gbps


def test_duplicate_uuid_is_a_field_error() -> None:
    with pytest.raises(PlacementError) as error:
        Inventory((make_slot("a", 0, 1000, uuid="X"), make_slot("b", 0, 1000, uuid="X")))
    assert error.value.field == "uuid"


def test_slots_are_sorted_by_node_then_index() -> None:
    inventory = Inventory((make_slot("b", 1, 10), make_slot("a", 2, 10), make_slot("b", 0, 10)))
    assert [(s.node, s.index) for s in inventory.slots] == [("a", 2), ("b", 0), ("b", 1)]
    assert [s.index for s in inventory.on_node("b")] == [0, 1]


def test_a_slot_cache_gives_what_a_fresh_build_gives_as_nodes_change() -> None:
    # The operator plans batch after batch with one SlotCache: every build must equal a fresh one
    # while nodes are reported again, go stale, get processes, and their owners change.
    cache = SlotCache()
    chat = GpuProcess(pid=1, used_mib=6000, pod_namespace="ai", pod_name="chat-7d9f-abc")
    idle = _node("a", [_gpu(0, [])])
    busy = _node("b", [_gpu(1, [chat])])
    rounds: list[tuple[list[GpuNode], ProcessOwners, frozenset[str]]] = [
        ([idle, busy], ProcessOwners(), frozenset()),
        ([idle, busy], ProcessOwners.of(["ai/chat"]), frozenset()),  # the process is ours now
        ([idle, busy], ProcessOwners.of(["ai/chat"]), frozenset({"a"})),  # a's agent went stale
        ([_node("a", [_gpu(0, [], healthy=False)]), busy], ProcessOwners(), frozenset()),  # a new report
        ([_node("a", [_gpu(0, [chat])]), busy], ProcessOwners.of(["ai/chat"]), frozenset()),
    ]
    for nodes, owners, stale in rounds:
        cached = Inventory.from_gpu_nodes(nodes, owners, stale, cache)
        assert cached.slots == Inventory.from_gpu_nodes(nodes, owners, stale).slots


def test_an_unchanged_node_keeps_its_slots_from_one_build_to_the_next() -> None:
    cache = SlotCache()
    node = _node("a", [_gpu(0, []), _gpu(1, [])])
    first = Inventory.from_gpu_nodes([node], ProcessOwners(), cache=cache).slots
    again = Inventory.from_gpu_nodes([node], ProcessOwners.of(["ai/chat"]), cache=cache).slots
    assert all(a is b for a, b in zip(first, again, strict=True))
    stale = Inventory.from_gpu_nodes([node], ProcessOwners(), frozenset({"a"}), cache).slots
    assert not any(slot.schedulable for slot in stale)
