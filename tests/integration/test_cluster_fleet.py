"""The fake fleet and tool lookup, without a cluster: what the harness hands to KWOK and tests."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from localcluster import FakeGpu, FakeNode, h100_rack, reference_fleet
from localcluster.fleet import FAKE_GPUS_ANNOTATION, KWOK_ANNOTATION, fake_gpu_uuid, node_manifest, parse_fake_gpus
from localcluster.tools import binary_version

gpus = st.builds(
    FakeGpu,
    product=st.sampled_from(["NVIDIA-RTX-A5500", "NVIDIA-RTX-A400", "NVIDIA-H100-80GB-HBM3"]),
    memory_mib=st.integers(min_value=1024, max_value=200_000),
)


@given(st.lists(gpus, min_size=1, max_size=8), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_node_manifest_describes_its_gpus(node_gpus: list[FakeGpu], name: str) -> None:
    node = FakeNode(name=name, gpus=tuple(node_gpus))
    manifest = node_manifest(node)
    labels, annotations = manifest["metadata"]["labels"], manifest["metadata"]["annotations"]

    assert parse_fake_gpus(annotations[FAKE_GPUS_ANNOTATION]) == node.gpus
    assert annotations[KWOK_ANNOTATION] == "fake"
    assert labels["nvidia.com/gpu.count"] == str(len(node_gpus))
    assert labels["nvidia.com/gpu.product"] == node_gpus[0].product
    assert labels["nvidia.com/gpu.memory"] == str(node_gpus[0].memory_mib)
    assert manifest["status"]["capacity"]["nvidia.com/gpu"] == str(len(node_gpus))
    listed = json.loads(annotations[FAKE_GPUS_ANNOTATION])
    assert [g["uuid"] for g in listed] == [fake_gpu_uuid(name, i) for i in range(len(node_gpus))]


def test_reference_fleet_shape() -> None:
    workstation, *rack = reference_fleet(h100_nodes=3)
    assert [(g.product, g.memory_mib) for g in workstation.gpus] == [
        ("NVIDIA-RTX-A5500", 24564),
        ("NVIDIA-RTX-A400", 4094),
    ]
    assert rack == h100_rack(3)
    assert all(len(node.gpus) == 8 and node.gpus[0].memory_mib == 81559 for node in rack)
    assert len({node.name for node in [workstation, *rack]}) == 4


def test_gpu_uuids_are_stable_and_distinct() -> None:
    uuids = {fake_gpu_uuid(node.name, i) for node in reference_fleet(4) for i in range(len(node.gpus))}
    assert len(uuids) == 2 + 4 * 8
    assert fake_gpu_uuid("h100-0", 3) == fake_gpu_uuid("h100-0", 3)
    assert all(u.startswith("GPU-") for u in uuids)


def test_prometheus_module_version_maps_to_its_release() -> None:
    versions = {"PROMETHEUS_MODULE_VERSION": "v0.316.0", "KUBERNETES_VERSION": "v1.37.2"}
    assert binary_version("promtool", versions) == "v3.16.0"
    assert binary_version("kube-scheduler", versions) == "v1.37.2"
