"""GpuBackend over NVML (nvidia-ml-py). Device trouble is reported in the snapshot, never raised."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from vram_operator.agent.snapshot import BackendName, GpuSample, NodeSnapshot, ProcessSample

log = logging.getLogger(__name__)

MIB = 1024 * 1024
T = TypeVar("T")

# Why the whole read failed, as a CamelCase condition reason, by NVML error code name.
_UNAVAILABLE_REASONS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "LibraryNotFound",
    "NVML_ERROR_DRIVER_NOT_LOADED": "DriverNotLoaded",
    "NVML_ERROR_NO_PERMISSION": "NoPermission",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "DriverLibraryMismatch",
}
# Codes meaning "this query does not apply to this device": the value is simply unknown.
_NOT_APPLICABLE = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_NOT_FOUND", "NVML_ERROR_FUNCTION_NOT_FOUND")
# Codes meaning the v2 memory call is not there (old driver): fall back to v1.
_NO_MEMORY_V2 = ("NVML_ERROR_FUNCTION_NOT_FOUND", "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_ARGUMENT_VERSION_MISMATCH")


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend:
    """Reads every GPU (and MIG device) through an NVML module: pynvml, or a fake in tests."""

    name: BackendName = "nvml"

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        self._initialized = False
        self._memory_v2: bool | None = None  # learnt on first use: does the driver have the v2 call?
        self._uuids: dict[int, str] = {}  # so a GPU lost later keeps the identity it had

    def _codes(self, *names: str) -> set[int]:
        return {getattr(self._nvml, n) for n in names if hasattr(self._nvml, n)}

    def _is(self, error: Exception, *names: str) -> bool:
        return getattr(error, "value", None) in self._codes(*names)

    def _unavailable(self, error: Exception) -> NodeSnapshot:
        code = getattr(error, "value", None)
        reason = next(
            (r for n, r in _UNAVAILABLE_REASONS.items() if getattr(self._nvml, n, object()) == code), "NvmlError"
        )
        return NodeSnapshot(backend="nvml", available=False, problem_reason=reason, problem=f"NVML: {error}")

    def snapshot(self) -> NodeSnapshot:
        nv = self._nvml
        try:
            if not self._initialized:
                nv.nvmlInit()
                self._initialized = True
            count = int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as error:
            # Init again next poll: the driver may be loaded (or reloaded) by then.
            self._initialized = False
            return self._unavailable(error)
        errors: list[str] = []
        try:
            driver: str | None = _text(nv.nvmlSystemGetDriverVersion())
        except nv.NVMLError as error:
            driver = None
            errors.append(f"driver version: {error}")
        gpus: list[GpuSample] = []
        for index in range(count):
            gpus.extend(self._read_gpu(index, errors))
        return NodeSnapshot(backend="nvml", gpus=tuple(gpus), driver_version=driver, errors=tuple(errors))

    def close(self) -> None:
        if self._initialized:
            self._nvml.nvmlShutdown()
            self._initialized = False

    def _optional(self, read: Callable[[], T]) -> T | None:
        """A value some devices do not have: None when not applicable; other errors propagate."""
        try:
            return read()
        except self._nvml.NVMLError as error:
            if not self._is(error, *_NOT_APPLICABLE):
                raise
            return None

    def _read_gpu(self, index: int, errors: list[str]) -> list[GpuSample]:
        nv = self._nvml
        uuid = self._uuids.get(index, f"unknown-index-{index}")
        name = ""
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
            self._uuids[index] = uuid
            name = _text(nv.nvmlDeviceGetName(handle))
            mig_enabled = self._mig_enabled(handle)
            migs = self._read_mig_devices(handle, index, uuid) if mig_enabled else []
            # With MIG on, processes are listed on the MIG devices; the parent lists none so that
            # nothing is counted twice, and it is marked so that placement uses its MIG devices instead.
            parent = self._read_device(handle, index, uuid, name, with_processes=not mig_enabled)
            return [dataclasses.replace(parent, mig_enabled=mig_enabled), *migs]
        except nv.NVMLError as error:
            # GPU_IS_LOST and friends: this GPU is reported unhealthy, the others still are read.
            log.warning("GPU %d (%s): %s", index, uuid, error)
            errors.append(f"GPU {index}: {error}")
            return [GpuSample(index=index, uuid=uuid, name=name, healthy=False, problem=str(error))]

    def _read_device(
        self, handle: Any, index: int, uuid: str, name: str, *, with_processes: bool, parent_uuid: str | None = None
    ) -> GpuSample:
        nv = self._nvml
        total, used, free, reserved = self._memory(handle)
        capability = self._optional(lambda: nv.nvmlDeviceGetCudaComputeCapability(handle))
        return GpuSample(
            index=index,
            uuid=uuid,
            name=name,
            total_mib=total / MIB,
            used_mib=used / MIB,
            free_mib=free / MIB,
            reserved_mib=reserved / MIB,
            compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
            mig=parent_uuid is not None,
            parent_uuid=parent_uuid,
            processes=self._processes(handle) if with_processes else (),
        )

    def _memory(self, handle: Any) -> tuple[int, int, int, int]:
        """(total, used, free, reserved) bytes; the v2 call separates driver-reserved memory from used."""
        nv = self._nvml
        if self._memory_v2 is not False and hasattr(nv, "nvmlMemory_v2"):
            try:
                info = nv.nvmlDeviceGetMemoryInfo(handle, version=nv.nvmlMemory_v2)
                self._memory_v2 = True
                return int(info.total), int(info.used), int(info.free), int(info.reserved)
            except nv.NVMLError as error:
                if not self._is(error, *_NO_MEMORY_V2):
                    raise
                self._memory_v2 = False
        info = nv.nvmlDeviceGetMemoryInfo(handle)
        return int(info.total), int(info.used), int(info.free), 0

    def _processes(self, handle: Any) -> tuple[ProcessSample, ...]:
        """Compute and graphics processes (a desktop's Xorg holds memory too), one entry per pid."""
        nv = self._nvml
        by_pid: dict[int, ProcessSample] = {}
        for call in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            if not hasattr(nv, call):
                continue
            listed = self._optional(partial(getattr(nv, call), handle))
            for info in listed or ():
                pid = int(info.pid)
                used = self._used_mib(info.usedGpuMemory)
                known = by_pid.get(pid)
                if known is None or (known.used_mib is None and used is not None):
                    by_pid[pid] = ProcessSample(pid=pid, used_mib=used)
        return tuple(by_pid.values())

    def _used_mib(self, raw: int | None) -> float | None:
        # pynvml maps NVML_VALUE_NOT_AVAILABLE to None itself in recent releases; older ones pass it on.
        not_available = getattr(getattr(self._nvml, "NVML_VALUE_NOT_AVAILABLE_ulonglong", None), "value", None)
        if raw is None or raw == not_available or raw < 0:
            return None
        return raw / MIB

    def _mig_enabled(self, handle: Any) -> bool:
        """MIG mode is on (the current mode, the first of NVML's (current, pending) pair)."""
        nv = self._nvml
        mode = self._optional(lambda: nv.nvmlDeviceGetMigMode(handle))
        return mode is not None and len(mode) > 0 and mode[0] == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)

    def _read_mig_devices(self, handle: Any, index: int, uuid: str) -> list[GpuSample]:
        nv = self._nvml
        devices: list[GpuSample] = []
        for slot in range(int(nv.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nv.NVMLError as error:
                if self._is(error, "NVML_ERROR_NOT_FOUND"):
                    continue  # an empty slot: fewer instances are configured than the GPU allows
                raise
            mig_uuid = _text(nv.nvmlDeviceGetUUID(mig))
            mig_name = _text(nv.nvmlDeviceGetName(mig))
            # A MIG device has no node-wide index of its own: it carries its parent's.
            devices.append(self._read_device(mig, index, mig_uuid, mig_name, with_processes=True, parent_uuid=uuid))
        return devices
