"""MIG: a GPU in MIG mode is not a slot, its MIG devices are; tensor parallel never uses MIG devices."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import generic, llm

from vram_operator.api.base import ObjectMeta
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNode, GpuNodeStatus
from vram_operator.placement.inventory import Inventory
from vram_operator.placement.ownership import ProcessOwners
from vram_operator.placement.planner import plan

A100 = "NVIDIA A100-SXM4-80GB"
A100_MIB = 81920
SLICE_MIB = 40192  # a 3g.40gb MIG device as the driver reports it


def _device(
    uuid: str, index: int, name: str, mib: float, *, mig_enabled: bool = False, parent_uuid: str | None = None
) -> GpuDeviceStatus:
    """An idle device; a MIG device when it has a parent."""
    return GpuDeviceStatus(
        index=index,
        uuid=uuid,
        name=name,
        memory_total_mib=mib,
        memory_used_mib=0,
        memory_free_mib=mib,
        mig_enabled=mig_enabled,
        mig=parent_uuid is not None,
        parent_uuid=parent_uuid,
    )


def _a100(
    node: str = "a100", slices: int = 2, *, marked: bool = True, plain: int = 0, slice_mib: float = SLICE_MIB
) -> GpuNode:
    """One A100 in MIG mode with `slices` 3g.40gb devices, then `plain` whole GPUs (indices 1...)."""
    parent = f"GPU-{node}-0"
    gpus = [_device(parent, 0, A100, A100_MIB, mig_enabled=marked)]
    gpus += [_device(f"MIG-{node}-{i}", 0, f"{A100} MIG 3g.40gb", slice_mib, parent_uuid=parent) for i in range(slices)]
    gpus += [_device(f"GPU-{node}-{1 + i}", 1 + i, A100, A100_MIB) for i in range(plain)]
    return GpuNode(metadata=ObjectMeta(name=node), status=GpuNodeStatus(gpus=gpus))


def _inventory(*nodes: GpuNode) -> Inventory:
    return Inventory.from_gpu_nodes(nodes, ProcessOwners())


def test_a_gpu_in_mig_mode_is_not_a_slot_its_mig_devices_are() -> None:
    inventory = _inventory(_a100())
    assert [(s.uuid, s.total_mib, s.mig) for s in inventory.slots] == [
        ("MIG-a100-0", SLICE_MIB, True),
        ("MIG-a100-1", SLICE_MIB, True),
    ]


def test_the_parent_of_listed_mig_devices_is_not_a_slot_even_unmarked() -> None:
    # An agent that predates migEnabled still lists the parent and its devices: the devices win.
    assert [s.uuid for s in _inventory(_a100(marked=False)).slots] == ["MIG-a100-0", "MIG-a100-1"]


def test_mig_mode_without_devices_offers_nothing() -> None:
    assert _inventory(_a100(slices=0)).slots == ()


def test_four_30gib_servers_on_two_slices_place_two() -> None:
    """The reported case: 4 x 30 GiB on one 80 GB A100 with two 3g.40gb slices."""
    demands = [generic(f"ai/s{i}", 30 * 1024) for i in range(4)]
    result = plan(_inventory(_a100()), demands, "VRAMBased")
    assert len(result.placements) == 2
    assert {p.gpu_uuids for p in result.placements} == {("MIG-a100-0",), ("MIG-a100-1",)}
    assert [u.reason for u in result.unplaced] == ["InsufficientMemory", "InsufficientMemory"]
    assert all(g.free_after_mib >= 0 for g in result.gpus)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=512, max_value=45_000), min_size=1, max_size=8),
    slices=st.integers(min_value=0, max_value=3),
    slice_mib=st.sampled_from([9856.0, 19968.0, SLICE_MIB]),
)
def test_no_server_is_on_a_parent_and_no_slice_is_overcommitted(
    sizes: list[int], slices: int, slice_mib: float
) -> None:
    inventory = _inventory(_a100(slices=slices, slice_mib=slice_mib, plain=1))
    result = plan(inventory, [generic(f"ai/s{i}", size) for i, size in enumerate(sizes)], "VRAMBased")
    used = {u for p in result.placements for u in p.gpu_uuids}
    assert "GPU-a100-0" not in used
    for gpu in result.gpus:
        assert gpu.reserved_mib + gpu.foreign_mib + gpu.margin_mib <= gpu.total_mib + 1e-6
    # Never more memory handed out on the MIG GPU than its slices have.
    on_slices = sum(p.budget_mib for p in result.placements if p.gpu_uuids[0].startswith("MIG-"))
    assert on_slices <= slices * slice_mib


def test_tensor_parallel_never_uses_mig_devices() -> None:
    inventory = _inventory(_a100(slices=2))
    result = plan(inventory, [llm("ai/tp2", 20_000, tensor_parallel=2)], "VRAMBased")
    assert result.placements == ()
    (unplaced,) = result.unplaced
    assert unplaced.reason == "TensorParallelOnMig"
    assert "MIG" in unplaced.message


def test_tensor_parallel_takes_whole_gpus_beside_mig_devices() -> None:
    inventory = _inventory(_a100(slices=2, plain=2))
    result = plan(inventory, [llm("ai/tp2", 20_000, tensor_parallel=2)], "VRAMBased")
    (placed,) = result.placements
    assert placed.gpu_uuids == ("GPU-a100-1", "GPU-a100-2")


def test_a_tensor_parallel_pin_onto_mig_devices_is_refused() -> None:
    inventory = _inventory(_a100(slices=2))
    demand = llm("ai/tp2", 20_000, tensor_parallel=2, pin_gpus=("MIG-a100-0", "MIG-a100-1"))
    result = plan(inventory, [demand], "VRAMBased")
    assert [u.reason for u in result.unplaced] == ["TensorParallelOnMig"]


def test_a_pin_by_index_of_a_gpu_in_mig_mode_asks_for_a_uuid() -> None:
    inventory = _inventory(_a100(slices=2))
    result = plan(inventory, [generic("ai/one", 1000, pin_node="a100", pin_gpus=(0,))], "VRAMBased")
    (unplaced,) = result.unplaced
    assert unplaced.reason == "PinnedGpuNotFound"
    assert "MIG-a100-0" in unplaced.message
    by_uuid = plan(inventory, [generic("ai/one", 1000, pin_gpus=("MIG-a100-1",))], "VRAMBased")
    assert by_uuid.placements[0].gpu_uuids == ("MIG-a100-1",)
