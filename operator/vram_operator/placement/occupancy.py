"""Mutable bookkeeping of one planning run: free memory and tenants per GPU, with fast lookups.

GPUs that may take new servers sit in buckets keyed by (total, bandwidth, vacant, hosts an LLM,
hosts a latency-critical server), each sorted by most free first, ties by (node, index). Within a
bucket every strategy prefers the GPU with the most free memory, so the best candidate of a bucket
is its first acceptable entry and a search looks at one entry per bucket instead of every GPU.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vram_operator.placement.first_fit import NONE, FirstFitIndex
from vram_operator.placement.inventory import GpuSlot, Inventory
from vram_operator.placement.ledger import Ledger
from vram_operator.placement.node_index import FirstGroups, NodePivots

BucketKey = tuple[float, float, bool, bool, bool]
Entry = tuple[float, str, int, int]  # (-free, node, index, position)
Score = tuple[float | str | int, ...]
# A strategy's ranking of one GPU for a demand (lower is better).
Scorer = Callable[["GpuState", float], Score]
# Tolerance of MiB comparisons (free memory against a budget).
EPS = 1e-6


@dataclass(frozen=True)
class Tenant:
    """A server replica occupying GPUs: its budget per GPU and the traits strategies look at.

    `key` is the replica's key ("ns/name", "ns/name[1]", ...), unique within the run.
    """

    key: str
    uuids: tuple[str, ...]
    budget_mib: float
    llm: bool = False
    critical: bool = False
    dedicated: bool = False
    movable: bool = False


class GpuState:
    """One GPU during planning."""

    __slots__ = (
        "capacity",
        "critical",
        "dedicated",
        "entry",
        "key",
        "llm",
        "namespaces",
        "position",
        "reserved",
        "slot",
        "tenants",
    )

    def __init__(self, slot: GpuSlot, position: int, margin_mib: float) -> None:
        self.slot = slot
        self.position = position
        self.capacity = slot.total_mib - slot.foreign_mib - margin_mib
        self.reserved = 0.0
        self.tenants: dict[str, Tenant] = {}
        self.llm = 0
        self.critical = 0
        self.dedicated = 0
        self.namespaces: dict[str, int] = {}  # namespace -> tenants of it on this GPU
        self.entry: Entry | None = None
        self.key: BucketKey | None = None

    @property
    def free(self) -> float:
        return self.capacity - self.reserved

    @property
    def vacant(self) -> bool:
        return not self.tenants


class Occupancy:
    """All GPUs of a planning run; place/remove keep the buckets in order."""

    def __init__(
        self,
        inventory: Inventory,
        ledger: Ledger,
        margin_mib: float,
        replanned: frozenset[str],
        *,
        packing: bool,
        one_namespace_per_gpu: bool = False,
    ) -> None:
        # dra pinning: ResourceClaims are namespaced and the NVIDIA DRA driver gives a device to one
        # claim, so servers of different namespaces never share a GPU (see serving()).
        self.one_namespace_per_gpu = one_namespace_per_gpu
        self._serving: str | None = None
        self.gpus = [GpuState(slot, i, margin_mib) for i, slot in enumerate(inventory.slots)]
        self.by_uuid = {g.slot.uuid: g for g in self.gpus}
        self.by_node: dict[str, list[GpuState]] = {}
        for gpu in self.gpus:
            self.by_node.setdefault(gpu.slot.node, []).append(gpu)
        self.buckets: dict[BucketKey, list[Entry]] = {}
        self.tenants: dict[str, Tenant] = {}
        self.orphans: list[str] = []
        self._open: dict[str, list[GpuState]] = {}
        self._hidden: frozenset[int] = frozenset()
        # Node indexes for tensor-parallel groups (node_index.py), built on first use per group size and
        # refreshed, before each search, for the nodes whose GPUs changed since.
        self.nodes = list(self.by_node)
        self._node_position = {node: i for i, node in enumerate(self.nodes)}
        self._changed: set[str] = set()
        self._pivots: dict[int, NodePivots] = {}
        self._first_groups: dict[tuple[int, bool], FirstGroups] = {}
        # First-fit indexes (any open GPU, vacant open GPUs) are kept only for the packing pass.
        self.first_fit = FirstFitIndex(len(self.gpus)) if packing else None
        self.first_fit_vacant = FirstFitIndex(len(self.gpus)) if packing else None
        # The standing reservations are placed first and each GPU filed once after (placing them one by
        # one re-filed a GPU per reservation on it); the buckets come out as place() would leave them,
        # in the order it would have made them (empty ones included: searches walk them in that order).
        for gpu in self.gpus:
            self._bucket_for(gpu)
        for reservation in ledger.reservations:
            if reservation.key in replanned:
                continue
            missing = [u for u in reservation.gpu_uuids if u not in self.by_uuid]
            if missing:
                self.orphans.append(
                    f"{reservation.key}: reserved GPU(s) {', '.join(missing)} not in the inventory; ignored"
                )
                continue
            tenant = Tenant(
                reservation.key, reservation.gpu_uuids, reservation.budget_mib, dedicated=reservation.dedicated
            )
            self.tenants[tenant.key] = tenant
            for uuid in tenant.uuids:
                gpu = self.by_uuid[uuid]
                self._changed.add(gpu.slot.node)
                self._occupy(gpu, tenant)
                self._bucket_for(gpu)
        for gpu in self.gpus:
            self._file(gpu, keep_order=False)
        for bucket in self.buckets.values():
            bucket.sort()

    # --- bookkeeping -------------------------------------------------------------------------
    def _unfile(self, gpu: GpuState) -> None:
        self._open.pop(gpu.slot.node, None)
        self._changed.add(gpu.slot.node)
        if gpu.key is not None and gpu.entry is not None:
            bucket = self.buckets[gpu.key]
            del bucket[bisect_left(bucket, gpu.entry)]
        gpu.key = gpu.entry = None

    def _is_open(self, gpu: GpuState) -> bool:
        return (
            gpu.slot.usable
            and not gpu.dedicated
            and gpu.position not in self._hidden
            and (self._serving is None or not self.holds_other_namespace(gpu, self._serving))
        )

    def _bucket_for(self, gpu: GpuState) -> None:
        """Make the bucket an open GPU files into (as _file would), without filing it."""
        if self._is_open(gpu):
            slot = gpu.slot
            self.buckets.setdefault(
                (slot.total_mib, slot.bandwidth_gbps, gpu.vacant, gpu.llm > 0, gpu.critical > 0), []
            )

    def _file(self, gpu: GpuState, *, keep_order: bool = True) -> None:
        """File a GPU by its state; `keep_order` False appends to its bucket (the caller sorts the buckets)."""
        is_open = self._is_open(gpu)
        if self.first_fit is not None and self.first_fit_vacant is not None:
            self.first_fit.set(gpu.position, gpu.free if is_open else NONE)
            self.first_fit_vacant.set(gpu.position, gpu.free if is_open and gpu.vacant else NONE)
        if not is_open:
            return
        slot = gpu.slot
        gpu.key = (slot.total_mib, slot.bandwidth_gbps, gpu.vacant, gpu.llm > 0, gpu.critical > 0)
        gpu.entry = (-gpu.free, slot.node, slot.index, gpu.position)
        if keep_order:
            insort(self.buckets.setdefault(gpu.key, []), gpu.entry)
        else:
            self.buckets.setdefault(gpu.key, []).append(gpu.entry)

    def _occupy(self, gpu: GpuState, tenant: Tenant) -> None:
        gpu.tenants[tenant.key] = tenant
        gpu.reserved += tenant.budget_mib
        gpu.llm += tenant.llm
        gpu.critical += tenant.critical
        gpu.dedicated += tenant.dedicated
        namespace = namespace_of(tenant.key)
        gpu.namespaces[namespace] = gpu.namespaces.get(namespace, 0) + 1

    def place(self, tenant: Tenant) -> None:
        self.tenants[tenant.key] = tenant
        for uuid in tenant.uuids:
            gpu = self.by_uuid[uuid]
            self._unfile(gpu)
            self._occupy(gpu, tenant)
            self._file(gpu)

    def remove(self, key: str) -> Tenant:
        tenant = self.tenants.pop(key)
        for uuid in tenant.uuids:
            gpu = self.by_uuid[uuid]
            self._unfile(gpu)
            del gpu.tenants[key]
            gpu.reserved -= tenant.budget_mib
            gpu.llm -= tenant.llm
            gpu.critical -= tenant.critical
            gpu.dedicated -= tenant.dedicated
            namespace = namespace_of(tenant.key)
            gpu.namespaces[namespace] -= 1
            if not gpu.namespaces[namespace]:
                del gpu.namespaces[namespace]
            self._file(gpu)
        return tenant

    @contextmanager
    def hidden(self, positions: frozenset[int]) -> Iterator[None]:
        """While inside, the GPUs at `positions` take no new tenant (every search passes them over)."""
        self._hidden = positions
        self._refile(positions)
        try:
            yield
        finally:
            self._hidden = frozenset()
            self._refile(positions)

    def holds_other_namespace(self, gpu: GpuState, namespace: str) -> bool:
        """Whether a server of `namespace` may not join `gpu`: one namespace per GPU is kept and a server
        of another namespace is there."""
        return self.one_namespace_per_gpu and any(held != namespace for held in gpu.namespaces)

    @contextmanager
    def serving(self, namespace: str) -> Iterator[None]:
        """While inside, the searches place a server of `namespace`: with one namespace per GPU, the GPUs
        holding servers of another namespace take no new tenant (nested: the innermost namespace holds)."""
        if not self.one_namespace_per_gpu:
            yield
            return
        outer = self._serving
        self._serve(namespace)
        try:
            yield
        finally:
            self._serve(outer)

    def _serve(self, namespace: str | None) -> None:
        if namespace == self._serving:
            return
        self._serving = namespace
        self._refile(frozenset(g.position for g in self.gpus if g.namespaces))

    def _refile(self, positions: frozenset[int]) -> None:
        for position in positions:
            gpu = self.gpus[position]
            self._unfile(gpu)
            self._file(gpu)

    # --- searches ----------------------------------------------------------------------------
    def best_single(
        self,
        need_on: Callable[[float], float],
        score: Scorer,
        *,
        vacant_only: bool = False,
        admits: Callable[[GpuState], bool] | None = None,
    ) -> tuple[GpuState | None, list[GpuState], list[GpuState]]:
        """The best-scored open GPU with room for need_on(total); runners-up (best first); bucket tops too small.

        A bucket's first entry is its best candidate; its second is kept only as a runner-up to explain.
        With `admits`, a bucket whose best candidate it refuses (the engine would fail there) counts as
        too small: the others in it have the same total and less free memory.
        """
        tops: list[tuple[Score, GpuState]] = []
        seconds: list[tuple[Score, GpuState]] = []
        too_small: list[GpuState] = []
        for key, bucket in self.buckets.items():
            if not bucket or (vacant_only and not key[2]):
                continue
            need = need_on(key[0])
            if -bucket[0][0] < need:
                too_small.append(self.gpus[bucket[0][3]])
                continue
            gpu = self.gpus[bucket[0][3]]
            if admits is not None and not admits(gpu):
                too_small.append(gpu)
                continue
            tops.append((score(gpu, need), gpu))
            if len(bucket) > 1 and -bucket[1][0] >= need:
                second = self.gpus[bucket[1][3]]
                seconds.append((score(second, need), second))
        if not tops:
            return None, [], sorted(too_small, key=lambda g: (-g.free, g.slot.node, g.slot.index))
        tops.sort(key=lambda item: item[0])
        runners_up = sorted(tops[1:] + seconds, key=lambda item: item[0])
        too_small.sort(key=lambda g: (-g.free, g.slot.node, g.slot.index))
        return tops[0][1], [g for _, g in runners_up], too_small

    def first_fitting(self, need: float, *, vacant_only: bool) -> GpuState | None:
        """The first open GPU in (node, index) order with `need` free."""
        index = self.first_fit_vacant if vacant_only else self.first_fit
        assert index is not None, "first-fit search outside the packing pass"
        position = index.first_at_least(need - 1e-6)
        return None if position is None else self.gpus[position]

    def best_fit(self, need: float, *, vacant_only: bool, exclude: frozenset[int]) -> GpuState | None:
        """The GPU with the least free memory that still holds `need` (keeps large holes for later)."""
        best: GpuState | None = None
        for key, bucket in self.buckets.items():
            if vacant_only and not key[2]:
                continue
            i = bisect_left(bucket, (-need, "\uffff", 1 << 30, 1 << 30)) - 1
            while i >= 0 and bucket[i][3] in exclude:
                i -= 1
            if i < 0:
                continue
            gpu = self.gpus[bucket[i][3]]
            if best is None or (gpu.free, gpu.slot.node, gpu.slot.index) < (best.free, best.slot.node, best.slot.index):
                best = gpu
        return best

    def leading_pivots(self, size: int, floor: float | None, count: int) -> list[GpuState]:
        """Per GPU bucket, the pivots (node_index.py) of the first `count` nodes for a group of `size`, most free
        first, with `floor` free: the `count` nodes a strategy ranks best for the group are among theirs."""
        self._refresh_nodes()
        pivots = self._pivots.get(size)
        if pivots is None:
            pivots = self._pivots[size] = NodePivots(size)
            for node in self.by_node:
                pivots.refresh(node, self.open_gpus(node))
        return [self.gpus[position] for position in pivots.leading(floor, count, EPS)]

    def first_group_node(self, size: int, need: float, *, vacant_only: bool) -> str | None:
        """The first node in inventory order with `size` open GPUs outside MIG (vacant ones with
        `vacant_only`) that each have `need` free."""
        self._refresh_nodes()
        index = self._first_groups.get((size, vacant_only))
        if index is None:
            index = self._first_groups[size, vacant_only] = FirstGroups(size, vacant_only, len(self.by_node))
            for node, at in self._node_position.items():
                index.refresh(at, self.open_gpus(node))
        first = index.first(need - EPS)
        return None if first is None else self.nodes[first]

    def _refresh_nodes(self) -> None:
        for node in self._changed:
            gpus = self.open_gpus(node)
            for pivots in self._pivots.values():
                pivots.refresh(node, gpus)
            for first_groups in self._first_groups.values():
                first_groups.refresh(self._node_position[node], gpus)
        self._changed.clear()

    def open_gpus(self, node: str) -> list[GpuState]:
        """GPUs of a node that may take a new server, most free first (ties by index); cached per node."""
        cached = self._open.get(node)
        if cached is None:
            cached = sorted(
                (g for g in self.by_node.get(node, ()) if g.key is not None), key=lambda g: (-g.free, g.slot.index)
            )
            self._open[node] = cached
        return cached


Group = list[GpuState]


def namespace_of(key: str) -> str:
    """The namespace of a server or replica key ("ns/name", "ns/name[1]")."""
    return key.partition("/")[0]


def groupable(gpus: Iterable[GpuState], size: int) -> list[GpuState]:
    """The GPUs a group of `size` may use: any for one GPU; no MIG device for tensor parallel."""
    return [g for g in gpus if size == 1 or not g.slot.mig]
