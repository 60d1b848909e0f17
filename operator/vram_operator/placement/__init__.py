"""Placement: which node and GPU(s) each server goes to, by strategy, with explained decisions (pure, no I/O)."""

from vram_operator.placement.demand import ManualAssignment, ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.inventory import GpuSlot, Inventory, default_owner_of
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan
from vram_operator.placement.result import GpuSummary, Placement, Plan, Unplaced
from vram_operator.placement.strategies import STRATEGY_NAMES, strategy_named
from vram_operator.placement.utilization import GpuRoom, UtilizationChoice, auto_utilization, manual_utilization

__all__ = [
    "DEFAULT_MARGIN_MIB",
    "STRATEGY_NAMES",
    "GpuRoom",
    "GpuSlot",
    "GpuSummary",
    "Inventory",
    "Ledger",
    "ManualAssignment",
    "Placement",
    "PlacementError",
    "Plan",
    "Reservation",
    "ServerDemand",
    "Unplaced",
    "UtilizationChoice",
    "auto_utilization",
    "default_owner_of",
    "manual_utilization",
    "plan",
    "strategy_named",
]
