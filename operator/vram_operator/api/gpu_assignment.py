"""GpuAssignment: a fleet-wide placement plan by strategy, previewed or applied."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vram_operator.api.base import (
    MESSAGE_MAX,
    NAME_MAX,
    ApiModel,
    Condition,
    IntOrString,
    LabelSelector,
    Message,
    Name,
    Resource,
    ServerKey,
    cel_rule,
    config_with_cel,
)
from vram_operator.api.quantity import budget_schema, quantity_mib

Strategy = Literal["Manual", "VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced"]
STRATEGIES: tuple[Strategy, ...] = ("Manual", "VRAMBased", "LatencyOptimized", "IsolationFirst", "Balanced")
SERVER_KEY_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"


class ServerAssignment(ApiModel):
    """A manual assignment of one server."""

    server: str = Field(
        max_length=2 * NAME_MAX + 1, pattern=SERVER_KEY_PATTERN, description='Server as "namespace/name".'
    )
    node: str = Field(max_length=NAME_MAX, description="Node name.")
    gpus: list[IntOrString] = Field(
        default_factory=list, max_length=64, description="GPU indices or UUIDs on that node."
    )
    vram_budget_override: int | str | None = Field(
        default=None,
        description="Budget to use instead of the estimate: a quantity from 1Mi to 16Ti (e.g. 650Mi) or bytes.",
        json_schema_extra=budget_schema(bound_strings=False),
    )

    @field_validator("vram_budget_override")
    @classmethod
    def _override_is_quantity(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            quantity_mib(value)
        return value


class GpuAssignmentSpec(ApiModel):
    """Which servers to place and how."""

    model_config = config_with_cel(
        cel_rule(
            "self.strategy != 'Manual' || (has(self.assignments) && size(self.assignments) > 0)",
            "strategy Manual needs at least one assignment",
        ),
    )

    strategy: Strategy = Field(
        default="VRAMBased", description="Manual, VRAMBased, LatencyOptimized, IsolationFirst or Balanced."
    )
    server_selector: LabelSelector | None = Field(
        default=None, description="Servers this assignment manages (all when empty)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose servers it manages (all when empty)."
    )
    assignments: list[ServerAssignment] = Field(
        default_factory=list,
        max_length=4096,
        description="Manual assignments (pins); one per server.",
        # A map list keyed by server: the API server itself rejects a server listed twice.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["server"]},
    )
    mode: Literal["Preview", "Apply"] = Field(
        default="Preview", description="Preview writes the plan only; Apply rolls it out."
    )
    rollback_to_revision: int | None = Field(
        default=None, ge=1, description="Restore the plan applied at this revision."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> GpuAssignmentSpec:
        if self.strategy == "Manual" and not self.assignments:
            raise ValueError("strategy Manual needs at least one assignment")
        servers = [a.server for a in self.assignments]
        if len(servers) != len(set(servers)):
            raise ValueError("each server may be assigned only once")
        return self


class PlanEntry(ApiModel):
    """Where one server goes under the plan."""

    server: str = Field(max_length=2 * NAME_MAX + 1, description='"namespace/name".')
    node: str | None = Field(default=None, max_length=NAME_MAX, description="Node, absent when unplaced.")
    gpus: list[Name] = Field(default_factory=list, max_length=64, description="GPU UUIDs.")
    budget_mib: float = Field(default=0, ge=0, description="VRAM reserved per GPU.")
    utilization: float | None = Field(default=None, ge=0, le=1, description="vLLM utilization per GPU.")
    changed: bool = Field(default=False, description="Placement differs from what runs now.")
    reason: str = Field(default="", max_length=MESSAGE_MAX, description="Why (or why unplaced).")


class AppliedPlan(ApiModel):
    """A plan as it was applied."""

    revision: int = Field(ge=1, description="Revision number.")
    applied_at: str | None = Field(default=None, description="When.", json_schema_extra={"format": "date-time"})
    strategy: str = Field(default="", max_length=32, description="Strategy used.")
    plan: list[PlanEntry] = Field(default_factory=list, max_length=4096, description="The plan.")


class RolloutStatus(ApiModel):
    """Progress of an applied plan."""

    restarted: list[ServerKey] = Field(default_factory=list, max_length=4096, description="Servers restarted.")
    pending: list[ServerKey] = Field(default_factory=list, max_length=4096, description="Waiting to restart.")
    healthy: list[ServerKey] = Field(default_factory=list, max_length=4096, description="Restarted and Ready.")
    stopped: list[ServerKey] = Field(
        default_factory=list, max_length=4096, description="Scaled to zero by a wave to free memory, not started yet."
    )


class RollbackRecord(ApiModel):
    """A rollbackToRevision that was acted on (it acts once per value)."""

    to_revision: int = Field(ge=1, description="The revision restored (spec.rollbackToRevision).")
    revision: int = Field(ge=1, description="The revision it was applied as.")
    generation: int = Field(ge=0, description="The assignment's generation it was applied at.")


class GpuAssignmentStatus(ApiModel):
    """The computed plan and its rollout."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    plan: list[PlanEntry] = Field(default_factory=list, max_length=4096, description="Per-server plan.")
    warnings: list[Message] = Field(default_factory=list, max_length=256, description="Plan warnings.")
    applied_revision: int | None = Field(default=None, ge=0, description="Revision in effect.")
    history: list[AppliedPlan] = Field(default_factory=list, max_length=10, description="Last applied plans.")
    rollout: RolloutStatus | None = Field(default=None, description="Rollout progress.")
    rolled_back: RollbackRecord | None = Field(
        default=None, description="The rollbackToRevision acted on; cleared when the field is cleared."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Planned, Applied, ...",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class GpuAssignment(Resource):
    """A fleet-wide GPU placement by strategy."""

    kind_name: ClassVar[str] = "GpuAssignment"
    plural: ClassVar[str] = "gpuassignments"
    short_names: ClassVar[tuple[str, ...]] = ("gpua",)
    namespaced: ClassVar[bool] = False

    kind: Literal["GpuAssignment"] = "GpuAssignment"
    spec: GpuAssignmentSpec = Field(default_factory=GpuAssignmentSpec)
    status: GpuAssignmentStatus | None = None
