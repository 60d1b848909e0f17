"""dra pinning: one shared ResourceClaim per physical GPU, referenced by the pods placed on it."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, container, env_of, generic, placement, server, vllm

from vram_operator.api import PlacementStatus
from vram_operator.render import PlacedReplica, RenderSettings, claim_name, render, render_resource_claims

DRA = RenderSettings(pinning_mode="dra")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_dra_pod_references_one_claim_per_gpu_instead_of_the_env_var() -> None:
    rendered = render(server(vllm(tensorParallelSize=2)), [PlacedReplica(0, placement(UUID_A, UUID_B), 0.8)], DRA)
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert_valid(rendered.deployment)
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(rendered.deployment)
    assert "runtimeClassName" not in pod
    assert pod["resourceClaims"] == [
        {"name": "gpu-0", "resourceClaimName": claim_name("workstation", UUID_A)},
        {"name": "gpu-1", "resourceClaimName": claim_name("workstation", UUID_B)},
    ]
    assert container(rendered.deployment)["resources"]["claims"] == [{"name": "gpu-0"}, {"name": "gpu-1"}]
    claims = {claim["metadata"]["name"] for claim in rendered.resource_claims}
    assert claims == {ref["resourceClaimName"] for ref in pod["resourceClaims"]}
    assert rendered.objects[: len(claims)] == list(rendered.resource_claims)


def test_resource_claim_selects_exactly_the_placed_gpu() -> None:
    (claim,) = render_resource_claims(placement(UUID_A), DRA, "ai")
    assert_valid(claim)
    assert claim["apiVersion"] == "resource.k8s.io/v1"
    assert claim["metadata"]["namespace"] == "ai"
    (request,) = claim["spec"]["devices"]["requests"]
    assert request["exactly"] == {
        "deviceClassName": "gpu.nvidia.com",
        "allocationMode": "ExactCount",
        "count": 1,
        "selectors": [{"cel": {"expression": f'device.attributes["gpu.nvidia.com"].uuid == "{UUID_A}"'}}],
    }
    assert claim["metadata"]["annotations"] == {"vram.dev/node": "workstation", "vram.dev/gpu-uuid": UUID_A}


def test_a_mig_device_is_claimed_under_the_mig_device_class_by_its_own_uuid() -> None:
    mig_uuid = "MIG-4f1c2a9e-0d3b-5a6c-8e7f-1a2b3c4d5e6f"
    on_mig = PlacementStatus.model_validate(
        {
            "node": "a100",
            "gpus": [{"index": 0, "uuid": mig_uuid, "name": "NVIDIA A100 MIG 3g.40gb", "totalMiB": 40192, "mig": True}],
            "budgetMiB": 30000,
        }
    )
    (claim,) = render_resource_claims(on_mig, DRA, "ai")
    assert_valid(claim)
    (request,) = claim["spec"]["devices"]["requests"]
    assert request["exactly"]["deviceClassName"] == "mig.nvidia.com"
    assert request["exactly"]["selectors"] == [
        {"cel": {"expression": f'device.attributes["gpu.nvidia.com"].uuid == "{mig_uuid}"'}}
    ]
    (whole,) = render_resource_claims(placement(UUID_A), DRA, "ai")  # a whole GPU keeps the GPU class
    assert whole["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == "gpu.nvidia.com"


def test_servers_on_one_gpu_share_one_claim() -> None:
    llm = render(server(vllm(), name="llm"), [PlacedReplica(0, placement(UUID_A, budget_mib=18000), 0.7)], DRA)
    yolo = render(server(generic(), name="yolo"), [PlacedReplica(0, placement(UUID_A, budget_mib=650), None)], DRA)
    assert llm.resource_claims == yolo.resource_claims
    refs = [
        rendered.deployment["spec"]["template"]["spec"]["resourceClaims"][0]["resourceClaimName"]
        for rendered in (llm, yolo)
    ]
    assert refs[0] == refs[1] == llm.resource_claims[0]["metadata"]["name"]


def test_envvar_mode_renders_no_claims() -> None:
    rendered = render(server(vllm()), [PlacedReplica(0, placement(), 0.5)], RenderSettings())
    assert rendered.resource_claims == ()
    assert render_resource_claims(placement(), RenderSettings(), "ai") == []


node_names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,250}[a-z0-9])?", fullmatch=True)
gpu_uuids = st.uuids().map(lambda value: f"GPU-{value}") | st.uuids().map(lambda value: f"MIG-{value}")


@given(node=node_names, uuid=gpu_uuids, other=gpu_uuids)
def test_claim_names_are_valid_stable_and_distinct_per_gpu(node: str, uuid: str, other: str) -> None:
    name = claim_name(node, uuid)
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name), name
    assert claim_name(node, uuid) == name
    if other.lower() != uuid.lower():
        assert claim_name(node, other) != name
