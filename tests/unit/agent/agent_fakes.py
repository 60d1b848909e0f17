# ruff: noqa: N802  (the fake mirrors pynvml's function names)
"""Test doubles for the agent: a fake NVML module raising real pynvml errors, a fake /proc tree
and a fake CustomObjectsApi. Shared by the unit tests and benchmarks/agent_poll.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

MIB = 1024 * 1024


@dataclass
class FakeDevice:
    """A GPU (or MIG device) as the fake NVML serves it; byte figures like the real library."""

    uuid: str
    name: str = "NVIDIA GeForce RTX 4090"
    total: int = 24564 * MIB
    used: int = 0
    reserved: int = 0
    capability: tuple[int, int] | None = (8, 9)
    compute: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes or None)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    lost: bool = False
    mig: list[FakeDevice | None] | None = None  # slots; None = empty slot; None list = MIG off
    failing: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code

    @property
    def free(self) -> int:
        return self.total - self.used - self.reserved


class FakeNvml:
    """The pynvml functions the agent calls, over FakeDevice objects. Errors are real NVMLError
    instances (pynvml maps each code to its NVMLError_* subclass)."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        devices: list[FakeDevice],
        *,
        init_error: int | None = None,
        driver: str = "550.54.15",
        memory_v2: bool = True,
    ) -> None:
        self.devices = devices
        self.init_error = init_error
        self.driver = driver
        self.memory_v2 = memory_v2
        self.driver_error: int | None = None
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        # Constants (NVML_ERROR_*, NVML_DEVICE_MIG_ENABLE, nvmlMemory_v2, ...) are pynvml's own.
        if name.startswith("NVML_") or name == "nvmlMemory_v2":
            return getattr(pynvml, name)
        raise AttributeError(name)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _check(self, device: FakeDevice, call: str) -> None:
        self._count(call)
        if device.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if call in device.failing:
            raise pynvml.NVMLError(device.failing[call])

    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        if self.driver_error is not None:
            raise pynvml.NVMLError(self.driver_error)
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        device = self.devices[index]
        self._check(device, "nvmlDeviceGetHandleByIndex")
        return device

    def nvmlDeviceGetUUID(self, device: FakeDevice) -> str:
        self._check(device, "nvmlDeviceGetUUID")
        return device.uuid

    def nvmlDeviceGetName(self, device: FakeDevice) -> str:
        self._check(device, "nvmlDeviceGetName")
        return device.name

    def nvmlDeviceGetMemoryInfo(self, device: FakeDevice, version: int | None = None) -> SimpleNamespace:
        if version is not None:
            self._check(device, "nvmlDeviceGetMemoryInfo_v2")
            if not self.memory_v2:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            return SimpleNamespace(
                version=version, total=device.total, reserved=device.reserved, free=device.free, used=device.used
            )
        self._check(device, "nvmlDeviceGetMemoryInfo")
        # v1 folds the reserved memory into used.
        return SimpleNamespace(total=device.total, free=device.free, used=device.used + device.reserved)

    def nvmlDeviceGetCudaComputeCapability(self, device: FakeDevice) -> tuple[int, int]:
        self._check(device, "nvmlDeviceGetCudaComputeCapability")
        if device.capability is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return device.capability

    def _processes(self, listed: list[tuple[int, int | None]]) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in listed]

    def nvmlDeviceGetComputeRunningProcesses(self, device: FakeDevice) -> list[SimpleNamespace]:
        self._check(device, "nvmlDeviceGetComputeRunningProcesses")
        return self._processes(device.compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, device: FakeDevice) -> list[SimpleNamespace]:
        self._check(device, "nvmlDeviceGetGraphicsRunningProcesses")
        return self._processes(device.graphics)

    def nvmlDeviceGetMigMode(self, device: FakeDevice) -> list[int]:
        self._check(device, "nvmlDeviceGetMigMode")
        if device.mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeDevice) -> int:
        return len(device.mig or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: FakeDevice, slot: int) -> FakeDevice:
        mig = (device.mig or [])[slot]
        if mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return mig


def write_proc(root: Path, pid: int, cgroup: str, comm: str) -> None:
    """One fake /proc/<pid> entry with its cgroup and comm files."""
    entry = root / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "cgroup").write_text(cgroup)
    (entry / "comm").write_text(comm + "\n")


def containerd_cgroup(pod_uid: str, container_id: str, qos: str = "burstable") -> str:
    """A cgroup v2 file of a containerd container under the systemd driver."""
    slice_uid = pod_uid.replace("-", "_")
    return (
        f"0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{slice_uid}.slice/"
        f"cri-containerd-{container_id}.scope\n"
    )


class ApiError(Exception):
    """Stands in for kubernetes.client.exceptions.ApiException: carries an HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeCustomObjects:
    """The three CustomObjectsApi calls the reporter makes, over an in-memory store."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self.fail_next: list[int] = []  # HTTP statuses to fail the next calls with

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise ApiError(self.fail_next.pop(0))

    def create_cluster_custom_object(self, group: str, version: str, plural: str, body: dict[str, Any]) -> None:
        self._maybe_fail()
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiError(409)
        self.objects[name] = dict(body)

    def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: dict[str, Any]
    ) -> None:
        self._maybe_fail()
        if name not in self.objects:
            raise ApiError(404)
        self.patches.append(body)
        # JSON merge patch, one level deep is enough for status.
        status = dict(self.objects[name].get("status") or {})
        for key, value in body["status"].items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        self.objects[name]["status"] = status
