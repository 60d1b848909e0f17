from __future__ import annotations

import os
from pathlib import Path

import pytest

from vram_operator.agent.errors import AgentConfigError
from vram_operator.agent.simulated import SimulatedBackend, default_uuid, parse_profile

PROFILE = """
driverVersion: "550.54.15"
gpus:
  - name: NVIDIA GeForce RTX 4090
    memoryTotalMiB: 24564
    computeCapability: "8.9"
    foreignMiB: 200
    processes:
      - {pid: 4242, usedMiB: 6134, pod: ml/llama-0, container: vllm}
      - {pid: 1800, usedMiB: 350, name: Xorg}
      - {pid: 77, name: ffmpeg}
  - name: NVIDIA RTX A2000
    memoryTotalMiB: 4096
    uuid: GPU-fixed
"""


def write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    # Filesystems with coarse timestamps: move mtime on explicitly so the change is seen.
    stamp = 1_700_000_000 + bump
    os.utime(path, (stamp, stamp))


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "profile.yaml"
    write(path, PROFILE, 0)
    return path


def test_profile_becomes_a_snapshot(profile: Path) -> None:
    snapshot = SimulatedBackend(profile, "node-1").snapshot()
    first, second = snapshot.gpus

    assert (snapshot.backend, snapshot.driver_version, snapshot.available) == ("simulated", "550.54.15", True)
    assert (first.uuid, first.compute_capability) == (default_uuid("node-1", 0), "8.9")
    assert (first.used_mib, first.free_mib) == (200 + 6134 + 350, 24564 - 6684)
    llama, desktop, unknown = first.processes
    assert llama.owner is not None and (llama.owner.pod_namespace, llama.owner.pod_name, llama.owner.container) == (
        "ml",
        "llama-0",
        "vllm",
    )
    assert desktop.owner is not None and (desktop.owner.pod_name, desktop.owner.name) == (None, "Xorg")
    assert unknown.used_mib is None
    assert (second.uuid, second.used_mib, second.free_mib) == ("GPU-fixed", 0, 4096)


def test_default_uuids_are_stable_and_differ_by_node_and_position() -> None:
    assert default_uuid("a", 0) == default_uuid("a", 0)
    assert len({default_uuid("a", 0), default_uuid("a", 1), default_uuid("b", 0)}) == 3


def test_edits_are_picked_up_gpu_loss_and_memory_spike(profile: Path) -> None:
    backend = SimulatedBackend(profile, "node-1")
    backend.snapshot()

    edited = PROFILE.replace("foreignMiB: 200", "foreignMiB: 9000").replace(
        "    uuid: GPU-fixed", "    uuid: GPU-fixed\n    healthy: false"
    )
    write(profile, edited, 1)

    snapshot = backend.snapshot()
    first, second = snapshot.gpus
    assert first.used_mib == 9000 + 6134 + 350
    assert (second.uuid, second.healthy) == ("GPU-fixed", False)
    assert snapshot.errors == ("GPU 1: GPU is lost",)


def test_a_broken_edit_keeps_the_last_good_profile_and_says_so(profile: Path) -> None:
    backend = SimulatedBackend(profile, "node-1")
    write(profile, "gpus: [{name: x}]", 1)
    snapshot = backend.snapshot()
    assert len(snapshot.gpus) == 2
    assert "memoryTotalMiB" in snapshot.errors[0]


def test_a_stall_blocks_one_read_per_profile_change(profile: Path) -> None:
    slept: list[float] = []
    backend = SimulatedBackend(profile, "node-1", sleep=slept.append)
    backend.snapshot()
    write(profile, PROFILE + "stallSeconds: 45\n", 1)
    backend.snapshot()
    backend.snapshot()
    assert slept == [45]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("gpus: [{name: x, memoryTotalMiB: -1}]", "gpus.0.memoryTotalMiB"),
        ("gpus: [{name: x, memoryTotalMiB: 10, processes: [{pid: 1, pod: nonamespace}]}]", "gpus.0.processes.0.pod"),
        ("gpus: [{name: x, memoryTotalMiB: 10, colour: red}]", "gpus.0.colour"),
        ("gpus: [unclosed", "profile"),
    ],
)
def test_bad_profiles_name_the_field(text: str, field: str) -> None:
    with pytest.raises(AgentConfigError) as caught:
        parse_profile(text, source="p.yaml")
    assert caught.value.field == field
    assert str(caught.value).startswith("p.yaml: ")
    assert "\n" not in str(caught.value)


def test_a_missing_profile_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="cannot read"):
        SimulatedBackend(tmp_path / "absent.yaml", "node-1")


MIG_PROFILE = """
gpus:
  - name: NVIDIA A100-SXM4-80GB
    memoryTotalMiB: 81920
    migDevices:
      - name: NVIDIA A100-SXM4-80GB MIG 3g.40gb
        memoryTotalMiB: 40192
        processes: [{pid: 7, usedMiB: 30000, pod: ml/llama-0}]
      - {name: NVIDIA A100-SXM4-80GB MIG 3g.40gb, memoryTotalMiB: 40192, uuid: MIG-fixed}
"""


def test_a_gpu_in_mig_mode_lists_its_devices_which_hold_the_processes(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    write(path, MIG_PROFILE, 0)
    parent, first, second = SimulatedBackend(path, "a100-node").snapshot().gpus
    assert (parent.mig_enabled, parent.mig, parent.processes, parent.used_mib) == (True, False, (), 30000)
    assert (first.mig, first.parent_uuid, first.total_mib, first.used_mib) == (True, parent.uuid, 40192, 30000)
    assert first.uuid.startswith("MIG-") and first.uuid != parent.uuid
    assert [p.pid for p in first.processes] == [7]
    assert (second.uuid, second.index, second.mig_enabled) == ("MIG-fixed", 0, False)
    again = SimulatedBackend(path, "a100-node").snapshot().gpus
    assert again[1].uuid == first.uuid  # stable across reads
