from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml
from agent_fakes import containerd_cgroup, write_proc
from hypothesis import given
from hypothesis import strategies as st

from vram_operator.agent.attribution import IdentityReader, ProcessIdentity
from vram_operator.agent.cgroup import CgroupOwner, parse_cgroup, read_cgroup_owner, read_comm

SAMPLES = Path(__file__).parents[2] / "fixtures" / "cgroup"
EXPECTED = yaml.safe_load((SAMPLES / "expected.yaml").read_text())


@pytest.mark.parametrize("sample", sorted(EXPECTED))
def test_real_world_samples(sample: str) -> None:
    owner = parse_cgroup((SAMPLES / sample).read_text())
    want = EXPECTED[sample]
    assert owner == CgroupOwner(pod_uid=want["podUID"], container_id=want["containerID"])


def test_every_sample_file_has_an_expectation() -> None:
    assert {p.name for p in SAMPLES.glob("*.cgroup")} == set(EXPECTED)


def test_crio_conmon_is_not_taken_for_the_container() -> None:
    # Synthetic: CRI-O runs its monitor in a sibling scope named crio-conmon-<id>.scope.
    cid = "ab" * 32
    text = f"0::/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice/crio-conmon-{cid}.scope\n"
    assert parse_cgroup(text) == CgroupOwner(pod_uid="0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", container_id=None)


hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(pod=st.uuids(), container=hex64, qos=st.sampled_from(["burstable", "besteffort"]))
def test_systemd_paths_round_trip(pod: uuid.UUID, container: str, qos: str) -> None:
    owner = parse_cgroup(containerd_cgroup(str(pod), container, qos))
    assert owner == CgroupOwner(pod_uid=str(pod), container_id=container)


@given(pod=st.uuids(), container=hex64)
def test_cgroupfs_paths_round_trip(pod: uuid.UUID, container: str) -> None:
    owner = parse_cgroup(f"4:memory:/kubepods/burstable/pod{pod}/{container}\n1:name=systemd:/\n")
    assert owner == CgroupOwner(pod_uid=str(pod), container_id=container)


@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    assert isinstance(parse_cgroup(text), CgroupOwner)


def test_reading_under_a_proc_root(tmp_path: Path) -> None:
    pod = "55c6c714-b240-4dec-9a45-57b61696ab6e"
    write_proc(tmp_path, 4242, containerd_cgroup(pod, "c" * 64), "python3")

    assert read_cgroup_owner(tmp_path, 4242) == CgroupOwner(pod_uid=pod, container_id="c" * 64)
    assert read_comm(tmp_path, 4242) == "python3"
    # A process that exited between the NVML read and the /proc read.
    assert read_cgroup_owner(tmp_path, 9999) is None
    assert read_comm(tmp_path, 9999) is None


def test_identities_are_cached_per_process_and_reread_for_a_new_one(tmp_path: Path) -> None:
    pod = "55c6c714-b240-4dec-9a45-57b61696ab6e"
    write_proc(tmp_path, 10, containerd_cgroup(pod, "c" * 64), "python3")
    reader = IdentityReader(tmp_path)
    assert reader.read([10])[10].comm == "python3"

    # A live process's files are not read again...
    (tmp_path / "10" / "comm").write_text("renamed\n")
    assert reader.read([10])[10].comm == "python3"

    # ...but a new process with the same PID (a new /proc/<pid> inode) is.
    shutil.rmtree(tmp_path / "10")
    time.sleep(0.01)
    write_proc(tmp_path, 10, "0::/system.slice/foo.service\n", "other")
    identity = reader.read([10, 11])
    assert (identity[10].comm, identity[10].owner) == ("other", CgroupOwner())
    assert identity[11] == ProcessIdentity(None, None)  # exited
