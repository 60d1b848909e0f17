"""The fleet as placement sees it: one GpuSlot per GPU, with memory that is not ours (foreign).

A GPU in MIG mode is not a slot: each of its MIG devices is one (own UUID, own memory), so a server
is never placed on a GPU and on a slice of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vram_operator.api.gpu_node import GpuNode
from vram_operator.placement.bandwidth import bandwidth_of
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.ownership import ProcessOwners, not_ours


@dataclass(frozen=True)
class GpuSlot:
    """One GPU that placement may use.

    `foreign_mib` is memory used by anything that is not one of our servers (desktop, editors, other
    services, unattributed use, driver-reserved memory): it counts against capacity like a reservation.
    """

    node: str
    index: int
    uuid: str
    name: str
    total_mib: float
    foreign_mib: float = 0.0
    healthy: bool = True
    schedulable: bool = True
    bandwidth_gbps: float = 0.0
    bandwidth_estimated: bool = False
    compute_capability: str | None = None
    foreign_detail: tuple[str, ...] = ()
    mig: bool = False  # a MIG device; its index is its parent GPU's

    @property
    def usable(self) -> bool:
        """True when the GPU may receive new placements."""
        return self.healthy and self.schedulable

    @property
    def label(self) -> str:
        """Short name for messages: "node-a GPU 1 (RTX A400, 4094MiB)"."""
        return f"{self.node} GPU {self.index} ({self.name or 'unknown'}, {self.total_mib:.0f}MiB)"


def make_slot(
    node: str,
    index: int,
    total_mib: float,
    *,
    name: str = "",
    uuid: str | None = None,
    foreign_mib: float = 0.0,
    healthy: bool = True,
    schedulable: bool = True,
) -> GpuSlot:
    """A GpuSlot with its bandwidth looked up from the product name (tests, benchmarks, CLI)."""
    bandwidth = bandwidth_of(name, total_mib)
    return GpuSlot(
        node=node,
        index=index,
        uuid=uuid or f"GPU-{node}-{index}",
        name=name,
        total_mib=total_mib,
        foreign_mib=foreign_mib,
        healthy=healthy,
        schedulable=schedulable,
        bandwidth_gbps=bandwidth.gbps,
        bandwidth_estimated=bandwidth.estimated,
    )


@dataclass(frozen=True)
class Inventory:
    """All GPUs, sorted by (node, index); UUIDs are unique."""

    slots: tuple[GpuSlot, ...] = ()
    _by_uuid: dict[str, GpuSlot] = field(init=False, repr=False, compare=False)
    _by_node: dict[str, tuple[GpuSlot, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.slots, key=lambda s: (s.node, s.index, s.uuid)))
        by_uuid: dict[str, GpuSlot] = {}
        by_node: dict[str, list[GpuSlot]] = {}
        for slot in ordered:
            if slot.uuid in by_uuid:
                raise PlacementError(
                    f"GPU uuid {slot.uuid} appears twice (nodes {by_uuid[slot.uuid].node}, {slot.node})", field="uuid"
                )
            if slot.total_mib <= 0:
                raise PlacementError(
                    f"GPU {slot.uuid} on {slot.node}: memoryTotalMiB must be positive", field="memoryTotalMiB"
                )
            by_uuid[slot.uuid] = slot
            by_node.setdefault(slot.node, []).append(slot)
        object.__setattr__(self, "slots", ordered)
        object.__setattr__(self, "_by_uuid", by_uuid)
        object.__setattr__(self, "_by_node", {node: tuple(slots) for node, slots in by_node.items()})

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._by_node)

    def by_uuid(self, uuid: str) -> GpuSlot | None:
        return self._by_uuid.get(uuid)

    def on_node(self, node: str) -> tuple[GpuSlot, ...]:
        return self._by_node.get(node, ())

    @classmethod
    def from_gpu_nodes(
        cls,
        nodes: Iterable[GpuNode],
        owners: ProcessOwners,
        stale_nodes: frozenset[str] = frozenset(),
        cache: SlotCache | None = None,
    ) -> Inventory:
        """Build the inventory from GpuNode statuses.

        Memory that is not ours (ownership.not_ours: processes of no server, unattributed and
        driver-reserved memory) is foreign.
        GPUs of cordoned nodes and of nodes in `stale_nodes` (agent heartbeat too old: the caller
        decides) are unschedulable. With a `cache`, a node unchanged since the last build keeps its slots.
        """
        slots: list[GpuSlot] = []
        for node in nodes:
            if node.status is None:
                continue
            schedulable = not node.spec.cordoned and node.metadata.name not in stale_nodes
            slots.extend(cache.slots_of(node, schedulable, owners) if cache else node_slots(node, schedulable, owners))
        return cls(tuple(slots))


class SlotCache:
    """Each node's slots as last built, for planning runs one after another (the operator plans each
    batch of decisions against the whole fleet): a node whose report is the same object and whose
    schedulability is the same keeps its slots. Only nodes whose GPUs report no process are kept: which
    process is ours changes with the servers, so those nodes are built again every time."""

    def __init__(self) -> None:
        self._by_node: dict[str, tuple[GpuNode, bool, tuple[GpuSlot, ...]]] = {}

    def slots_of(self, node: GpuNode, schedulable: bool, owners: ProcessOwners) -> tuple[GpuSlot, ...]:
        name = node.metadata.name
        kept = self._by_node.get(name)
        if kept is not None and kept[0] is node and kept[1] == schedulable:
            return kept[2]
        built = node_slots(node, schedulable, owners)
        if node.status is not None and not any(gpu.processes for gpu in node.status.gpus):
            self._by_node[name] = (node, schedulable, built)
        else:
            self._by_node.pop(name, None)
        return built


def node_slots(node: GpuNode, schedulable: bool, owners: ProcessOwners) -> tuple[GpuSlot, ...]:
    """The slots of one node's GPUs (a GPU in MIG mode: its MIG devices)."""
    if node.status is None:
        return ()
    mig_parents = {gpu.parent_uuid for gpu in node.status.gpus if gpu.mig}
    slots: list[GpuSlot] = []
    for gpu in node.status.gpus:
        if gpu.mig_enabled or gpu.uuid in mig_parents:
            continue  # its MIG devices are the slots
        foreign = not_ours(gpu, owners)
        bandwidth = bandwidth_of(gpu.name, gpu.memory_total_mib)
        slots.append(
            GpuSlot(
                node=node.metadata.name,
                index=gpu.index,
                uuid=gpu.uuid,
                name=gpu.name,
                total_mib=gpu.memory_total_mib,
                foreign_mib=foreign.mib,
                healthy=gpu.healthy,
                schedulable=schedulable,
                bandwidth_gbps=bandwidth.gbps,
                bandwidth_estimated=bandwidth.estimated,
                compute_capability=gpu.compute_capability,
                foreign_detail=foreign.detail,
                mig=gpu.mig,
            )
        )
    return tuple(slots)
