"""Placement quality against the exact optimum: % of the optimal VRAM placed, per strategy.

Small random heterogeneous fleets (2-6 nodes, 1-8 GPUs of 4-80 GB each, foreign use, a few existing
reservations, an unhealthy GPU now and then) and 5-40 servers (generic, LLM, tensor parallel 2/4,
some dedicated), sized to load the fleet at 70-140%. Each instance is solved exactly as an integer
program with pulp and its bundled CBC solver: maximise the VRAM placed subject to the planner's rules
(per-GPU capacity after foreign use, reservations and margin; tensor parallel on one node with the
same budget per GPU; dedicated alone, also away from existing reservations; unusable GPUs take none).
Plain first-fit decreasing is the baseline.

Run: python benchmarks/placement_quality.py [--instances 200] [--seed 1] [--time-limit 20] [--show-worst K]
(--show-worst lists, per strategy, the K instances furthest from the optimum by their number: instance n
is the n-th drawn from the seed, so a run with --instances n+1 ends with it.)
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

import pulp

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan

STRATEGIES = ("VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced")
GPU_MODELS = (
    ("NVIDIA RTX A400", 4094),
    ("NVIDIA RTX A2000", 8192),
    ("NVIDIA GeForce RTX 3060", 12288),
    ("Tesla T4", 15360),
    ("NVIDIA RTX A5500", 24564),
    ("NVIDIA L4", 23034),
    ("NVIDIA A100-PCIE-40GB", 40960),
    ("NVIDIA L40S", 46068),
    ("NVIDIA H100 80GB HBM3", 81559),
)


@dataclass(frozen=True)
class Instance:
    inventory: Inventory
    ledger: Ledger
    demands: tuple[ServerDemand, ...]


def make_instance(rng: random.Random) -> Instance:
    slots: list[GpuSlot] = []
    for n in range(rng.randint(2, 6)):
        main = rng.choice(GPU_MODELS)
        for index in range(rng.randint(1, 8)):
            name, total = main if rng.random() < 0.7 else rng.choice(GPU_MODELS)
            foreign = rng.randint(200, int(total * 0.3)) if rng.random() < 0.4 else 0
            slots.append(
                make_slot(f"node-{n}", index, total, name=name, foreign_mib=foreign, healthy=rng.random() > 0.03)
            )
    inventory = Inventory(tuple(slots))
    kept = []
    for i, slot in enumerate(rng.sample(slots, min(len(slots), rng.randint(0, 3)))):
        kept.append(Reservation(f"kept/r{i}", slot.node, (slot.uuid,), rng.randint(300, 2000), rng.random() < 0.3))
    ledger = Ledger(tuple(kept))

    capacity = sum(max(0.0, s.total_mib - s.foreign_mib - DEFAULT_MARGIN_MIB) for s in slots if s.usable)
    largest = max(s.total_mib for s in slots)
    raw: list[tuple[str, float, int, bool, bool]] = []
    for _ in range(rng.randint(5, 40)):
        kind = rng.random()
        if kind < 0.5:
            raw.append(("generic", rng.uniform(300, 6000), 1, False, rng.random() < 0.1))
        elif kind < 0.85:
            raw.append(("vllm", rng.uniform(4000, 40000), 1, True, rng.random() < 0.1))
        else:
            raw.append(("vllm", rng.uniform(4000, 30000), rng.choice((2, 4)), True, False))
    load = rng.uniform(0.7, 1.4)
    scale = load * capacity / sum(size * tp for _, size, tp, _, _ in raw)
    demands = []
    for i, (engine, size, tp, llm, dedicated) in enumerate(raw):
        budget = float(round(min(max(256.0, size * scale), largest * 0.9)))
        demands.append(
            ServerDemand(
                f"ns/s{i:02d}",
                engine,
                budget,
                budget,
                tensor_parallel=tp,
                is_llm=llm,
                dedicated=dedicated,
                latency_critical=rng.random() < 0.3,
            )
        )
    return Instance(inventory, ledger, tuple(demands))


def capacities(instance: Instance) -> dict[str, float]:
    """Free MiB per usable GPU after foreign use, kept reservations and margin (closed GPUs left out)."""
    out = {}
    for slot in instance.inventory.slots:
        kept = instance.ledger.reservations_on(slot.uuid)
        if not slot.usable or any(r.dedicated for r in kept):
            continue
        out[slot.uuid] = slot.total_mib - slot.foreign_mib - DEFAULT_MARGIN_MIB - sum(r.budget_mib for r in kept)
    return out


def optimum(instance: Instance, time_limit: float) -> tuple[float, bool]:
    """(max VRAM placed, proven optimal) by integer programming."""
    cap = capacities(instance)
    occupied = {s.uuid for s in instance.inventory.slots if instance.ledger.reservations_on(s.uuid)}
    nodes = {n: [s.uuid for s in instance.inventory.on_node(n) if s.uuid in cap] for n in instance.inventory.nodes}
    problem = pulp.LpProblem("placement", pulp.LpMaximize)
    x: dict[tuple[int, str], pulp.LpVariable] = {}
    for i, d in enumerate(instance.demands):
        for uuid, room in cap.items():
            if room >= d.preferred_mib and not (d.dedicated and uuid in occupied):
                x[i, uuid] = pulp.LpVariable(f"x_{i}_{len(x)}", cat="Binary")
    for i, d in enumerate(instance.demands):
        mine = [v for (j, _), v in x.items() if j == i]
        if d.tensor_parallel == 1:
            problem += pulp.lpSum(mine) <= 1
            continue
        on_node = []
        for n, uuids in nodes.items():
            z = pulp.LpVariable(f"z_{i}_{n}", cat="Binary")
            on_node.append(z)
            problem += pulp.lpSum(x[i, u] for u in uuids if (i, u) in x) == d.tensor_parallel * z
        problem += pulp.lpSum(on_node) <= 1
    for uuid, room in cap.items():
        here = [(i, v) for (i, u), v in x.items() if u == uuid]
        problem += pulp.lpSum(instance.demands[i].preferred_mib * v for i, v in here) <= room
        alone = [v for i, v in here if instance.demands[i].dedicated]
        if alone:  # at most one dedicated server, and then nobody else
            for _, v in here:
                problem += v + pulp.lpSum(w for w in alone if w is not v) <= 1
    problem += pulp.lpSum(instance.demands[i].preferred_mib * v for (i, _), v in x.items())
    status = problem.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, threads=1, gapRel=0))
    value = pulp.value(problem.objective) or 0.0
    return float(value), pulp.LpStatus[status] == "Optimal"


def first_fit_decreasing(instance: Instance) -> float:
    """Baseline: largest first onto the first GPU (or first node's lowest GPUs) in (node, index) order with room."""
    free = capacities(instance)
    vacant = {u for u in free if not instance.ledger.reservations_on(u)}
    closed: set[str] = set()
    placed = 0.0
    for d in sorted(instance.demands, key=lambda d: (-d.preferred_mib * d.tensor_parallel, d.server)):
        for node in instance.inventory.nodes:
            fits = [
                s.uuid
                for s in instance.inventory.on_node(node)
                if s.uuid in free
                and s.uuid not in closed
                and free[s.uuid] >= d.preferred_mib
                and (s.uuid in vacant or not d.dedicated)
            ]
            if len(fits) >= d.tensor_parallel:
                for uuid in fits[: d.tensor_parallel]:
                    free[uuid] -= d.preferred_mib
                    vacant.discard(uuid)
                    if d.dedicated:
                        closed.add(uuid)
                placed += d.preferred_mib * d.tensor_parallel
                break
    return placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=20.0, help="CBC seconds per instance")
    parser.add_argument("--show-worst", type=int, default=0, metavar="K", help="list the K worst instances")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ratios: dict[str, list[float]] = {name: [] for name in ("FirstFitDecreasing", *STRATEGIES)}
    unproven = 0
    solver_time = plan_time = 0.0
    for _ in range(args.instances):
        instance = make_instance(rng)
        start = time.perf_counter()
        best, proven = optimum(instance, args.time_limit)
        solver_time += time.perf_counter() - start
        unproven += not proven
        results = {"FirstFitDecreasing": first_fit_decreasing(instance)}
        for name in STRATEGIES:
            start = time.perf_counter()
            results[name] = plan(instance.inventory, instance.demands, name, ledger=instance.ledger).placed_mib
            plan_time += time.perf_counter() - start
        for name, value in results.items():
            ratios[name].append(100.0 if best <= 0 else 100.0 * value / best)
    print(f"{args.instances} instances (seed {args.seed}); ILP not proven optimal within the limit: {unproven}")
    print(
        f"CBC {solver_time:.1f}s in all; planner {1000 * plan_time / (args.instances * len(STRATEGIES)):.1f}ms per plan"
    )
    print(f"{'% of optimal VRAM placed':26} {'average':>8} {'worst':>8} {'optimal in':>11}")
    for name, values in ratios.items():
        hits = sum(v >= 99.999 for v in values)
        print(f"{name:26} {statistics.fmean(values):8.2f} {min(values):8.2f} {hits:6d}/{len(values)}")
    for name, values in ratios.items():
        if args.show_worst and name != "FirstFitDecreasing":
            worst = sorted(range(len(values)), key=lambda n: (values[n], n))[: args.show_worst]
            print(f"worst {name}: " + ", ".join(f"#{n} {values[n]:.2f}%" for n in worst))


if __name__ == "__main__":
    main()
