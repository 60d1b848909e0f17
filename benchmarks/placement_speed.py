"""Planning time per strategy, beside the greedy first pass alone, on synthetic fleets of nodes x 8 GPUs.

Cases (all by default, or one with --case):
  light      2,000 servers onto 4,000 GPUs (500 nodes), about 40% of the free memory asked;
  full       5,200 servers onto the same 4,000 GPUs: about 100% asked;
  full-2000  2,000 servers onto the same 4,000 GPUs, sizes scaled so that 100% of the free memory is asked;
  small-over 300 servers onto 30 GPUs (4 nodes), sizes scaled to ask 130%.
Targets: under 1 s each on 4,000 GPUs, under 0.5 s for small-over.

Run: python benchmarks/placement_speed.py [--case NAME] [--repeat R] [--seed S]
     python benchmarks/placement_speed.py --servers N --gpus N [--load L]   (one case of your own)
Prints, per strategy, the best wall time of R runs of plan() and of the greedy first pass alone
(pins, greedy, repair, shrink; no packing pass, no solver), and what each placed; then the best CPU
time of each (this process's: on a shared machine it moves less with the load than wall time).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import replace

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, Planner, plan
from vram_operator.placement.result import Plan
from vram_operator.placement.strategies import STRATEGY_NAMES, strategy_named

# (product name, MiB as the driver reports it) of the node types in the synthetic fleet.
NODE_TYPES = (
    ("NVIDIA H100 80GB HBM3", 81559),
    ("NVIDIA A100-SXM4-40GB", 40960),
    ("NVIDIA L40S", 46068),
    ("NVIDIA RTX A5500", 24564),
    ("NVIDIA L4", 23034),
    ("Tesla T4", 15360),
    ("NVIDIA GeForce RTX 4090", 24564),
)


# name: (servers, GPUs, share of the free memory asked, or None for the sizes as drawn)
CASES: dict[str, tuple[int, int, float | None]] = {
    "light": (2000, 4000, None),
    "full": (5200, 4000, None),
    "full-2000": (2000, 4000, 1.0),
    "small-over": (300, 30, 1.3),
}


def fleet(gpus: int, rng: random.Random) -> Inventory:
    slots: list[GpuSlot] = []
    for n in range((gpus + 7) // 8):
        name, total = NODE_TYPES[n % len(NODE_TYPES)]
        for index in range(min(8, gpus - 8 * n)):
            foreign = rng.choice((0, 0, 0, 300, 1200))
            slots.append(make_slot(f"node-{n:04d}", index, total, name=name, foreign_mib=foreign))
    return Inventory(tuple(slots))


def servers(count: int, rng: random.Random) -> list[ServerDemand]:
    out = []
    for i in range(count):
        kind = rng.random()
        key = f"team-{i % 40}/server-{i:05d}"
        if kind < 0.55:  # detectors, embedders, speech: a fixed footprint
            size = rng.randint(400, 4000)
            out.append(ServerDemand(key, "generic", size, size, latency_critical=rng.random() < 0.2))
        elif kind < 0.9:  # single-GPU LLMs that may shrink their KV cache
            size = rng.randint(6000, 40000)
            out.append(
                ServerDemand(
                    key,
                    "vllm",
                    size,
                    size * 0.7,
                    is_llm=True,
                    dedicated=rng.random() < 0.1,
                    latency_critical=rng.random() < 0.2,
                )
            )
        else:  # tensor-parallel LLMs
            size = rng.randint(15000, 60000)
            out.append(ServerDemand(key, "vllm", size, size * 0.8, is_llm=True, tensor_parallel=rng.choice((2, 4, 8))))
    return out


def existing(inventory: Inventory, count: int, rng: random.Random) -> Ledger:
    slots = rng.sample(inventory.slots, count)
    return Ledger(
        tuple(Reservation(f"kept/old-{i}", s.node, (s.uuid,), rng.randint(500, 3000)) for i, s in enumerate(slots))
    )


def scaled(demands: list[ServerDemand], inventory: Inventory, ledger: Ledger, load: float) -> list[ServerDemand]:
    """`demands` with budgets (and floors) scaled so that they ask `load` x the free memory."""
    free = sum(s.total_mib - s.foreign_mib - DEFAULT_MARGIN_MIB for s in inventory.slots)
    free -= sum(r.budget_mib * len(r.gpu_uuids) for r in ledger.reservations)
    largest = max(s.total_mib for s in inventory.slots) * 0.9
    factor = 1.0
    for _ in range(20):  # budgets capped at the largest GPU ask less than scaled: scale the others up again
        asked = sum(min(d.preferred_mib * factor, largest) * d.tensor_parallel for d in demands)
        if abs(asked - load * free) <= 0.001 * load * free:
            break
        factor *= load * free / asked
    out = []
    for d in demands:
        budget = float(round(min(d.preferred_mib * factor, largest)))
        out.append(replace(d, preferred_mib=budget, min_mib=float(round(budget * d.min_mib / d.preferred_mib))))
    return out


def greedy_only(inventory: Inventory, demands: list[ServerDemand], strategy: str, ledger: Ledger) -> Planner:
    planner = Planner(
        inventory=inventory,
        demands={d.key: d for d in demands},
        strategy=strategy_named(strategy),
        ledger=ledger,
        margin_mib=DEFAULT_MARGIN_MIB,
        manual=(),
        packing=None,
    )
    planner.run()
    return planner


def best_time(run: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """The best wall time and the best CPU time (this process's) of `repeat` runs, and what a run returned."""
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu, result


def measure(name: str, servers_count: int, gpus: int, load: float | None, *, repeat: int, seed: int) -> None:
    rng = random.Random(seed)
    inventory = fleet(gpus, rng)
    demands = servers(servers_count, rng)
    ledger = existing(inventory, max(1, gpus // 16), rng)
    if load is not None:
        demands = scaled(demands, inventory, ledger, load)
    free = sum(s.total_mib - s.foreign_mib - DEFAULT_MARGIN_MIB for s in inventory.slots)
    asked = sum(d.preferred_mib * d.tensor_parallel for d in demands)
    print(
        f"{name}: {len(demands)} servers ({asked / 1024:.0f} GiB asked, {100 * asked / free:.0f}% of free) onto "
        f"{len(inventory.slots)} GPUs"
    )
    print(
        f"  {'strategy':18} {'greedy s':>8} {'GiB':>7} {'plan s':>7} {'GiB':>7} {'placed':>6} {'unplaced':>8} "
        f"{'greedy cpu':>10} {'plan cpu':>8}"
    )
    for strategy in STRATEGY_NAMES:
        if strategy == "Manual":
            continue  # Manual places what it is told; its other servers go the VRAMBased way
        greedy_s, greedy_cpu, greedy = best_time(lambda s=strategy: greedy_only(inventory, demands, s, ledger), repeat)
        plan_s, plan_cpu, result = best_time(lambda s=strategy: plan(inventory, demands, s, ledger=ledger), repeat)
        assert isinstance(greedy, Planner) and isinstance(result, Plan)
        print(
            f"  {strategy:18} {greedy_s:8.3f} {greedy.placed_mib / 1024:7.0f} {plan_s:7.3f} "
            f"{result.placed_mib / 1024:7.0f} {len(result.placements):6d} {len(result.unplaced):8d} "
            f"{greedy_cpu:10.3f} {plan_cpu:8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="one of the cases (default: all)")
    parser.add_argument("--servers", type=int, help="a case of your own: this many servers ...")
    parser.add_argument("--gpus", type=int, default=4000, help="... onto this many GPUs (nodes of 8)")
    parser.add_argument("--load", type=float, help="... sizes scaled to ask this share of the free memory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.servers is not None:
        cases = {"custom": (args.servers, args.gpus, args.load)}
    else:
        cases = {args.case: CASES[args.case]} if args.case else CASES
    for name, (count, gpus, load) in cases.items():
        measure(name, count, gpus, load, repeat=args.repeat, seed=args.seed)


if __name__ == "__main__":
    main()
