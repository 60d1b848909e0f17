"""Planning time for a large fleet: 2,000 servers onto 4,000 GPUs (500 nodes x 8), per strategy.

Run: python benchmarks/placement_speed.py [--servers N] [--nodes N] [--repeat R] [--seed S]
Prints, per strategy, the best wall time of R runs and what was placed. Target: under 1 s each.
"""

from __future__ import annotations

import argparse
import random
import time

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.inventory import GpuSlot, Inventory, make_slot
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import plan
from vram_operator.placement.strategies import STRATEGY_NAMES

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


def fleet(nodes: int, rng: random.Random) -> Inventory:
    slots: list[GpuSlot] = []
    for n in range(nodes):
        name, total = NODE_TYPES[n % len(NODE_TYPES)]
        for index in range(8):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    inventory = fleet(args.nodes, rng)
    demands = servers(args.servers, rng)
    ledger = existing(inventory, args.nodes // 2, rng)
    asked = sum(d.preferred_mib * d.tensor_parallel for d in demands)
    print(
        f"{len(demands)} servers ({asked / 1024:.0f} GiB asked) onto {len(inventory.slots)} GPUs on {args.nodes} nodes"
    )
    print(f"{'strategy':18} {'best s':>7} {'placed':>7} {'unplaced':>8} {'placed GiB':>10}")
    for name in STRATEGY_NAMES:
        if name == "Manual":
            continue  # Manual places what it is told; its other servers go the VRAMBased way
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = plan(inventory, demands, name, ledger=ledger)
            best = min(best, time.perf_counter() - start)
        placed = f"{len(result.placements):7d} {len(result.unplaced):8d} {result.placed_mib / 1024:10.0f}"
        print(f"{name:18} {best:7.3f} {placed}")


if __name__ == "__main__":
    main()
