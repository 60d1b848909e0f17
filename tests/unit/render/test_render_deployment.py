"""The Deployment: identity, ownership, envvar pinning, pass-through, roll-out behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kube_schema import assert_valid
from render_builders import UUID_A, UUID_B, container, env_of, generic, llamacpp, placement, server, vllm

from vram_operator.api import PlacementStatus
from vram_operator.render import PLACEMENT_HASH_ANNOTATION, RenderError, RenderSettings, render_deployment

ENVVAR = RenderSettings()


def test_envvar_deployment_is_valid_and_pins_gpus_by_uuid() -> None:
    rendered = render_deployment(server(vllm(tensorParallelSize=2)), placement(UUID_A, UUID_B), 0.42, ENVVAR)
    deployment = rendered.deployment
    assert_valid(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert env_of(deployment)["NVIDIA_VISIBLE_DEVICES"] == f"{UUID_A},{UUID_B}"
    assert env_of(deployment)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["workstation"]}]}]
    assert "resourceClaims" not in pod
    assert rendered.warnings == ()
    # vLLM's memory errors reach the pod status, where the operator reads them.
    assert container(deployment)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_identity_labels_owner_and_strategy() -> None:
    deployment = render_deployment(server(vllm(replicas=2)), placement(), 0.5, ENVVAR).deployment
    meta = deployment["metadata"]
    assert (meta["name"], meta["namespace"]) == ("chat", "ai")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "vram.dev/v1alpha1",
            "kind": "InferenceServer",
            "name": "chat",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "vram-operator"
    assert meta["labels"]["app.kubernetes.io/instance"] == "chat"
    assert meta["labels"]["app.kubernetes.io/component"] == "vllm"
    assert meta["labels"]["vram.dev/server"] == "chat"
    spec = deployment["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["replicas"] == 1  # one Deployment per replica, one pod each
    selected = spec["selector"]["matchLabels"]
    assert selected.items() <= spec["template"]["metadata"]["labels"].items()


def test_extra_labels_are_added_but_never_replace_ours() -> None:
    settings = RenderSettings(extra_labels={"team": "ml", "app.kubernetes.io/managed-by": "helm"})
    labels = render_deployment(server(vllm()), placement(), 0.5, settings).deployment["metadata"]["labels"]
    assert labels["team"] == "ml"
    assert labels["app.kubernetes.io/managed-by"] == "vram-operator"


def test_no_uid_means_no_owner_reference_and_a_warning() -> None:
    rendered = render_deployment(server(vllm(), uid=None), placement(), 0.5, ENVVAR)
    assert "ownerReferences" not in rendered.deployment["metadata"]
    assert any(warning.startswith("metadata.uid") for warning in rendered.warnings)
    assert_valid(rendered.deployment)


def test_device_plugin_gpu_request_is_removed_with_a_warning() -> None:
    resources = {
        "requests": {"cpu": "2", "nvidia.com/gpu": 1},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": 1},
    }
    rendered = render_deployment(server(vllm(resources=resources)), placement(), 0.5, ENVVAR)
    kept = container(rendered.deployment)["resources"]
    assert kept == {"requests": {"cpu": "2"}, "limits": {"memory": "16Gi"}}
    assert sum("nvidia.com/gpu removed" in warning for warning in rendered.warnings) == 2
    assert_valid(rendered.deployment)


def test_user_env_volumes_and_mounts_pass_through() -> None:
    spec = generic(
        env=[{"name": "LOG_LEVEL", "value": "debug"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models", "readOnly": True}],
    )
    rendered = render_deployment(server(spec), placement(), None, ENVVAR)
    deployment = rendered.deployment
    assert_valid(deployment)
    env = env_of(deployment)
    assert env["LOG_LEVEL"] == "debug"
    assert env["NVIDIA_VISIBLE_DEVICES"] == UUID_A
    assert [item["name"] for item in container(deployment)["env"]].count("NVIDIA_VISIBLE_DEVICES") == 1
    assert any("spec.env: NVIDIA_VISIBLE_DEVICES ignored" in warning for warning in rendered.warnings)
    assert deployment["spec"]["template"]["spec"]["volumes"] == spec["volumes"]
    assert container(deployment)["volumeMounts"] == spec["volumeMounts"]


def test_tensor_parallel_vllm_gets_a_memory_backed_dev_shm() -> None:
    deployment = render_deployment(
        server(vllm(tensorParallelSize=2)), placement(UUID_A, UUID_B), 0.9, ENVVAR
    ).deployment
    mounts = {mount["mountPath"]: mount["name"] for mount in container(deployment)["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory"}
    single = render_deployment(server(vllm()), placement(), 0.9, ENVVAR).deployment
    assert "volumeMounts" not in container(single)


def test_tolerations_from_settings_reach_the_pod() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    settings = RenderSettings(tolerations=(toleration,))
    deployment = render_deployment(server(llamacpp()), placement(), None, settings).deployment
    assert deployment["spec"]["template"]["spec"]["tolerations"] == [toleration]
    assert_valid(deployment)


def _hash(rendered_placement_reason: str, *uuids: str, budget: float = 9000, node: str = "workstation") -> str:
    where = placement(*uuids, node=node, budget_mib=budget, reason=rendered_placement_reason)
    deployment = render_deployment(server(vllm()), where, 0.5, ENVVAR).deployment
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations[PLACEMENT_HASH_ANNOTATION]


def test_unchanged_placement_renders_an_identical_template() -> None:
    first = render_deployment(server(vllm()), placement(reason="most free memory"), 0.5, ENVVAR).deployment
    again = render_deployment(server(vllm()), placement(reason="reworded: largest GPU"), 0.5, ENVVAR).deployment
    assert first == again


@given(
    uuid=st.sampled_from([UUID_A, UUID_B]),
    budget=st.integers(min_value=100, max_value=80_000),
    node=st.sampled_from(["workstation", "rack-1"]),
)
def test_placement_hash_changes_exactly_when_the_placement_does(uuid: str, budget: int, node: str) -> None:
    baseline = _hash("", UUID_A, budget=9000, node="workstation")
    changed = (uuid, budget, node) != (UUID_A, 9000, "workstation")
    assert (_hash("any reason", uuid, budget=budget, node=node) != baseline) == changed


def test_changed_utilization_rolls_the_pods() -> None:
    def annotation(utilization: float) -> str:
        deployment = render_deployment(server(vllm()), placement(), utilization, ENVVAR).deployment
        value: str = deployment["spec"]["template"]["metadata"]["annotations"][PLACEMENT_HASH_ANNOTATION]
        return value

    assert annotation(0.5) != annotation(0.55)


@pytest.mark.parametrize(
    ("spec", "where", "field"),
    [
        (vllm(tensorParallelSize=2), placement(UUID_A), "status.placement.gpus"),
        (vllm(), placement(UUID_A, node=""), "status.placement.node"),
        (vllm(tensorParallelSize=2), placement(UUID_A, UUID_A), "status.placement.gpus"),
        (generic(), placement(UUID_A, budget_mib=0), "status.placement.budgetMiB"),
    ],
)
def test_unusable_placement_is_a_render_error_naming_the_field(
    spec: dict[str, object], where: PlacementStatus, field: str
) -> None:
    with pytest.raises(RenderError) as raised:
        render_deployment(server(spec), where, 0.5, ENVVAR)
    assert raised.value.field == field
    assert str(raised.value).startswith(field)


def test_unknown_pinning_mode_is_rejected_by_name() -> None:
    with pytest.raises(RenderError, match="pinningMode"):
        RenderSettings(pinning_mode="device-plugin")  # type: ignore[arg-type]
