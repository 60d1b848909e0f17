"""Repair for servers left unplaced by the greedy pass: make room (move, or displace smaller, placed
servers), trade placed servers for unplaced ones that fill a GPU better (exchange), and re-pack one node
at a time (recreate). Every step raises the VRAM placed or is rolled back; all are bounded.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.diagnosis import refusal, where
from vram_operator.placement.exchange import best_fill
from vram_operator.placement.occupancy import EPS, GpuState, Group, Occupancy, Tenant, groupable, namespace_of

if TYPE_CHECKING:
    from vram_operator.placement.planner import Packing, Planner

# Repair is bounded: at most this many candidate GPUs (or nodes) per unplaced server, this many
# rounds over the unplaced servers, and this many GPU visits in total (keeps 4,000-GPU plans fast).
REPAIR_CANDIDATES = 16
REPAIR_ROUNDS = 3
REPAIR_GPU_VISITS = 60_000
Journal = list[tuple[Tenant, Tenant | None]]  # (tenant as it was, where it went or None if evicted)


def repair(planner: Planner, pending: list[ServerDemand]) -> list[ServerDemand]:
    """Rounds over the unplaced: place freely, else make room by moving (then displacing) placed servers."""
    for _ in range(REPAIR_ROUNDS):
        if not pending:
            break
        progress = False
        left: list[ServerDemand] = []
        for demand in pending:
            if (
                planner.place_free(demand, shrink=False)
                or make_room(planner, demand, evict=False)
                or make_room(planner, demand, evict=True)
            ):
                progress = True
            else:
                left.append(demand)
        pending = sorted(left + planner.evicted, key=planner.order_key)
        planner.evicted = []
        if not progress:
            break
    return pending


def recreate(planner: Planner, pending: list[ServerDemand], orders: Sequence[Packing]) -> list[ServerDemand]:
    """Node by node: take the movable servers off one node and best-fit them and the unplaced ones back,
    in a few orders; keep the first result that places more VRAM, else put everything back."""
    for gpus in planner.occupancy.by_node.values():
        if not pending or planner.visits > REPAIR_GPU_VISITS:
            break
        cleared = {t.key: t for g in gpus for t in g.tenants.values() if t.movable}
        if not cleared:
            continue
        before = planner.placed_mib
        saved = {server: planner.decisions.pop(server) for server in cleared}
        for server in cleared:
            planner.occupancy.remove(server)
        candidates = [d.demand for d in saved.values()] + pending
        for order in orders:
            planner.visits += len(candidates) * len(gpus)
            placed = [d for d in sorted(candidates, key=order.key) if place_best_fit(planner, d)]
            if planner.placed_mib > before + EPS:
                pending = [d for d in candidates if d.key not in planner.decisions]
                break
            for demand in placed:
                planner.occupancy.remove(demand.key)
                del planner.decisions[demand.key]
        else:
            for server, tenant in cleared.items():
                planner.occupancy.place(tenant)
                planner.decisions[server] = saved[server]
    return sorted(pending, key=planner.order_key)


def place_best_fit(planner: Planner, demand: ServerDemand) -> bool:
    if demand.fixed_utilization is not None:
        return planner.place_free(demand, shrink=False)
    need = demand.preferred_mib
    with planner.occupancy.serving(demand.namespace):
        group = best_fit_group(planner, need, demand.tensor_parallel, dedicated=demand.dedicated, keep=frozenset())
    if group is None:
        return False
    gpus = [planner.occupancy.by_uuid[u] for u in group]
    if refusal(demand, gpus, need) is not None:
        return False
    planner.commit(demand, gpus, need, runners_up=[], too_small=[], why="best fit when re-packing a node")
    return True


def exchange(planner: Planner, pending: list[ServerDemand]) -> list[ServerDemand]:
    """Local search, GPU by GPU: trade up to two placed servers for up to two unplaced ones that use more
    of the GPU. Each trade raises the VRAM placed, so it ends; traded-out servers try to go elsewhere."""
    tradable = [d for d in pending if is_tradable(d)]
    stuck = [d for d in pending if not is_tradable(d)]
    for _ in range(REPAIR_ROUNDS):
        improved = False
        for gpu in planner.occupancy.gpus:
            if not tradable or planner.visits > REPAIR_GPU_VISITS:
                break
            planner.visits += 1
            if gpu.key is None:
                continue
            tradable.sort(key=lambda d: (d.preferred_mib, d.key))
            welcome = [d for d in tradable if joins(planner.occupancy, gpu, d)]
            out, into = best_trade(gpu, [d.preferred_mib for d in welcome])
            if not into:
                continue
            improved = True
            incoming = [welcome[i] for i in into]
            tradable = [d for d in tradable if d not in incoming]
            for tenant in out:
                planner.occupancy.remove(tenant.key)
                tradable.append(planner.decisions.pop(tenant.key).demand)
            traded = ", ".join(t.key for t in out)
            for demand in incoming:
                if refusal(demand, [gpu], demand.preferred_mib) is not None:
                    tradable.append(demand)
                    continue
                why = f"exchange: fills this GPU better than {traded}" if traded else "exchange: fills this GPU"
                planner.commit(demand, [gpu], demand.preferred_mib, runners_up=[], too_small=[], why=why)
            tradable = [d for d in tradable if not planner.place_free(d, shrink=False)]
        if not improved:
            break
    return sorted(tradable + stuck, key=planner.order_key)


def joins(occupancy: Occupancy, gpu: GpuState, demand: ServerDemand) -> bool:
    """Whether `demand` may be traded onto `gpu`: with one namespace per GPU, only onto a GPU its
    namespace already holds (a vacant GPU would take traded servers of any namespace at once)."""
    if not occupancy.one_namespace_per_gpu:
        return True
    return set(gpu.namespaces) == {demand.namespace}


def is_tradable(demand: ServerDemand) -> bool:
    return demand.tensor_parallel == 1 and not demand.dedicated and demand.fixed_utilization is None


def best_trade(gpu: GpuState, sizes: list[float]) -> tuple[list[Tenant], tuple[int, ...]]:
    """The placed servers to take off `gpu` (none, one or two) and the unplaced ones to put on it."""
    movable = [t for t in gpu.tenants.values() if t.movable and not t.dedicated and len(t.uuids) == 1]
    options: list[list[Tenant]] = [[]] + [[t] for t in movable]
    options += [[a, b] for i, a in enumerate(movable) for b in movable[i + 1 :]]
    best: tuple[float, list[Tenant], tuple[int, ...]] = (EPS, [], ())
    for out in options:
        freed = sum(t.budget_mib for t in out)
        into = best_fill(sizes, gpu.free + freed + EPS)
        gain = sum(sizes[i] for i in into) - freed
        if gain > best[0]:
            best = (gain, out, into)
    return best[1], best[2]


def room_possible(gpu: GpuState, demand: ServerDemand, need: float) -> bool:
    if not gpu.slot.usable:
        return False
    fixed = sum(t.budget_mib for t in gpu.tenants.values() if not t.movable)
    if (demand.dedicated or gpu.dedicated) and fixed > 0:
        return False
    return gpu.capacity - fixed >= need - EPS


def make_room(planner: Planner, demand: ServerDemand, *, evict: bool) -> bool:
    """Move (or with `evict`, displace smaller) placed servers so that `demand` fits at its preferred budget."""
    if planner.visits > REPAIR_GPU_VISITS or demand.fixed_utilization is not None:
        return False
    need = demand.budget_on((1.0,))
    size = demand.tensor_parallel
    candidates: list[tuple[float, str, int, Group]] = []
    for node, gpus in planner.occupancy.by_node.items():
        planner.visits += len(gpus)
        roomy = [
            g
            for g in groupable(gpus, size)
            if room_possible(g, demand, need) and not planner.occupancy.holds_other_namespace(g, demand.namespace)
        ]
        if len(roomy) < size:
            continue
        roomy.sort(key=lambda g: (need - g.free, g.slot.index))
        if size == 1:
            candidates += [(need - g.free, node, g.slot.index, [g]) for g in roomy]
        else:
            group = roomy[:size]
            candidates.append((sum(need - g.free for g in group), node, 0, group))
    for _, _, _, group in heapq.nsmallest(REPAIR_CANDIDATES, candidates, key=lambda c: c[:3]):
        journal: Journal = []
        positions = frozenset(g.position for g in group)
        if all(
            clear(planner, g, need, vacant=demand.dedicated, keep=positions, journal=journal, evict=evict)
            for g in group
        ):
            displaced = [old for old, new in journal if new is None]
            gain = need * size - sum(t.budget_mib * len(t.uuids) for t in displaced)
            if (not displaced or gain > EPS) and refusal(demand, group, need) is None:
                commit_repair(planner, demand, group, need, journal)
                return True
        rollback(planner.occupancy, journal)
    return False


def clear(
    planner: Planner, gpu: GpuState, need: float, *, vacant: bool, keep: frozenset[int], journal: Journal, evict: bool
) -> bool:
    """Move tenants off `gpu` until `need` fits (all of them when `vacant`); False when it cannot."""
    movable = sorted((t for t in gpu.tenants.values() if t.movable), key=lambda t: (t.budget_mib, t.key))
    if vacant or gpu.dedicated:  # a dedicated tenant is alone: it goes, and the GPU is vacant
        chosen = movable
    else:
        deficit = need - gpu.free
        if deficit <= EPS:
            return True
        single = next((t for t in movable if t.budget_mib >= deficit - EPS), None)
        chosen = [single] if single else []
        if single is None:
            for tenant in reversed(movable):
                chosen.append(tenant)
                deficit -= tenant.budget_mib
                if deficit <= EPS:
                    break
            else:
                return False
    for tenant in chosen:
        planner.occupancy.remove(tenant.key)
        target = relocation(planner, tenant, keep | {gpu.position})
        if target is None:
            journal.append((tenant, None))
            if not evict:
                return False
            continue
        moved = replace(tenant, uuids=target)
        planner.occupancy.place(moved)
        journal.append((tenant, moved))
    return gpu.free >= need - EPS and (not vacant or gpu.vacant)


def relocation(planner: Planner, tenant: Tenant, keep: frozenset[int]) -> tuple[str, ...] | None:
    """Where a displaced tenant fits best (least free memory left), avoiding the GPUs in `keep`."""
    with planner.occupancy.serving(namespace_of(tenant.key)):
        target = best_fit_group(planner, tenant.budget_mib, len(tenant.uuids), dedicated=tenant.dedicated, keep=keep)
    demand = planner.demands.get(tenant.key)
    if target is None or demand is None:
        return target
    gpus = [planner.occupancy.by_uuid[u] for u in target]
    return target if refusal(demand, gpus, tenant.budget_mib) is None else None


def best_fit_group(
    planner: Planner, need: float, size: int, *, dedicated: bool, keep: frozenset[int]
) -> tuple[str, ...] | None:
    """`size` open GPUs of one node with `need` free each that leave the least free memory, or None."""
    if size == 1:
        gpu = planner.occupancy.best_fit(need, vacant_only=dedicated, exclude=keep)
        return None if gpu is None else (gpu.slot.uuid,)
    best: tuple[float, tuple[str, ...]] | None = None
    for gpus in planner.occupancy.by_node.values():
        planner.visits += len(gpus)
        fitting = sorted(
            (
                g
                for g in gpus
                if g.key is not None
                and not g.slot.mig
                and g.position not in keep
                and g.free >= need - EPS
                and (g.vacant or not dedicated)
            ),
            key=lambda g: (g.free, g.slot.index),
        )[:size]
        if len(fitting) == size:
            left = sum(g.free for g in fitting)
            if best is None or left < best[0]:
                best = (left, tuple(g.slot.uuid for g in sorted(fitting, key=lambda g: g.slot.index)))
    return None if best is None else best[1]


def rollback(occupancy: Occupancy, journal: Journal) -> None:
    """Undo the moves in `journal`, last first."""
    for old, new in reversed(journal):
        if new is not None:
            occupancy.remove(new.key)
        occupancy.place(old)


def commit_repair(planner: Planner, demand: ServerDemand, group: Group, need: float, journal: Journal) -> None:
    """Book `demand` on the room repair made, and tell each moved server why it moved."""
    notes = []
    for old, new in journal:
        source = where(planner.occupancy, old.uuids)
        if new is None:
            notes.append(f"displaced {old.key} ({old.budget_mib:.0f}MiB) from {source}")
            planner.evicted.append(planner.decisions.pop(old.key).demand)
            continue
        target = where(planner.occupancy, new.uuids)
        notes.append(f"moved {old.key} from {source} to {target}")
        moved = planner.decisions[old.key]
        moved.explanation = (
            f"{planner.strategy.name}: moved to {target} (tightest GPU that holds its {new.budget_mib:.0f}MiB) "
            f"to make room for {demand.key} on {source}."
        )
    why = "repair made room: " + "; ".join(notes) if notes else "repair"
    planner.commit(demand, group, need, runners_up=[], too_small=[], why=why)
