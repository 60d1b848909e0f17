"""GpuBackend over a YAML profile, re-read whenever the file changes, so faults can be injected live.

Profile (camelCase keys; every field but gpus[].name/memoryTotalMiB is optional):

    driverVersion: "550.54.15"
    stallSeconds: 0           # agent stall: the next read blocks this long, once per profile change
    gpus:
      - name: NVIDIA GeForce RTX 4090
        memoryTotalMiB: 24564
        uuid: GPU-...         # default: derived from the node name and the GPU's position
        computeCapability: "8.9"
        memoryReservedMiB: 0
        healthy: true         # false = the GPU is lost
        foreignMiB: 0         # used memory no listed process accounts for (memory spikes, drivers)
        processes:
          - {pid: 4242, usedMiB: 6134, pod: default/llama, container: vllm}   # podUID optional
          - {pid: 1800, usedMiB: 350, name: Xorg}                             # foreign process
          - {pid: 77, name: python}                                           # memory unknown
      - name: NVIDIA A100-SXM4-80GB      # in MIG mode: its MIG devices take the processes
        memoryTotalMiB: 81920
        migDevices:
          - {name: NVIDIA A100-SXM4-80GB MIG 3g.40gb, memoryTotalMiB: 40192, processes: []}
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from vram_operator.agent.errors import AgentConfigError
from vram_operator.agent.snapshot import BackendName, GpuSample, KnownOwner, NodeSnapshot, ProcessSample

log = logging.getLogger(__name__)


def _alias(name: str) -> str:
    return to_camel(name).replace("Mib", "MiB").replace("Uid", "UID")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=_alias, populate_by_name=True, extra="forbid", frozen=True)


class SimulatedProcess(_Model):
    pid: int = Field(ge=1, le=4_194_304)
    used_mib: float | None = Field(default=None, ge=0)
    pod: str | None = Field(default=None, pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$", description="namespace/name")
    pod_uid: str | None = None
    container: str | None = None
    name: str | None = None


class SimulatedMigDevice(_Model):
    name: str
    memory_total_mib: float = Field(gt=0)
    uuid: str | None = None
    foreign_mib: float = Field(default=0, ge=0)
    processes: list[SimulatedProcess] = Field(default_factory=list)


class SimulatedGpu(_Model):
    name: str
    memory_total_mib: float = Field(gt=0)
    uuid: str | None = None
    compute_capability: str | None = None
    memory_reserved_mib: float = Field(default=0, ge=0)
    healthy: bool = True
    foreign_mib: float = Field(default=0, ge=0)
    processes: list[SimulatedProcess] = Field(default_factory=list)
    mig_devices: list[SimulatedMigDevice] | None = Field(
        default=None, max_length=7, description="MIG mode on, with these devices (an empty list: none yet)."
    )


class SimulatedProfile(_Model):
    driver_version: str | None = "simulated"
    stall_seconds: float = Field(default=0, ge=0, le=3600)
    gpus: list[SimulatedGpu] = Field(default_factory=list, max_length=64)


def parse_profile(text: str, *, source: str = "profile") -> SimulatedProfile:
    """A validated profile; AgentConfigError names the file and the first bad field."""
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise AgentConfigError(f"{source}: not valid YAML: {error}".replace("\n", " "), field="profile") from error
    try:
        return SimulatedProfile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "profile"
        raise AgentConfigError(f"{source}: {where}: {first['msg']}", field=where) from error


def default_uuid(node_name: str, index: int) -> str:
    """A stable, node-unique GPU UUID for profiles that do not give one."""
    return f"GPU-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'vram-operator/{node_name}/{index}')}"


def default_mig_uuid(node_name: str, index: int, slot: int) -> str:
    """A stable, node-unique MIG device UUID for profiles that do not give one."""
    return f"MIG-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, f'vram-operator/{node_name}/{index}/mig/{slot}')}"


def _process(process: SimulatedProcess) -> ProcessSample:
    namespace, _, pod_name = process.pod.partition("/") if process.pod else (None, "", None)
    owner = KnownOwner(
        pod_uid=process.pod_uid,
        pod_namespace=namespace,
        pod_name=pod_name or None,
        container=process.container,
        name=process.name,
    )
    return ProcessSample(pid=process.pid, used_mib=process.used_mib, owner=owner)


def _sample(
    index: int,
    uuid: str,
    device: SimulatedGpu | SimulatedMigDevice,
    *,
    parent: str | None = None,
    compute_capability: str | None = None,
) -> GpuSample:
    """A whole GPU (parent None) or a MIG device of `parent`, with its processes."""
    reserved = device.memory_reserved_mib if isinstance(device, SimulatedGpu) else 0.0
    used = min(device.foreign_mib + sum(p.used_mib or 0 for p in device.processes), device.memory_total_mib)
    return GpuSample(
        index=index,
        uuid=uuid,
        name=device.name,
        total_mib=device.memory_total_mib,
        used_mib=used,
        free_mib=max(device.memory_total_mib - used - reserved, 0.0),
        reserved_mib=reserved,
        compute_capability=compute_capability,
        mig=parent is not None,
        parent_uuid=parent,
        processes=tuple(_process(p) for p in device.processes),
    )


def profile_snapshot(profile: SimulatedProfile, node_name: str) -> NodeSnapshot:
    """What NVML would report for this profile (pure)."""
    gpus = []
    for index, gpu in enumerate(profile.gpus):
        uuid = gpu.uuid or default_uuid(node_name, index)
        if not gpu.healthy:
            gpus.append(GpuSample(index=index, uuid=uuid, name=gpu.name, healthy=False, problem="GPU is lost"))
            continue
        migs = [
            _sample(index, mig.uuid or default_mig_uuid(node_name, index, slot), mig, parent=uuid)
            for slot, mig in enumerate(gpu.mig_devices or ())
        ]
        if gpu.mig_devices is None:
            gpus.append(_sample(index, uuid, gpu, compute_capability=gpu.compute_capability))
            continue
        # In MIG mode the devices hold the processes; the GPU itself lists none (as NVML reports it).
        used = min(gpu.foreign_mib + sum(m.used_mib for m in migs), gpu.memory_total_mib)
        parent = GpuSample(
            index=index,
            uuid=uuid,
            name=gpu.name,
            total_mib=gpu.memory_total_mib,
            used_mib=used,
            free_mib=max(gpu.memory_total_mib - used - gpu.memory_reserved_mib, 0.0),
            reserved_mib=gpu.memory_reserved_mib,
            compute_capability=gpu.compute_capability,
            mig_enabled=True,
        )
        gpus += [parent, *migs]
    return NodeSnapshot(backend="simulated", gpus=tuple(gpus), driver_version=profile.driver_version)


class SimulatedBackend:
    """Serves the profile at path; a broken edit keeps the last good profile and is reported."""

    name: BackendName = "simulated"

    def __init__(self, path: Path, node_name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._path = path
        self._node_name = node_name
        self._sleep = sleep
        self._mtime_ns: int | None = None
        self._stall_pending = False
        self._profile = self._load()  # a bad profile at start-up is a configuration error

    def _load(self) -> SimulatedProfile:
        try:
            stat = self._path.stat()
            text = self._path.read_text()
        except OSError as error:
            raise AgentConfigError(f"{self._path}: cannot read: {error.strerror}", field="profile") from error
        profile = parse_profile(text, source=str(self._path))
        self._mtime_ns = stat.st_mtime_ns
        self._stall_pending = profile.stall_seconds > 0
        return profile

    def snapshot(self) -> NodeSnapshot:
        errors: tuple[str, ...] = ()
        try:
            if self._path.stat().st_mtime_ns != self._mtime_ns:
                self._profile = self._load()
                log.info("simulated profile %s reloaded", self._path)
        except (OSError, AgentConfigError) as error:
            log.warning("keeping the previous simulated profile: %s", error)
            errors = (str(error),)
        if self._stall_pending:
            self._stall_pending = False
            log.warning("simulated stall: not reporting for %.0f s", self._profile.stall_seconds)
            self._sleep(self._profile.stall_seconds)
        snapshot = profile_snapshot(self._profile, self._node_name)
        # As with NVML, each lost GPU is also a read error (counted by the exporter).
        lost = tuple(f"GPU {g.index}: {g.problem}" for g in snapshot.gpus if not g.healthy)
        return NodeSnapshot(
            backend=snapshot.backend, gpus=snapshot.gpus, driver_version=snapshot.driver_version, errors=errors + lost
        )
