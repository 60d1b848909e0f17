"""Placement: which node and GPU(s) each server goes to, by strategy, with explained decisions (pure, no I/O)."""

from vram_operator.placement.demand import ManualAssignment, ServerDemand
from vram_operator.placement.errors import PlacementError
from vram_operator.placement.inventory import GpuSlot, Inventory
from vram_operator.placement.ledger import Ledger, Reservation
from vram_operator.placement.ownership import ProcessOwners, not_ours
from vram_operator.placement.planner import DEFAULT_MARGIN_MIB, plan
from vram_operator.placement.result import GpuSummary, Placement, Plan, Unplaced
from vram_operator.placement.strategies import STRATEGY_NAMES, strategy_named

__all__ = [
    "DEFAULT_MARGIN_MIB",
    "STRATEGY_NAMES",
    "GpuSlot",
    "GpuSummary",
    "Inventory",
    "Ledger",
    "ManualAssignment",
    "Placement",
    "PlacementError",
    "Plan",
    "ProcessOwners",
    "Reservation",
    "ServerDemand",
    "Unplaced",
    "not_ours",
    "plan",
    "strategy_named",
]
