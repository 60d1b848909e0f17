"""The chart's trust boundaries as rendered: admission policies, their values, aggregated roles.

What the policies refuse is tested on the real API server (tests/integration/test_ship_trust.py).
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from ship_helpers import RenderChart, by_kind, one

AGENT_POLICY = "ship-vram-operator-agent-own-gpunode"
HOST_POLICY = "ship-vram-operator-server-host-access"
VISIBLE_POLICY = "ship-vram-operator-visible-devices"
NODES_POLICY = "ship-vram-operator-operator-node-labels"


def _policies(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in by_kind(documents, "ValidatingAdmissionPolicy")}


def _operator_args(documents: list[dict[str, Any]]) -> argparse.Namespace:
    from vram_operator.controller.main import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    (container,) = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return parser.parse_args(container["args"])


def test_every_policy_has_a_denying_binding(render_chart: RenderChart) -> None:
    documents = render_chart(release="ship", namespace="gpu-system")
    policies = _policies(documents)
    assert set(policies) == {AGENT_POLICY, HOST_POLICY, VISIBLE_POLICY, NODES_POLICY}
    bindings = {b["spec"]["policyName"]: b for b in by_kind(documents, "ValidatingAdmissionPolicyBinding")}
    assert set(bindings) == set(policies)
    for name, policy in policies.items():
        assert policy["apiVersion"] == bindings[name]["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert bindings[name]["spec"]["validationActions"] == ["Deny"]


def test_agent_policy_matches_only_this_releases_agent_account(render_chart: RenderChart) -> None:
    policy = _policies(render_chart(release="ship", namespace="gpu-system"))[AGENT_POLICY]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:gpu-system:ship-vram-operator-agent'"
    )
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"gpunodes", "gpunodes/status"}
    assert "CREATE" in rule["operations"]  # the agent creates its GpuNode when it is missing


@pytest.mark.parametrize("values", [("agent.enabled=false",), ("admission.agentOwnGpuNode=false",)])
def test_agent_policy_goes_with_the_agent_or_its_toggle(render_chart: RenderChart, values: tuple[str, ...]) -> None:
    assert set(_policies(render_chart(*values, release="ship"))) == {HOST_POLICY, VISIBLE_POLICY, NODES_POLICY}


def test_host_access_is_refused_by_default_in_policy_and_operator(render_chart: RenderChart) -> None:
    documents = render_chart(release="ship")
    assert HOST_POLICY in _policies(documents)
    assert _operator_args(documents).allow_host_access is False


def test_allow_host_access_drops_the_policy_and_tells_the_operator(render_chart: RenderChart) -> None:
    documents = render_chart("admission.allowHostAccess=true", release="ship")
    assert HOST_POLICY not in _policies(documents)
    assert not [
        b for b in by_kind(documents, "ValidatingAdmissionPolicyBinding") if b["spec"]["policyName"] == HOST_POLICY
    ]
    assert _operator_args(documents).allow_host_access is True


def _visible_binding(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (binding,) = [
        b for b in by_kind(documents, "ValidatingAdmissionPolicyBinding") if b["spec"]["policyName"] == VISIBLE_POLICY
    ]
    return binding


def test_visible_devices_policy_trusts_the_operator_and_the_template_copying_controllers(
    render_chart: RenderChart,
) -> None:
    documents = render_chart(
        "admission.visibleDevices.trustedUsers={system:serviceaccount:kuberay:operator}",
        release="ship",
        namespace="gpu-system",
    )
    (condition,) = _policies(documents)[VISIBLE_POLICY]["spec"]["matchConditions"]
    trusted = condition["expression"]
    assert "'system:serviceaccount:gpu-system:ship-vram-operator'" in trusted
    assert "'system:serviceaccount:kube-system:replicaset-controller'" in trusted
    assert "'system:serviceaccount:kuberay:operator'" in trusted
    binding = _visible_binding(documents)["spec"]["matchResources"]
    (names,) = binding["namespaceSelector"]["matchExpressions"]
    assert (names["operator"], names["values"]) == ("NotIn", ["gpu-system", "gpu-operator"])
    assert "objectSelector" not in binding


def test_visible_devices_exemptions_and_toggle(render_chart: RenderChart) -> None:
    documents = render_chart(
        "admission.visibleDevices.exemptNamespaces=null",
        "admission.visibleDevices.exemptLabels.team=gpu",
        release="ship",
    )
    binding = _visible_binding(documents)["spec"]["matchResources"]
    assert binding["namespaceSelector"]["matchExpressions"][0]["values"] == ["vram-system"]
    assert binding["objectSelector"]["matchExpressions"] == [{"key": "team", "operator": "NotIn", "values": ["gpu"]}]
    assert VISIBLE_POLICY not in _policies(render_chart("admission.visibleDevices.enabled=false", release="ship"))


def _user_roles(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        r["metadata"]["name"].rsplit("-", 1)[1]: r
        for r in by_kind(documents, "ClusterRole")
        if r["metadata"]["labels"]["app.kubernetes.io/component"] == "user-roles"
    }


def _grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_aggregated_roles_carry_the_builtin_labels_and_grant_no_writes_beyond_servers(
    render_chart: RenderChart,
) -> None:
    roles = _user_roles(render_chart(release="ship"))
    assert set(roles) == {"view", "edit"}
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    labels = {
        name: {k[len(aggregate) :] for k in r["metadata"]["labels"] if k.startswith(aggregate)}
        for name, r in roles.items()
    }
    assert labels == {"view": {"view", "edit", "admin"}, "edit": {"edit", "admin"}}
    view, edit = _grants(roles["view"]), _grants(roles["edit"])
    assert {verb for _, verb in view} == {"get", "list", "watch"}
    assert ("inferenceservers", "list") in view and ("gpunodes", "list") in view
    assert ("inferenceservers", "create") in edit and ("inferenceservers", "delete") in edit
    assert {resource for resource, _ in edit} == {"inferenceservers"}  # no status, no GpuAssignments, no GpuNodes
    assert all(rule["apiGroups"] == ["vram.dev"] for role in roles.values() for rule in role["rules"])


def test_aggregated_roles_can_be_left_out(render_chart: RenderChart) -> None:
    assert _user_roles(render_chart("aggregatedRoles.enabled=false")) == {}


@pytest.mark.parametrize("values", [(), ("operator.disableDevicePlugin=false",)])
def test_node_label_policy_goes_with_the_operators_node_patch(
    render_chart: RenderChart, values: tuple[str, ...]
) -> None:
    """The operator may patch Nodes (and puts the label back with disableDevicePlugin=false too), so the
    policy narrowing that patch to the device-plugin label is there whenever the permission is."""
    documents = render_chart(*values, release="ship", namespace="gpu-system")
    (operator_role,) = [r for r in by_kind(documents, "ClusterRole") if r["metadata"]["name"] == "ship-vram-operator"]
    assert ("nodes", "patch") in _grants(operator_role)
    policy = _policies(documents)[NODES_POLICY]
    (condition,) = policy["spec"]["matchConditions"]
    assert (
        condition["expression"] == "request.userInfo.username == 'system:serviceaccount:gpu-system:ship-vram-operator'"
    )
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"nodes", "nodes/status"}
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
