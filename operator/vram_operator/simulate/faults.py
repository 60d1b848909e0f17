"""The faults file of the simulated runtime: foreign processes, lost GPUs, spikes, stalls, gone nodes,
and generic servers that use more than their budget. Re-read whenever it changes (see runtime.py).

    nodes:
      workstation:
        agentStalled: false      # no GpuNode writes for this node: its heartbeat ages
        gone: false              # the Node object is deleted (restored when false), its engines die
        gpus:
          "0":                   # GPU index
            lost: false          # the GPU falls off the bus: unhealthy, its engines crash
            foreignMiB: 0        # a foreign spike: used memory no process accounts for
            processes: [{pid: 1873, name: Xorg, usedMiB: 356}]
    servers:
      ai/detector: {trueFootprintMiB: 9000}   # a generic service that really uses this per GPU
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from vram_operator.errors import InputError


def _alias(name: str) -> str:
    return to_camel(name).replace("Mib", "MiB")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=_alias, populate_by_name=True, extra="forbid", frozen=True)


class ForeignProcess(_Model):
    pid: int = Field(ge=1, le=4_194_304)
    name: str = Field(min_length=1, max_length=256)
    used_mib: float = Field(ge=0)


class GpuFaults(_Model):
    lost: bool = False
    foreign_mib: float = Field(default=0, ge=0)
    processes: list[ForeignProcess] = Field(default_factory=list)

    @property
    def foreign_total_mib(self) -> float:
        return self.foreign_mib + sum(p.used_mib for p in self.processes)


class NodeFaults(_Model):
    agent_stalled: bool = False
    gone: bool = False
    gpus: dict[int, GpuFaults] = Field(default_factory=dict)


class ServerTruth(_Model):
    true_footprint_mib: float | None = Field(default=None, ge=0)


class Faults(_Model):
    nodes: dict[str, NodeFaults] = Field(default_factory=dict)
    servers: dict[str, ServerTruth] = Field(default_factory=dict, description="namespace/name -> truth")

    def gpu(self, node: str, index: int) -> GpuFaults:
        found = self.nodes.get(node)
        return (found.gpus.get(index) if found else None) or GpuFaults()

    def node(self, name: str) -> NodeFaults:
        return self.nodes.get(name) or NodeFaults()


def parse_faults(text: str, *, source: str = "faults") -> Faults:
    """Validated faults; InputError names the file and the first bad field."""
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML: {error}".replace("\n", " "), source=source) from error
    try:
        return Faults.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "faults"
        raise InputError(first["msg"], source=source, field=where) from error
