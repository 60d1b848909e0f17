from __future__ import annotations

import pynvml
import pytest
from agent_fakes import MIB, FakeDevice, FakeNvml

from vram_operator.agent.nvml_backend import NvmlBackend


def two_gpus() -> list[FakeDevice]:
    return [
        FakeDevice(uuid="GPU-aaaa", used=7000 * MIB, reserved=300 * MIB, compute=[(4242, 6134 * MIB)]),
        FakeDevice(uuid="GPU-bbbb", name="NVIDIA RTX A2000", total=4096 * MIB, capability=(8, 6)),
    ]


def test_reads_every_gpu_with_v2_memory_and_processes() -> None:
    snapshot = NvmlBackend(FakeNvml(two_gpus())).snapshot()

    assert snapshot.available and snapshot.backend == "nvml"
    assert snapshot.driver_version == "550.54.15"
    first, second = snapshot.gpus
    assert (first.index, first.uuid, first.name) == (0, "GPU-aaaa", "NVIDIA GeForce RTX 4090")
    assert (first.total_mib, first.used_mib, first.reserved_mib) == (24564, 7000, 300)
    assert first.free_mib == 24564 - 7000 - 300
    assert first.compute_capability == "8.9"
    assert [(p.pid, p.used_mib) for p in first.processes] == [(4242, 6134)]
    assert (second.index, second.compute_capability, second.processes) == (1, "8.6", ())


def test_falls_back_to_v1_memory_once_when_the_driver_lacks_v2() -> None:
    nvml = FakeNvml(two_gpus(), memory_v2=False)
    backend = NvmlBackend(nvml)

    first = backend.snapshot().gpus[0]
    backend.snapshot()

    # v1 folds reserved memory into used and cannot tell it apart.
    assert (first.used_mib, first.reserved_mib, first.free_mib) == (7300, 0, 24564 - 7300)
    assert nvml.calls["nvmlDeviceGetMemoryInfo_v2"] == 1  # learnt once, not retried every poll
    assert nvml.calls["nvmlDeviceGetMemoryInfo"] == 4


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "LibraryNotFound"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "DriverNotLoaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NoPermission"),
        (pynvml.NVML_ERROR_UNKNOWN, "NvmlError"),
    ],
)
def test_no_nvml_gives_an_empty_snapshot_with_the_reason(code: int, reason: str) -> None:
    snapshot = NvmlBackend(FakeNvml(two_gpus(), init_error=code)).snapshot()

    assert not snapshot.available
    assert snapshot.gpus == ()
    assert snapshot.problem_reason == reason
    assert str(pynvml.NVMLError(code)) in (snapshot.problem or "")


def test_init_is_retried_after_a_failure_and_done_once_after_success() -> None:
    nvml = FakeNvml(two_gpus(), init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    backend = NvmlBackend(nvml)
    assert not backend.snapshot().available

    nvml.init_error = None
    assert len(backend.snapshot().gpus) == 2
    backend.snapshot()
    assert nvml.calls["nvmlInit"] == 2


def test_a_lost_gpu_is_unhealthy_keeps_its_uuid_and_the_others_still_report() -> None:
    devices = two_gpus()
    backend = NvmlBackend(FakeNvml(devices))
    backend.snapshot()

    devices[0].lost = True
    lost, fine = backend.snapshot().gpus

    assert (lost.uuid, lost.healthy) == ("GPU-aaaa", False)
    assert "GPU is lost" in (lost.problem or "")
    assert (fine.uuid, fine.healthy, fine.total_mib) == ("GPU-bbbb", True, 4096)


def test_a_gpu_lost_before_the_first_read_gets_a_placeholder_uuid() -> None:
    devices = two_gpus()
    devices[1].lost = True
    gpus = NvmlBackend(FakeNvml(devices)).snapshot().gpus
    assert (gpus[1].index, gpus[1].uuid, gpus[1].healthy) == (1, "unknown-index-1", False)


def test_an_unexpected_error_on_memory_makes_only_that_gpu_unhealthy() -> None:
    devices = two_gpus()
    devices[1].failing["nvmlDeviceGetMemoryInfo_v2"] = pynvml.NVML_ERROR_UNKNOWN
    snapshot = NvmlBackend(FakeNvml(devices)).snapshot()
    assert [g.healthy for g in snapshot.gpus] == [True, False]
    assert len(snapshot.errors) == 1


def test_process_memory_nvml_cannot_give_is_unknown() -> None:
    raw_not_available = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
    device = FakeDevice(uuid="GPU-aaaa", compute=[(10, None), (11, raw_not_available), (12, 512 * MIB)])
    processes = NvmlBackend(FakeNvml([device])).snapshot().gpus[0].processes
    assert [(p.pid, p.used_mib) for p in processes] == [(10, None), (11, None), (12, 512)]


def test_graphics_processes_are_listed_once_per_pid() -> None:
    device = FakeDevice(uuid="GPU-aaaa", compute=[(20, None)], graphics=[(20, 300 * MIB), (21, 120 * MIB)])
    processes = NvmlBackend(FakeNvml([device])).snapshot().gpus[0].processes
    assert sorted((p.pid, p.used_mib) for p in processes) == [(20, 300), (21, 120)]


def test_unsupported_optional_queries_leave_values_unknown() -> None:
    device = FakeDevice(uuid="GPU-aaaa", capability=None)
    device.failing["nvmlDeviceGetComputeRunningProcesses"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpu = NvmlBackend(FakeNvml([device])).snapshot().gpus[0]
    assert (gpu.healthy, gpu.compute_capability, gpu.processes) == (True, None, ())


def test_mig_devices_are_listed_with_their_parent_and_carry_the_processes() -> None:
    slices = [
        FakeDevice(
            uuid="MIG-one", name="NVIDIA A100 3g.20gb", total=19968 * MIB, used=5000 * MIB, compute=[(7, 4800 * MIB)]
        ),
        None,  # an empty slot
        FakeDevice(uuid="MIG-two", name="NVIDIA A100 2g.10gb", total=9856 * MIB, used=0),
    ]
    parent = FakeDevice(uuid="GPU-a100", name="NVIDIA A100-SXM4-40GB", total=40960 * MIB, used=5000 * MIB, mig=slices)
    gpus = NvmlBackend(FakeNvml([parent])).snapshot().gpus

    assert [(g.uuid, g.mig, g.parent_uuid, g.index) for g in gpus] == [
        ("GPU-a100", False, None, 0),
        ("MIG-one", True, "GPU-a100", 0),
        ("MIG-two", True, "GPU-a100", 0),
    ]
    assert [g.mig_enabled for g in gpus] == [True, False, False]  # the parent is marked, not a slot
    assert gpus[0].processes == ()  # listed on the MIG device, not twice
    assert [(p.pid, p.used_mib) for p in gpus[1].processes] == [(7, 4800)]
    assert gpus[1].total_mib == 19968


def test_close_shuts_nvml_down_once() -> None:
    nvml = FakeNvml(two_gpus())
    backend = NvmlBackend(nvml)
    backend.snapshot()
    backend.close()
    backend.close()
    assert nvml.calls["nvmlShutdown"] == 1


def test_a_failing_driver_version_query_is_an_error_not_a_failed_read() -> None:
    nvml = FakeNvml(two_gpus())
    nvml.driver_error = pynvml.NVML_ERROR_UNKNOWN
    snapshot = NvmlBackend(nvml).snapshot()
    assert (snapshot.available, snapshot.driver_version, len(snapshot.gpus)) == (True, None, 2)
    assert snapshot.errors == ("driver version: Unknown Error",)


def test_mig_mode_with_no_instances_still_marks_the_parent_and_lists_no_processes() -> None:
    parent = FakeDevice(uuid="GPU-a100", name="NVIDIA A100-SXM4-80GB", total=81920 * MIB, compute=[(9, 100 * MIB)])
    parent.mig = [None, None]  # MIG on, no instance configured yet: nothing can be placed there
    gpus = NvmlBackend(FakeNvml([parent])).snapshot().gpus
    assert [(g.uuid, g.mig_enabled, g.processes) for g in gpus] == [("GPU-a100", True, ())]


def test_a_gpu_without_mig_is_not_marked() -> None:
    gpus = NvmlBackend(FakeNvml([FakeDevice(uuid="GPU-plain")])).snapshot().gpus
    assert [(g.uuid, g.mig_enabled, g.mig) for g in gpus] == [("GPU-plain", False, False)]
