"""What each server asks of placement: a per-GPU budget (and how far it may shrink) and its rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vram_operator.fit.offer import GpuOffer
from vram_operator.placement.errors import PlacementError

GpuRef = str | int  # a GPU index on the pinned node, or a GPU UUID


def replica_key(server: str, replica: int) -> str:
    """The planner's name of one replica of a server: the server itself for replica 0, else "ns/name[i]"."""
    return server if replica == 0 else f"{server}[{replica}]"


# Why the engine would fail with this budget (MiB per GPU) on this GPU, or None when it starts and serves.
EngineCheck = Callable[[float, GpuOffer], str | None]


@dataclass(frozen=True)
class ServerDemand:
    """One server (one replica of it) to place. Budgets are per GPU (per tensor-parallel rank), in MiB.

    Each replica of a server is a demand of its own (`replica` > 0 for all but the first), with its
    own GPU(s) and budget; the planner keeps replicas of one server apart where it can.

    `min_mib` is the floor the budget may shrink to on a GPU too small for `preferred_mib` (equal to
    it when the engine cannot shrink, e.g. generic). `fixed_utilization` (manual vLLM utilization)
    makes the budget on a GPU that fraction of the GPU's total, plus `beyond_share_mib` (the CUDA
    graphs vLLM captures beyond its share before 0.21); `budget_override_mib` fixes it.
    """

    server: str
    engine: str
    preferred_mib: float
    min_mib: float
    tensor_parallel: int = 1
    dedicated: bool = False
    latency_critical: bool = False
    is_llm: bool = False
    pin_node: str | None = None
    pin_gpus: tuple[GpuRef, ...] = ()
    pin_standing: bool = False  # the pin keeps a placement that stands (see ManualAssignment.standing)
    pin_overcommit: bool = False  # the pin may over-commit (see ManualAssignment.overcommit)
    fixed_utilization: float | None = None
    beyond_share_mib: float = 0.0
    budget_override_mib: float | None = None
    notes: tuple[str, ...] = ()
    replica: int = 0
    # The engine's own fit: a GPU where it refuses is never chosen (None: the budget alone decides).
    engine_check: EngineCheck | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f"server {self.server}"
        if "/" not in self.server:
            raise PlacementError(f'{where}: server must be "namespace/name"', field="server")
        if not self.preferred_mib > 0:
            raise PlacementError(
                f"{where}: preferred_mib must be positive, got {self.preferred_mib}", field="preferred_mib"
            )
        if not 0 < self.min_mib <= self.preferred_mib:
            raise PlacementError(
                f"{where}: min_mib {self.min_mib} must be within (0, preferred_mib {self.preferred_mib}]",
                field="min_mib",
            )
        if self.tensor_parallel < 1:
            raise PlacementError(
                f"{where}: tensor_parallel must be >= 1, got {self.tensor_parallel}", field="tensor_parallel"
            )
        if self.pin_gpus and len(self.pin_gpus) != self.tensor_parallel:
            raise PlacementError(
                f"{where}: pin_gpus lists {len(self.pin_gpus)} GPUs, tensor_parallel is {self.tensor_parallel}",
                field="pin_gpus",
            )
        if self.fixed_utilization is not None and not 0 < self.fixed_utilization < 1:
            raise PlacementError(
                f"{where}: fixed_utilization must be within (0, 1), got {self.fixed_utilization}",
                field="fixed_utilization",
            )
        if self.budget_override_mib is not None and not self.budget_override_mib > 0:
            raise PlacementError(f"{where}: budget_override_mib must be positive", field="budget_override_mib")
        if self.replica < 0:
            raise PlacementError(f"{where}: replica must be >= 0, got {self.replica}", field="replica")

    @property
    def key(self) -> str:
        """Unique within a plan: the server for replica 0, "ns/name[i]" for replica i."""
        return replica_key(self.server, self.replica)

    @property
    def namespace(self) -> str:
        return self.server.partition("/")[0]

    @property
    def shrinkable(self) -> bool:
        return self.min_mib < self.preferred_mib and self.fixed_utilization is None and self.budget_override_mib is None

    @property
    def pinned(self) -> bool:
        return self.pin_node is not None or bool(self.pin_gpus)

    def budget_on(self, gpu_totals: tuple[float, ...]) -> float:
        """The budget it asks for on GPUs of these totals (before any shrinking)."""
        if self.budget_override_mib is not None:
            return self.budget_override_mib
        if self.fixed_utilization is not None:
            # vLLM takes utilization x total on each rank (and its graphs beyond it); reserve the largest
            # so no rank exceeds it.
            return self.fixed_utilization * max(gpu_totals) + self.beyond_share_mib
        return self.preferred_mib


@dataclass(frozen=True)
class ManualAssignment:
    """A GpuAssignment's manual entry: this server goes to these GPUs (with an optional budget).

    `server` names a demand by its key: "ns/name" pins replica 0, "ns/name[i]" replica i.
    """

    server: str
    node: str
    gpus: tuple[GpuRef, ...] = ()
    budget_override_mib: float | None = None
    # The server already stands there (its status says so): a cordoned node or a silent agent stops new
    # placements, not this one; only an unhealthy or missing GPU refuses it.
    standing: bool = False
    # The pin may over-commit its GPUs (with a warning) whatever the strategy: a Manual GpuAssignment's
    # rollout, carried onto the server's own reconciles.
    overcommit: bool = False
