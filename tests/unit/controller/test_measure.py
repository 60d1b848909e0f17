from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNodeStatus, GpuProcess
from vram_operator.controller.measure import display, estimate_error, measure_server, memory_changed, summary


def gpu(uuid: str, total: float, processes: list[GpuProcess]) -> GpuDeviceStatus:
    return GpuDeviceStatus(
        index=0, uuid=uuid, memory_total_mib=total, memory_used_mib=0, memory_free_mib=total, processes=processes
    )


def test_display_format() -> None:
    assert display(6134, 12288) == "Memory: 6134MiB / 12288MiB (49.9%)"


def test_summary_is_the_column_without_the_repeated_header() -> None:
    assert summary(6134, 12288) == "6134MiB / 12288MiB (49.9%)"
    assert summary(0, 0) == "0MiB / 0MiB (0.0%)"


def test_sums_over_tensor_parallel_gpus_and_ignores_others() -> None:
    node = GpuNodeStatus(
        last_heartbeat="2026-01-01T00:00:00Z",
        gpus=[
            gpu("GPU-0", 81559, [GpuProcess(pid=1, used_mib=40000, pod_uid="p1"), GpuProcess(pid=2, used_mib=900)]),
            gpu("GPU-1", 81559, [GpuProcess(pid=3, used_mib=41000, pod_uid="p1")]),
            gpu("GPU-2", 81559, [GpuProcess(pid=4, used_mib=5000, pod_uid="p1")]),
        ],
    )
    memory = measure_server({"p1"}, ["GPU-0", "GPU-1"], [node])
    assert memory is not None
    assert memory.used_mib == 81000
    assert memory.total_mib == 2 * 81559
    assert [g.uuid for g in memory.per_gpu] == ["GPU-0", "GPU-1"]
    assert memory.measured_at == "2026-01-01T00:00:00Z"
    assert memory.display == display(81000, 2 * 81559)
    assert memory.summary == summary(81000, 2 * 81559)


def test_no_agent_process_means_unknown() -> None:
    node = GpuNodeStatus(gpus=[gpu("GPU-0", 1000, [GpuProcess(pid=1, used_mib=10, pod_uid="other")])])
    assert measure_server({"p1"}, ["GPU-0"], [node]) is None
    assert measure_server({"p1"}, ["GPU-0"], []) is None


def test_timestamp_alone_is_no_change() -> None:
    node = GpuNodeStatus(last_heartbeat="t1", gpus=[gpu("G", 100, [GpuProcess(pid=1, used_mib=10, pod_uid="p")])])
    later = node.model_copy(update={"last_heartbeat": "t2"})
    first = measure_server({"p"}, ["G"], [node])
    second = measure_server({"p"}, ["G"], [later])
    assert not memory_changed(first, second)
    assert memory_changed(first, None)
    assert not memory_changed(None, None)


@given(st.lists(st.floats(min_value=0, max_value=80000), min_size=1, max_size=8))
def test_percent_matches_display(used: list[float]) -> None:
    gpus = [gpu(f"G{i}", 81559, [GpuProcess(pid=i, used_mib=u, pod_uid="p")]) for i, u in enumerate(used)]
    memory = measure_server({"p"}, [g.uuid for g in gpus], [GpuNodeStatus(gpus=gpus)])
    assert memory is not None
    assert abs(memory.used_mib - sum(used)) < 1e-6
    assert memory.display.endswith(f"({memory.percent:.1f}%)")


def test_estimate_error_is_per_gpu_ratio() -> None:
    node = GpuNodeStatus(
        gpus=[
            gpu("A", 100, [GpuProcess(pid=1, used_mib=60, pod_uid="p")]),
            gpu("B", 100, [GpuProcess(pid=2, used_mib=40, pod_uid="p")]),
        ]
    )
    memory = measure_server({"p"}, ["A", "B"], [node])
    assert memory is not None
    assert estimate_error(memory, 40) == 50 / 40
    assert estimate_error(memory, 0) is None
