from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vram_operator.agent.attribution import ProcessIdentity, attribute
from vram_operator.agent.cgroup import CgroupOwner
from vram_operator.agent.pods import PodInfo
from vram_operator.agent.snapshot import GpuSample, KnownOwner, NodeSnapshot, ProcessSample
from vram_operator.agent.status import build_status, comparable

POD_UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"
CONTAINER_ID = "c" * 64
PODS = {POD_UID: PodInfo(uid=POD_UID, namespace="ml", name="llama-0", containers={CONTAINER_ID: "vllm"})}
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"


def gpu(**overrides: object) -> GpuSample:
    fields: dict[str, object] = {
        "index": 0,
        "uuid": "GPU-aaaa",
        "name": "NVIDIA GeForce RTX 4090",
        "total_mib": 24564.0,
        "used_mib": 7000.0,
        "free_mib": 17564.0,
        "processes": (ProcessSample(4242, 6134.0), ProcessSample(1800, 350.0), ProcessSample(77, None)),
    }
    fields.update(overrides)
    return GpuSample(**fields)  # type: ignore[arg-type]


IDENTITIES = {
    4242: ProcessIdentity(CgroupOwner(POD_UID, CONTAINER_ID), "python3"),
    1800: ProcessIdentity(CgroupOwner(), "Xorg"),
    77: ProcessIdentity(CgroupOwner(), "ffmpeg"),
}


def test_processes_are_attributed_to_pods_or_named_as_foreign() -> None:
    status = build_status(NodeSnapshot("nvml", (gpu(),), "550.54.15"), IDENTITIES, PODS, now=NOW, agent_version="0.1.0")
    pod, desktop, unknown = status.gpus[0].processes

    assert (pod.pod_uid, pod.pod_namespace, pod.pod_name, pod.container, pod.used_mib) == (
        POD_UID,
        "ml",
        "llama-0",
        "vllm",
        6134,
    )
    assert (desktop.pod_uid, desktop.name, desktop.used_mib) == (None, "Xorg", 350)
    assert (unknown.used_mib, unknown.name) == (None, "ffmpeg")
    # The process NVML could not measure stays inside the unattributed figure.
    assert status.gpus[0].unattributed_mib == 7000 - 6134 - 350


def test_a_pod_missing_from_the_index_keeps_its_uid_and_container_id() -> None:
    other = "0125ec2f-b64a-4868-8f5b-94b56cbab864"
    process = attribute(ProcessSample(5, 10.0), ProcessIdentity(CgroupOwner(other, "d" * 64), "python"), PODS)
    assert (process.pod_uid, process.pod_name, process.container) == (other, None, "d" * 64)


def test_a_process_gone_from_proc_is_foreign_without_a_name() -> None:
    process = attribute(ProcessSample(5, 10.0), None, PODS)
    assert (process.pod_uid, process.name, process.used_mib) == (None, None, 10)


def test_a_backend_known_owner_wins_and_gets_its_uid_from_the_index() -> None:
    sample = ProcessSample(9, 100.0, KnownOwner(pod_namespace="ml", pod_name="llama-0", container="vllm"))
    process = attribute(sample, IDENTITIES[1800], PODS)
    assert (process.pod_uid, process.pod_name, process.container, process.name) == (POD_UID, "llama-0", "vllm", None)


@given(
    used=st.floats(min_value=0, max_value=200_000),
    processes=st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=200_000)), max_size=8),
)
def test_unattributed_is_never_negative_and_completes_the_processes(used: float, processes: list[float | None]) -> None:
    samples = tuple(ProcessSample(pid + 1, mib) for pid, mib in enumerate(processes))
    snapshot = NodeSnapshot("nvml", (gpu(used_mib=used, processes=samples),))
    device = build_status(snapshot, {}, {}, now=NOW, agent_version="0").gpus[0]
    known = sum(mib for mib in processes if mib is not None)
    assert device.unattributed_mib >= 0
    # Each figure is rounded to 0.01 MiB: the error is at most half that per rounded value.
    assert abs(device.unattributed_mib - max(used - known, 0)) <= 0.005 * (len(processes) + 2) + 1e-9


def test_mig_parent_counts_its_mig_devices_and_node_totals_count_physical_gpus_only() -> None:
    parent = gpu(uuid="GPU-a100", mig_enabled=True, total_mib=40960.0, used_mib=5100.0, free_mib=35860.0, processes=())
    mig = gpu(
        uuid="MIG-one",
        mig=True,
        parent_uuid="GPU-a100",
        total_mib=19968.0,
        used_mib=5000.0,
        free_mib=14968.0,
        processes=(ProcessSample(4242, 4800.0),),
    )
    status = build_status(NodeSnapshot("nvml", (parent, mig)), IDENTITIES, PODS, now=NOW, agent_version="0")

    assert [(g.mig_enabled, g.mig, g.parent_uuid) for g in status.gpus] == [
        (True, False, None),
        (False, True, "GPU-a100"),
    ]
    assert status.gpus[0].unattributed_mib == 100
    assert status.gpus[1].unattributed_mib == 200
    assert (status.gpu_count, status.memory_total_mib, status.memory_free_mib) == (1, 40960, 35860)


def test_conditions_when_everything_is_healthy() -> None:
    status = build_status(NodeSnapshot("nvml", (gpu(),), "550"), {}, {}, now=NOW, agent_version="0")
    conditions = {c.type: (c.status, c.reason, c.last_transition_time) for c in status.conditions}
    assert conditions == {"Ready": ("True", "AllGpusHealthy", NOW), "NvmlAvailable": ("True", "NvmlInitialized", NOW)}


def test_conditions_without_nvml_name_the_reason() -> None:
    snapshot = NodeSnapshot("nvml", available=False, problem_reason="LibraryNotFound", problem="NVML: not found")
    status = build_status(snapshot, {}, {}, now=NOW, agent_version="0")
    conditions = {c.type: (c.status, c.reason, c.message) for c in status.conditions}
    assert conditions["NvmlAvailable"] == ("False", "LibraryNotFound", "NVML: not found")
    assert conditions["Ready"][:2] == ("False", "LibraryNotFound")
    assert (status.gpus, status.gpu_count) == ([], 0)


def test_a_lost_gpu_makes_the_node_not_ready_and_transition_times_follow_status_changes() -> None:
    healthy = build_status(NodeSnapshot("nvml", (gpu(),)), {}, {}, now=NOW, agent_version="0")
    lost_gpu = gpu(healthy=False, problem="GPU is lost", total_mib=0.0, used_mib=0.0, free_mib=0.0, processes=())
    lost = build_status(NodeSnapshot("nvml", (lost_gpu,)), {}, {}, now=LATER, agent_version="0", previous=healthy)

    ready = next(c for c in lost.conditions if c.type == "Ready")
    nvml = next(c for c in lost.conditions if c.type == "NvmlAvailable")
    assert (ready.status, ready.reason, ready.last_transition_time) == ("False", "GpuUnhealthy", LATER)
    assert "GPU-aaaa" in ready.message
    assert nvml.last_transition_time == NOW  # unchanged status keeps its transition time


def test_simulated_backend_says_so() -> None:
    status = build_status(NodeSnapshot("simulated", (gpu(),)), {}, {}, now=NOW, agent_version="0")
    nvml = next(c for c in status.conditions if c.type == "NvmlAvailable")
    assert (status.backend, nvml.status, nvml.reason) == ("simulated", "False", "SimulatedBackend")


def test_change_detection_ignores_only_the_heartbeat() -> None:
    snapshot = NodeSnapshot("nvml", (gpu(),))
    first = build_status(snapshot, IDENTITIES, PODS, now=NOW, agent_version="0")
    same_later = build_status(snapshot, IDENTITIES, PODS, now=LATER, agent_version="0", previous=first)
    spiked = build_status(
        NodeSnapshot("nvml", (gpu(used_mib=9000.0, free_mib=15564.0),)),
        IDENTITIES,
        PODS,
        now=LATER,
        agent_version="0",
        previous=first,
    )

    assert "lastHeartbeat" not in comparable(first)
    assert same_later.last_heartbeat == LATER
    assert comparable(first) == comparable(same_later)
    assert comparable(first) != comparable(spiked)
