"""Placement quality against the optimum: % of the optimal VRAM placed, greedy-only and per strategy.

Random over-committed heterogeneous fleets: 5-30 GPUs (nodes of 1-8 GPUs of 4-80 GB, mixed models,
foreign use, a few existing reservations, some dedicated, an unhealthy GPU now and then) and 30-300
servers (generic; LLMs of which half may shrink to 60-90% of their budget; tensor parallel 2/4, of
which half may shrink; some dedicated), sized to ask 100-150% of the free memory. The optimum is the
same mixed-integer program the planner uses (placement/solver.py: per-GPU room after foreign use,
reservations and margin; tensor parallel on one node with one budget per GPU; shrinkable budgets
anywhere within [floor, budget]; dedicated alone, also away from existing reservations), solved by
HiGHS without a node limit for --time-limit seconds; "optimum" is the best plan known (that or a
strategy's, whichever places more), and an instance the solver did not prove is counted with its
proven upper bound too. The baseline, beside each strategy, is its greedy first pass alone (pins,
greedy, repair, shrink: what plan() does before the packing pass and the solver).

Run: python benchmarks/placement_quality.py [--instances 60] [--seed 1] [--time-limit 60] [--jobs N]
                                            [--show-worst K]
(--show-worst lists, per column, the K instances furthest from the optimum by their number: instance n
is the n-th drawn from the seed, so a run with --instances n+1 ends with it.)
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, Planner, plan
from vram_operator.placement.solver import Gpu, Server, solve
from vram_operator.placement.strategies import strategy_named

STRATEGIES = ("VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced")
BASELINE = "greedy "  # + strategy: its first pass alone
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
    target = rng.randint(5, 30)
    slots: list[GpuSlot] = []
    node = 0
    while len(slots) < target:
        main = rng.choice(GPU_MODELS)
        for index in range(min(rng.choice((1, 2, 4, 8)), target - len(slots))):
            name, total = main if rng.random() < 0.7 else rng.choice(GPU_MODELS)
            foreign = rng.randint(200, int(total * 0.3)) if rng.random() < 0.3 else 0
            slots.append(
                make_slot(f"node-{node}", index, total, name=name, foreign_mib=foreign, healthy=rng.random() > 0.03)
            )
        node += 1
    inventory = Inventory(tuple(slots))
    kept = []
    for i, slot in enumerate(rng.sample(slots, min(len(slots), rng.randint(0, 4)))):
        kept.append(Reservation(f"kept/r{i}", slot.node, (slot.uuid,), rng.randint(300, 2000), rng.random() < 0.3))
    ledger = Ledger(tuple(kept))

    capacity = sum(max(0.0, s.total_mib - s.foreign_mib - DEFAULT_MARGIN_MIB) for s in slots if s.usable)
    largest = max(s.total_mib for s in slots)
    count = min(300, max(30, len(slots) * rng.randint(4, 10)))
    raw: list[tuple[str, float, float, int, bool, bool]] = []  # engine, size, floor share, tp, llm, dedicated
    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:
            raw.append(("generic", rng.uniform(300, 6000), 1.0, 1, False, rng.random() < 0.05))
        elif kind < 0.85:
            shrink = rng.uniform(0.6, 0.9) if rng.random() < 0.5 else 1.0
            raw.append(("vllm", rng.uniform(4000, 40000), shrink, 1, True, rng.random() < 0.08))
        else:
            shrink = rng.uniform(0.7, 0.9) if rng.random() < 0.5 else 1.0
            raw.append(("vllm", rng.uniform(4000, 30000), shrink, rng.choice((2, 4)), True, False))
    load = rng.uniform(1.0, 1.5)
    scale = load * capacity / sum(size * tp for _, size, _, tp, _, _ in raw)
    demands = []
    for i, (engine, size, share, tp, llm, dedicated) in enumerate(raw):
        budget = float(round(min(max(256.0, size * scale), largest * 0.9)))
        demands.append(
            ServerDemand(
                f"ns/s{i:03d}",
                engine,
                budget,
                float(round(budget * share)),
                tensor_parallel=tp,
                is_llm=llm,
                dedicated=dedicated,
                latency_critical=rng.random() < 0.3,
            )
        )
    return Instance(inventory, ledger, tuple(demands))


def problem(instance: Instance) -> tuple[list[Gpu], list[Server]]:
    """The instance as the solver sees it: usable GPUs not held by a dedicated reservation, with their room."""
    gpus = []
    for slot in instance.inventory.slots:
        kept = instance.ledger.reservations_on(slot.uuid)
        if not slot.usable or any(r.dedicated for r in kept):
            continue
        room = slot.total_mib - slot.foreign_mib - DEFAULT_MARGIN_MIB - sum(r.budget_mib for r in kept)
        gpus.append(Gpu(slot.node, room, vacant=not kept, mig=slot.mig))
    servers = [Server(d.key, d.preferred_mib, d.min_mib, d.tensor_parallel, d.dedicated) for d in instance.demands]
    return gpus, servers


def greedy_only(instance: Instance, strategy: str) -> float:
    """VRAM placed by the planner's first pass alone (no packing pass, no solver)."""
    planner = Planner(
        inventory=instance.inventory,
        demands={d.key: d for d in instance.demands},
        strategy=strategy_named(strategy),
        ledger=instance.ledger,
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=None,
    )
    planner.run()
    return planner.placed_mib


@dataclass(frozen=True)
class Outcome:
    gpus: int
    servers: int
    best: float  # the most VRAM any plan here placed (the optimum when proven)
    bound: float  # no plan places more
    proven: bool
    results: dict[str, float]
    solver_s: float
    plan_s: float  # the four strategies together


def evaluate(args: tuple[int, int, float]) -> Outcome:
    seed, n, time_limit = args
    rng = random.Random(seed)
    for _ in range(n):
        make_instance(rng)
    instance = make_instance(rng)
    gpus, servers = problem(instance)
    start = time.perf_counter()
    exact = solve(gpus, servers, nodes=None, seconds=time_limit)
    solver_s = time.perf_counter() - start
    results = {BASELINE + name: greedy_only(instance, name) for name in STRATEGIES}
    start = time.perf_counter()
    for name in STRATEGIES:
        results[name] = plan(instance.inventory, instance.demands, name, ledger=instance.ledger).placed_mib
    plan_s = time.perf_counter() - start
    best = max(exact.placed_mib, *results.values())
    return Outcome(
        len(instance.inventory.slots),
        len(instance.demands),
        best,
        max(best, exact.bound_mib),
        exact.optimal or best >= exact.bound_mib - 0.5,
        results,
        solver_s,
        plan_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=60.0, help="HiGHS seconds per instance for the optimum")
    parser.add_argument("--jobs", type=int, default=1, help="instances evaluated in parallel")
    parser.add_argument("--show-worst", type=int, default=0, metavar="K", help="list the K worst instances")
    args = parser.parse_args()
    work = [(args.seed, n, args.time_limit) for n in range(args.instances)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(evaluate, work))
    else:
        outcomes = [evaluate(w) for w in work]
    columns = [column for name in STRATEGIES for column in (BASELINE + name, name)]
    unproven = sum(not o.proven for o in outcomes)
    gpus = sorted(o.gpus for o in outcomes)
    servers = sorted(o.servers for o in outcomes)
    print(
        f"{args.instances} instances (seed {args.seed}): {gpus[0]}-{gpus[-1]} GPUs, {servers[0]}-{servers[-1]} servers;"
        f" optimum not proven within {args.time_limit:.0f}s: {unproven}"
    )
    average = 1000 * sum(o.plan_s for o in outcomes) / (args.instances * len(STRATEGIES))
    most = 1000 * max(o.plan_s / len(STRATEGIES) for o in outcomes)
    print(
        f"HiGHS {sum(o.solver_s for o in outcomes):.1f}s in all; planner {average:.0f}ms per plan on average,"
        f" {most:.0f}ms at most (average of an instance's four)"
    )
    print(f"{'% of the best plan known':26} {'average':>8} {'worst':>8} {'optimal in':>11} {'worst vs bound':>15}")
    ratios: dict[str, list[float]] = {}
    for name in columns:
        values = [100.0 if o.best <= 0 else 100.0 * o.results[name] / o.best for o in outcomes]
        bounded = [100.0 if o.bound <= 0 else 100.0 * o.results[name] / o.bound for o in outcomes]
        ratios[name] = values
        hits = sum(v >= 99.999 for v in values)
        print(
            f"{name:26} {statistics.fmean(values):8.2f} {min(values):8.2f} {hits:6d}/{len(values)} {min(bounded):15.2f}"
        )
    for name, values in ratios.items():
        if args.show_worst:
            worst = sorted(range(len(values)), key=lambda n: (values[n], n))[: args.show_worst]
            print(f"worst {name}: " + ", ".join(f"#{n} {values[n]:.2f}%" for n in worst))


if __name__ == "__main__":
    main()
