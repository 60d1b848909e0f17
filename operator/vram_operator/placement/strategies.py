"""Placement strategies: the order servers are placed in and how each ranks a GPU for a server.

Every strategy works on the same rules and passes (see planner.py); a strategy only decides order
and preference. Scores are tuples, lower is better, and end with (node, index) so ties are
deterministic. Within one (total, bandwidth, tenancy) bucket every score prefers more free memory,
which is what lets the fleet search look at one GPU per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vram_operator.placement.demand import ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.occupancy import GpuState, Score

StrategyName = Literal["Manual", "VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced"]
STRATEGY_NAMES: tuple[StrategyName, ...] = ("Manual", "VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced")


@dataclass(frozen=True)
class Strategy:
    """Base: largest first onto the GPU with the most free memory (VRAMBased)."""

    name: StrategyName = "VRAMBased"

    @property
    def allows_overcommit(self) -> bool:
        """Only Manual may break the memory invariant (with a warning)."""
        return False

    def priority(self, demand: ServerDemand) -> int:
        """Servers with a lower priority are placed first (before size is considered)."""
        return 0

    def order_key(self, demand: ServerDemand) -> tuple[int, int, int, float, str]:
        # Pins have no choice and dedicated servers need a vacant GPU: both go before the rest.
        size = demand.preferred_mib * demand.tensor_parallel
        return (not demand.pinned, self.priority(demand), not demand.dedicated, -size, demand.key)

    def score(self, demand: ServerDemand, gpu: GpuState, need: float) -> Score:
        if demand.dedicated:
            return dedicated_score(gpu)
        return (-gpu.free, gpu.slot.node, gpu.slot.index)

    def why(self, demand: ServerDemand, gpu: GpuState, need: float) -> str:
        """Why the chosen GPU won, in words."""
        if demand.dedicated:
            return DEDICATED_WHY
        return f"most free memory ({gpu.free:.0f}MiB)"


# A dedicated server occupies its whole GPU whatever its size: the smallest vacant GPU that holds it
# wastes least and keeps large GPUs for servers that need them.
DEDICATED_WHY = "dedicated: smallest vacant GPU that holds it"


def dedicated_score(gpu: GpuState) -> Score:
    return (gpu.slot.total_mib, -gpu.free, gpu.slot.node, gpu.slot.index)


@dataclass(frozen=True)
class VRAMBased(Strategy):
    name: StrategyName = "VRAMBased"


@dataclass(frozen=True)
class Manual(Strategy):
    """Manual assignments as given (over-commit allowed with a warning); others as VRAMBased."""

    name: StrategyName = "Manual"

    @property
    def allows_overcommit(self) -> bool:
        return True


@dataclass(frozen=True)
class LatencyOptimized(Strategy):
    """Latency-critical servers first, onto the fastest (then largest) GPUs; others keep off them."""

    name: StrategyName = "LatencyOptimized"

    def priority(self, demand: ServerDemand) -> int:
        return 0 if demand.latency_critical else 1

    def score(self, demand: ServerDemand, gpu: GpuState, need: float) -> Score:
        slot = gpu.slot
        if demand.latency_critical:
            # A GPU already serving another latency-critical server is a worse pick than an idle one.
            return (-slot.bandwidth_gbps, gpu.critical > 0, -slot.total_mib, -gpu.free, slot.node, slot.index)
        if demand.dedicated:
            return dedicated_score(gpu)
        return (gpu.critical > 0, -gpu.free, slot.node, slot.index)

    def why(self, demand: ServerDemand, gpu: GpuState, need: float) -> str:
        if demand.latency_critical:
            return f"latency-critical: fastest GPU with room ({gpu.slot.bandwidth_gbps:.0f}GB/s memory bandwidth)"
        if demand.dedicated:
            return DEDICATED_WHY
        if gpu.critical:
            return f"most free memory ({gpu.free:.0f}MiB); every GPU without latency-critical servers was full"
        return f"no latency-critical neighbours, most free memory ({gpu.free:.0f}MiB)"


@dataclass(frozen=True)
class IsolationFirst(Strategy):
    """LLMs first, each alone on the largest vacant GPU; the other servers share the remaining GPUs."""

    name: StrategyName = "IsolationFirst"

    def priority(self, demand: ServerDemand) -> int:
        return 0 if demand.is_llm else 1

    def score(self, demand: ServerDemand, gpu: GpuState, need: float) -> Score:
        slot = gpu.slot
        if demand.dedicated:
            return dedicated_score(gpu)
        if demand.is_llm:
            return (not gpu.vacant, -slot.total_mib, -gpu.free, slot.node, slot.index)
        return (gpu.llm > 0, -gpu.free, slot.node, slot.index)

    def why(self, demand: ServerDemand, gpu: GpuState, need: float) -> str:
        if demand.dedicated:
            return DEDICATED_WHY
        if demand.is_llm:
            alone = (
                "largest vacant GPU" if gpu.vacant else "no vacant GPU had room; shares the one with most free memory"
            )
            return f"LLM: {alone}"
        if gpu.llm:
            return f"every GPU without an LLM was full; most free memory ({gpu.free:.0f}MiB)"
        return f"shares a GPU without an LLM, most free memory ({gpu.free:.0f}MiB)"


@dataclass(frozen=True)
class Balanced(Strategy):
    """Each server onto the GPU whose share of memory in use stays lowest, evening out use."""

    name: StrategyName = "Balanced"

    def score(self, demand: ServerDemand, gpu: GpuState, need: float) -> Score:
        slot = gpu.slot
        if demand.dedicated:
            return dedicated_score(gpu)
        used_after = slot.total_mib - gpu.free + need
        return (round(used_after / slot.total_mib, 9), slot.node, slot.index)

    def why(self, demand: ServerDemand, gpu: GpuState, need: float) -> str:
        if demand.dedicated:
            return DEDICATED_WHY
        used_after = gpu.slot.total_mib - gpu.free + need
        return (
            f"lowest memory use after placement ({100 * used_after / gpu.slot.total_mib:.1f}% incl. foreign and margin)"
        )


_BY_NAME: dict[str, Strategy] = {
    s.name: s for s in (Manual(), VRAMBased(), LatencyOptimized(), IsolationFirst(), Balanced())
}


def strategy_named(name: str) -> Strategy:
    """The strategy called `name` (as in GpuAssignment.spec.strategy)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PlacementError(
            f"unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}", field="strategy"
        ) from None
