"""The chart's trust boundaries on the real API server, each allowed and refused: an agent writes only
its own node's GpuNode (ValidatingAdmissionPolicy over the bound token's node claim), InferenceServers
reach no host path (ValidatingAdmissionPolicy), the built-in edit/view roles cover InferenceServers
(aggregated ClusterRoles), only the operator pins GPUs with NVIDIA_VISIBLE_DEVICES
(ValidatingAdmissionPolicy), and the operator changes of Nodes only the device-plugin label and its
annotation (ValidatingAdmissionPolicy)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from localcluster import UNPRIVILEGED_USER, binary_path
from localcluster.waiting import eventually
from vram_operator.agent.reporter import GpuNodeReporter, Outcome
from vram_operator.api import InferenceServer, PlacementStatus
from vram_operator.api.base import API_VERSION, GROUP, VERSION
from vram_operator.api.gpu_node import GpuNodeStatus
from vram_operator.controller.device_plugin import DEVICE_PLUGIN_LABEL, DISABLED, PREVIOUS_ANNOTATION
from vram_operator.controller.kube import Kube
from vram_operator.render import PlacedReplica, RenderSettings, render

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "vram-operator"
# What the trust boundaries are made of: RBAC and admission objects (no workloads: nothing runs here).
KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
RELEASE = "trust"
AGENT = f"{RELEASE}-vram-operator-agent"
HOST_POLICY = f"{RELEASE}-vram-operator-server-host-access"
NODES_POLICY = f"{RELEASE}-vram-operator-operator-node-labels"
OPERATOR = f"{RELEASE}-vram-operator"
# A label the release exempts from the NVIDIA_VISIBLE_DEVICES policy (admission.visibleDevices.exemptLabels).
EXEMPT_LABEL = ("example.org/gpu-pinning", "exempt")
FIELD_MANAGER = "trust-test"
FORBIDDEN = 403
# Policies and bindings reach the API server's admission through an informer: moments, not minutes.
TAKES_EFFECT_SECONDS = 30.0


def helm_template(namespace: str, *values: str) -> list[dict[str, Any]]:
    command = [str(binary_path("helm")), "template", RELEASE, str(CHART), "--namespace", namespace]
    for value in values:
        command += ["--set", value]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc and doc["kind"] in KINDS]


def resource_of(dyn: Any, obj: dict[str, Any]) -> Any:
    return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def delete(dyn: Any, obj: dict[str, Any]) -> None:
    try:
        dyn.delete(resource_of(dyn, obj), name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))
    except ApiException as error:
        if error.status != 404:
            raise


@dataclass(frozen=True)
class Release:
    namespace: str
    objects: list[dict[str, Any]]


@pytest.fixture(scope="module")
def release(api_client: client.ApiClient) -> Iterator[Release]:
    """The chart's agent RBAC, aggregated roles and admission policies, applied to the cluster."""
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api_client)
    namespace = f"vram-trust-{uuid.uuid4().hex[:6]}"
    core.create_namespace(body={"metadata": {"name": namespace}})
    key, value = EXEMPT_LABEL
    objects = helm_template(
        namespace, f"admission.visibleDevices.exemptLabels.{key.replace('.', chr(92) + '.')}={value}"
    )
    try:
        for obj in objects:
            dyn.server_side_apply(
                resource_of(dyn, obj),
                body=obj,
                name=obj["metadata"]["name"],
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
            )
        yield Release(namespace, objects)
    finally:
        for obj in reversed(objects):
            delete(dyn, obj)
        core.delete_namespace(namespace)


def refusal(action: Callable[[], object], *, policy_only: bool = False) -> ApiException | None:
    """The API server's 403 for the action, or None when it was allowed (or, with policy_only,
    refused by RBAC rather than by an admission policy)."""
    try:
        action()
    except ApiException as error:
        if error.status != FORBIDDEN:
            raise
        return None if policy_only and "ValidatingAdmissionPolicy" not in message(error) else error
    return None


def allowed(action: Callable[[], object]) -> bool | None:
    """True when the action passed; None (for eventually) when the API server refused it (403)."""
    return True if refusal(action) is None else None


def message(error: ApiException) -> str:
    return str(yaml.safe_load(error.body)["message"])


# --- 8. an agent writes only its own node's GpuNode ---------------------------------------------


def token_client(kubeconfig: Path, token: str) -> client.ApiClient:
    """An ApiClient for the cluster under test that authenticates with a bearer token only."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.cert_file = None
    configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class AgentSetup:
    node_a: str
    node_b: str
    bound: client.ApiClient  # the agent's token bound to its pod on node_a
    unbound: client.ApiClient  # the agent's token bound to nothing: no node claim


@pytest.fixture(scope="module")
def agent(release: Release, api_client: client.ApiClient, kubeconfig: Path) -> Iterator[AgentSetup]:
    """Two nodes (kept off the scheduler's list) and the agent's pod bound to the first: the kubelet's
    token for that pod is what a TokenRequest bound to the pod returns."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    suffix = uuid.uuid4().hex[:6]
    node_a, node_b = f"trust-a-{suffix}", f"trust-b-{suffix}"
    taint = {"key": "vram.dev/trust-test", "effect": "NoSchedule"}
    for node in (node_a, node_b):
        core.create_node(body={"metadata": {"name": node}, "spec": {"unschedulable": True, "taints": [taint]}})
    pod_body: Any = {
        "metadata": {"name": "agent-a"},
        "spec": {
            "serviceAccountName": AGENT,
            "nodeName": node_a,
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "example.org/vram-agent:test"}],
        },
    }
    clients: list[client.ApiClient] = []
    try:
        pod: Any = core.create_namespaced_pod(release.namespace, pod_body)
        bound_ref = {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}
        tokens = [
            core.create_namespaced_service_account_token(
                AGENT, release.namespace, {"spec": {"expirationSeconds": 600, **extra}}
            ).status.token
            for extra in ({"boundObjectRef": bound_ref}, {})
        ]
        clients = [token_client(kubeconfig, token) for token in tokens]
        setup = AgentSetup(node_a, node_b, *clients)
        # RBAC and admission both load what was just applied from watch caches: a policy refusal of
        # the token without a node means the agent's RBAC grant and the policy are both in force
        probe = {"apiVersion": API_VERSION, "kind": "GpuNode", "metadata": {"name": node_a}, "spec": {}}
        as_unbound = client.CustomObjectsApi(setup.unbound)
        eventually(
            lambda: refusal(
                lambda: as_unbound.create_cluster_custom_object(GROUP, VERSION, "gpunodes", probe, dry_run="All"),
                policy_only=True,
            ),
            "the agent's RBAC and GpuNode policy to take effect",
            TAKES_EFFECT_SECONDS,
        )
        yield setup
    finally:
        for api in clients:
            api.close()  # type: ignore[no-untyped-call]
        for node in (node_a, node_b):
            core.delete_node(node)
            try:
                custom.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", node)
            except ApiException as error:
                if error.status != 404:
                    raise


def whoami(api: client.ApiClient) -> Any:
    body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    return client.AuthenticationV1Api(api).create_self_subject_review(body=body).status.user_info


def status_patch(heartbeat: str) -> dict[str, Any]:
    return {"status": {"backend": "simulated", "lastHeartbeat": heartbeat, "gpus": []}}


def test_bound_agent_token_names_its_node(release: Release, agent: AgentSetup) -> None:
    user = whoami(agent.bound)
    assert user.username == f"system:serviceaccount:{release.namespace}:{AGENT}"
    assert user.extra["authentication.kubernetes.io/node-name"] == [agent.node_a]
    assert "authentication.kubernetes.io/node-name" not in (whoami(agent.unbound).extra or {})


def test_agent_creates_and_reports_its_own_gpu_node(agent: AgentSetup, custom_objects: client.CustomObjectsApi) -> None:
    """The agent's own path: GpuNode missing, so it is created (allowed: its name), then its status patched."""
    reporter = GpuNodeReporter(client.CustomObjectsApi(agent.bound), agent.node_a)
    assert reporter.report(GpuNodeStatus(backend="simulated")) is Outcome.WRITTEN
    stored: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", agent.node_a)
    assert stored["status"]["backend"] == "simulated"
    patched = client.CustomObjectsApi(agent.bound).patch_cluster_custom_object_status(
        GROUP, VERSION, "gpunodes", agent.node_a, status_patch("2026-01-01T00:00:00Z")
    )
    assert patched["status"]["lastHeartbeat"] == "2026-01-01T00:00:00Z"


def test_agent_may_not_write_another_nodes_gpu_node(agent: AgentSetup, custom_objects: client.CustomObjectsApi) -> None:
    body = {"apiVersion": API_VERSION, "kind": "GpuNode", "metadata": {"name": agent.node_b}, "spec": {}}
    as_agent = client.CustomObjectsApi(agent.bound)

    refused = refusal(lambda: as_agent.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body))
    assert refused is not None
    assert f"the node agent on node {agent.node_a} may write only GpuNode {agent.node_a}, not {agent.node_b}" in (
        message(refused)
    )
    # the GpuNode exists (an admin is not bound by the policy): the agent still may not patch it
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body)
    patch = status_patch("2026-01-01T00:00:00Z")
    refused_patch = refusal(
        lambda: as_agent.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", agent.node_b, patch)
    )
    assert refused_patch is not None and f"not {agent.node_b}" in message(refused_patch)
    assert GpuNodeReporter(as_agent, agent.node_b).report(GpuNodeStatus(backend="simulated")) is Outcome.FAILED
    stored: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "gpunodes", agent.node_b)
    assert "status" not in stored
    custom_objects.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", agent.node_b, patch)


def test_agent_token_without_a_node_writes_no_gpu_node(agent: AgentSetup) -> None:
    as_agent = client.CustomObjectsApi(agent.unbound)
    patch = status_patch("2026-01-01T00:00:00Z")
    body = {"apiVersion": API_VERSION, "kind": "GpuNode", "metadata": {"name": agent.node_a}, "spec": {}}
    refused = refusal(lambda: as_agent.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body))
    assert refused is not None and "this token names no node" in message(refused)
    GpuNodeReporter(client.CustomObjectsApi(agent.bound), agent.node_a).report(GpuNodeStatus(backend="simulated"))
    refused = refusal(
        lambda: as_agent.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", agent.node_a, patch)
    )
    assert refused is not None and "this token names no node" in message(refused)


# --- 9. InferenceServers reach no host path -------------------------------------------------------


def server(name: str, volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceServer",
        "metadata": {"name": name},
        "spec": {"engine": "generic", "image": "example.org/yolo:1", "vramBudget": "1Gi", "volumes": volumes},
    }


HOST_ROOT = {"name": "root", "hostPath": {"path": "/"}}
HARMLESS = [{"name": "scratch", "emptyDir": {}}, {"name": "config", "configMap": {"name": "engine-config"}}]


def test_host_path_volume_is_refused_at_admission(
    release: Release, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    body = server("host-root", [*HARMLESS, HOST_ROOT])

    def create_host_root(dry_run: str | None = None) -> Any:
        return custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservers", body, dry_run=dry_run
        )

    # probed without storing anything until the policy is loaded, then the real request
    eventually(lambda: refusal(lambda: create_host_root("All")), "the host access policy", TAKES_EFFECT_SECONDS)
    refused = refusal(create_host_root)
    assert refused is not None
    assert "spec.volumes: hostPath volume root refused" in message(refused)
    assert "admission.allowHostAccess" in message(refused)
    assert custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers")["items"] == []


def test_harmless_volumes_pass_and_a_later_host_path_is_refused(
    release: Release, namespace: str, custom_objects: client.CustomObjectsApi
) -> None:
    eventually(
        lambda: refusal(
            lambda: custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferenceservers", server("probe", [HOST_ROOT]), dry_run="All"
            )
        ),
        "the host access policy",
        TAKES_EFFECT_SECONDS,
    )
    created: Any = custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", server("harmless", HARMLESS)
    )
    assert created["spec"]["volumes"] == HARMLESS
    # metadata edits (what the operator's finalizer and annotations are) pass
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "harmless", {"metadata": {"labels": {"team": "ml"}}}
    )
    refused = refusal(
        lambda: custom_objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservers", "harmless", {"spec": {"volumes": [*HARMLESS, HOST_ROOT]}}
        )
    )
    assert refused is not None and "hostPath volume root refused" in message(refused)


@pytest.mark.parametrize(
    "contexts",
    [
        {"securityContext": {"privileged": True}},
        {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}},
        {"securityContext": {"procMount": "Unmasked"}},
        {"podSecurityContext": {"windowsOptions": {"hostProcess": True}}},
    ],
    ids=["privileged", "capabilities-add", "unmasked-proc", "host-process"],
)
def test_host_access_through_a_security_context_is_refused_at_admission(
    release: Release, namespace: str, custom_objects: client.CustomObjectsApi, contexts: dict[str, Any]
) -> None:
    def create(spec: dict[str, Any], name: str) -> Any:
        body = server(name, [])
        body["spec"].update(spec)
        return custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservers", body, dry_run="All"
        )

    refused = eventually(lambda: refusal(lambda: create(contexts, "host-context")), "the policy", TAKES_EFFECT_SECONDS)
    assert "spec.securityContext/spec.podSecurityContext" in message(refused)
    assert "admission.allowHostAccess" in message(refused)
    # the same fields without host access pass: a non-root user, a read-only root, dropped capabilities
    harmless = {
        "securityContext": {"privileged": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 1000},
    }
    assert create(harmless, "harmless-context")["spec"]["podSecurityContext"]["runAsUser"] == 1000


def test_allow_host_access_lifts_the_refusal(
    release: Release, namespace: str, api_client: client.ApiClient, custom_objects: client.CustomObjectsApi
) -> None:
    """admission.allowHostAccess=true renders no host access policy: what `helm upgrade` to it removes,
    removed here, then a hostPath server is accepted (the operator then renders it: see
    test_operator_host_access.py)."""
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    allowing = {
        (o["kind"], o["metadata"]["name"]) for o in helm_template(release.namespace, "admission.allowHostAccess=true")
    }
    removed = [o for o in release.objects if (o["kind"], o["metadata"]["name"]) not in allowing]
    assert {(o["kind"], o["metadata"]["name"]) for o in removed} == {
        ("ValidatingAdmissionPolicy", HOST_POLICY),
        ("ValidatingAdmissionPolicyBinding", HOST_POLICY),
    }
    body = server("host-models", [{"name": "models", "hostPath": {"path": "/srv/models", "type": "Directory"}}])
    try:
        for obj in removed:
            delete(dyn, obj)

        def accepted() -> Any:
            try:
                return custom_objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "inferenceservers", body
                )
            except ApiException as error:
                if error.status != FORBIDDEN:
                    raise
                return None

        created = eventually(accepted, "a hostPath server once the policy is gone", TAKES_EFFECT_SECONDS)
        assert created["spec"]["volumes"][0]["hostPath"]["path"] == "/srv/models"
    finally:
        for obj in removed:
            dyn.server_side_apply(
                resource_of(dyn, obj), body=obj, name=obj["metadata"]["name"], field_manager=FIELD_MANAGER
            )
    # back to refusing: the server accepted meanwhile keeps its volume through metadata edits (the
    # operator's finalizer and annotations) and can be deleted, but gains no further host path
    more = {"spec": {"volumes": [*created["spec"]["volumes"], HOST_ROOT]}}
    refused = eventually(
        lambda: refusal(
            lambda: custom_objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "inferenceservers", "host-models", more, dry_run="All"
            )
        ),
        "the restored policy",
        TAKES_EFFECT_SECONDS,
    )
    assert "hostPath volume models, root refused" in message(refused)
    finalizer = {"metadata": {"finalizers": ["kopf.vram.dev/finalizer"]}}
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "host-models", finalizer
    )
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "host-models")
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", "host-models", {"metadata": {"finalizers": None}}
    )


# --- 10. the built-in edit and view roles cover InferenceServers ----------------------------------


def bind(api_client: client.ApiClient, namespace: str, cluster_role: str) -> None:
    binding: Any = {
        "metadata": {"name": f"unprivileged-{cluster_role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": UNPRIVILEGED_USER}],
    }
    client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(namespace, binding)


def test_edit_role_creates_inference_servers(
    release: Release, namespace: str, api_client: client.ApiClient, unprivileged_api_client: client.ApiClient
) -> None:
    user = client.CustomObjectsApi(unprivileged_api_client)

    def create() -> Any:
        return user.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservers", server("by-editor", HARMLESS)
        )

    assert refusal(create) is not None  # nothing granted yet
    bind(api_client, namespace, "edit")
    # the aggregation controller folds our rules into edit; the authorizer's cache follows
    assert eventually(lambda: allowed(create), "edit to cover InferenceServers", TAKES_EFFECT_SECONDS)
    user.delete_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", "by-editor")
    assert refusal(lambda: user.list_cluster_custom_object(GROUP, VERSION, "gpuassignments")) is not None


def test_view_role_lists_but_does_not_create_inference_servers(
    release: Release,
    namespace: str,
    api_client: client.ApiClient,
    unprivileged_api_client: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
) -> None:
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "inferenceservers", server("seen", HARMLESS)
    )
    user = client.CustomObjectsApi(unprivileged_api_client)

    def names() -> list[str] | None:
        try:
            found = user.list_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers")
        except ApiException as error:
            if error.status != FORBIDDEN:
                raise
            return None
        return [item["metadata"]["name"] for item in found["items"]]

    assert names() is None
    bind(api_client, namespace, "view")
    assert eventually(names, "view to cover InferenceServers", TAKES_EFFECT_SECONDS) == ["seen"]
    refused = refusal(
        lambda: user.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservers", server("by-viewer", HARMLESS)
        )
    )
    assert refused is not None and UNPRIVILEGED_USER in message(refused)


def test_policies_type_check_against_the_installed_schemas(release: Release, api_client: client.ApiClient) -> None:
    """The API server type-checks each policy's CEL against the CRD schema it matches; a typo in a
    field name would show as a warning here (and the expression would fail at admission)."""
    dyn: Any = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    policies = [o for o in release.objects if o["kind"] == "ValidatingAdmissionPolicy"]
    assert len(policies) == 4

    def checked(policy: dict[str, Any]) -> Any:
        stored = dyn.get(resource_of(dyn, policy), name=policy["metadata"]["name"]).to_dict()
        status = stored.get("status") or {}
        return status if status.get("observedGeneration") == stored["metadata"]["generation"] else None

    for policy in policies:
        status = eventually(
            lambda policy=policy: checked(policy), f"{policy['metadata']['name']} type-checked", TAKES_EFFECT_SECONDS
        )
        assert "typeChecking" in status and not status["typeChecking"].get("expressionWarnings"), status


# --- NVIDIA_VISIBLE_DEVICES: only the operator pins GPUs ------------------------------------------


def pinned_pod(name: str, *, env: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """A pod that sets NVIDIA_VISIBLE_DEVICES (env) in its container, wearing the labels the operator's
    server pods carry: labels prove nothing to the policy."""
    visible = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}] if env is None else env
    labels = {"app.kubernetes.io/managed-by": "vram-operator", "app.kubernetes.io/name": "inference-server"}
    container = {"name": "cuda", "image": "example.org/cuda:12", "env": visible}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [container], **spec}}


def server_deployment(namespace: str) -> dict[str, Any]:
    """The Deployment the operator renders for a generic server pinned (envvar) to one GPU."""
    server = InferenceServer.model_validate(
        {
            # no uid, so no owner reference: the garbage collector would delete a Deployment owned by
            # a server that does not exist
            "metadata": {"name": "detector", "namespace": namespace},
            "spec": {"engine": "generic", "image": "example.org/yolo:1", "vramBudget": "1Gi"},
        }
    )
    gpu = {"index": 0, "uuid": "GPU-0a0b0c0d-1111-2222-3333-444455556666", "totalMiB": 24564}
    placement = PlacementStatus.model_validate({"node": "gpu-node", "gpus": [gpu], "budgetMiB": 1024})
    return render(server, [PlacedReplica(0, placement)], RenderSettings()).deployment


@pytest.fixture(scope="module")
def operator_api(release: Release, api_client: client.ApiClient, kubeconfig: Path) -> Iterator[client.ApiClient]:
    """An ApiClient authenticated as the operator's ServiceAccount (a token of it)."""
    core = client.CoreV1Api(api_client)
    request: Any = {"spec": {"expirationSeconds": 600}}
    token = core.create_namespaced_service_account_token(OPERATOR, release.namespace, request).status.token
    api = token_client(kubeconfig, token)
    yield api
    api.close()  # type: ignore[no-untyped-call]


def visible_devices_policy_loaded(core: client.CoreV1Api, namespace: str) -> None:
    eventually(
        lambda: refusal(lambda: core.create_namespaced_pod(namespace, pinned_pod("probe"), dry_run="All")),
        "the NVIDIA_VISIBLE_DEVICES policy",
        TAKES_EFFECT_SECONDS,
    )


@pytest.mark.parametrize(
    "pod",
    [
        pinned_pod("all"),
        pinned_pod("one-uuid", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "GPU-0a0b0c0d"}]),
        pinned_pod(
            "from-field",
            env=[{"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        ),
        pinned_pod(
            "init",
            env=[],
            initContainers=[
                {"name": "warmup", "image": "example.org/cuda:12", "env": [{"name": "NVIDIA_VISIBLE_DEVICES"}]}
            ],
        ),
    ],
    ids=["all", "one-uuid", "value-from", "init-container"],
)
def test_a_pod_setting_nvidia_visible_devices_is_refused(
    release: Release, namespace: str, core_v1: client.CoreV1Api, pod: dict[str, Any]
) -> None:
    """Refused for anyone but the operator (here the cluster admin), whatever the value, in any
    container, even wearing the operator's labels."""
    visible_devices_policy_loaded(core_v1, namespace)
    refused = refusal(lambda: core_v1.create_namespaced_pod(namespace, pod))
    assert refused is not None
    where = "initContainers/warmup" if pod["spec"].get("initContainers") else "containers/cuda"
    assert f"NVIDIA_VISIBLE_DEVICES is set in {where}: only the vram-operator pins GPUs" in message(refused)
    assert core_v1.list_namespaced_pod(namespace).items == []


def test_pods_without_it_and_exempted_pods_pass(release: Release, namespace: str, core_v1: client.CoreV1Api) -> None:
    visible_devices_policy_loaded(core_v1, namespace)
    plain = pinned_pod("plain", env=[{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}])
    assert core_v1.create_namespaced_pod(namespace, plain).metadata.name == "plain"
    labelled = pinned_pod("exempt-label")
    labelled["metadata"]["labels"][EXEMPT_LABEL[0]] = EXEMPT_LABEL[1]
    assert core_v1.create_namespaced_pod(namespace, labelled).metadata.name == "exempt-label"
    # the release's namespace (the agent reads every GPU) and an exempt namespace (the GPU Operator's)
    assert core_v1.create_namespaced_pod(release.namespace, pinned_pod("agent-like")).metadata.name == "agent-like"
    core_v1.delete_namespaced_pod("agent-like", release.namespace)
    core_v1.create_namespace(body={"metadata": {"name": "gpu-operator"}})
    try:
        assert core_v1.create_namespaced_pod("gpu-operator", pinned_pod("device-plugin")).metadata.name
    finally:
        core_v1.delete_namespace("gpu-operator")


def test_cron_jobs_and_debug_containers_cannot_set_it(
    release: Release, namespace: str, core_v1: client.CoreV1Api, api_client: client.ApiClient
) -> None:
    """The policy reads each kind's pod spec: a CronJob's job template, and an ephemeral container
    added to a running pod (kubectl debug)."""
    visible_devices_policy_loaded(core_v1, namespace)
    pod = pinned_pod("cron", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])
    pod["spec"]["restartPolicy"] = "Never"
    cron: Any = {
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": pod}}},
    }
    refused = refusal(lambda: client.BatchV1Api(api_client).create_namespaced_cron_job(namespace, cron))
    assert refused is not None and "containers/cuda" in message(refused)
    core_v1.create_namespaced_pod(namespace, pinned_pod("plain", env=[]))
    debug = {
        "name": "debug",
        "image": "example.org/cuda:12",
        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
    }
    patch = {"spec": {"ephemeralContainers": [debug]}}
    refused = refusal(lambda: core_v1.patch_namespaced_pod_ephemeralcontainers("plain", namespace, patch))
    assert refused is not None and "ephemeralContainers/debug" in message(refused)
    debug["env"] = []
    added: Any = core_v1.patch_namespaced_pod_ephemeralcontainers("plain", namespace, patch)
    assert [c.name for c in added.spec.ephemeral_containers] == ["debug"]


def test_the_operators_server_deployment_and_its_pods_pass(
    release: Release,
    namespace: str,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    operator_api: client.ApiClient,
) -> None:
    """The operator's ServiceAccount writes the Deployment; the built-in controllers create its
    ReplicaSet and pod from that admitted template. The same Deployment from anyone else is refused,
    and so is changing its NVIDIA_VISIBLE_DEVICES, but other edits (a rollout restart) pass."""
    visible_devices_policy_loaded(core_v1, namespace)
    body = server_deployment(namespace)
    refused = refusal(lambda: apps_v1.create_namespaced_deployment(namespace, body))
    assert refused is not None and "containers/engine" in message(refused)
    client.AppsV1Api(operator_api).create_namespaced_deployment(namespace, body)

    def server_pod() -> Any:
        pods = core_v1.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=detector").items
        return pods[0] if pods else None

    pod = eventually(server_pod, "the ReplicaSet controller to create the server pod", TAKES_EFFECT_SECONDS)
    env = {e.name: e.value for e in pod.spec.containers[0].env}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-0a0b0c0d-1111-2222-3333-444455556666"
    restart = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}
    apps_v1.patch_namespaced_deployment("detector", namespace, restart)
    container = body["spec"]["template"]["spec"]["containers"][0]
    widened = [{**e, "value": "all"} if e["name"] == "NVIDIA_VISIBLE_DEVICES" else e for e in container["env"]]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container["name"], "env": widened}]}}}}
    refused = refusal(lambda: apps_v1.patch_namespaced_deployment("detector", namespace, patch))
    assert refused is not None and "only the vram-operator pins GPUs" in message(refused)


# --- the operator changes of Nodes only the device-plugin label and its annotation ----------------

OTHER_LABEL = ("example.org/rack", "r1")
OTHER_ANNOTATION = ("example.org/owner", "ml-platform")
NODE_TAINT = {"key": "vram.dev/trust-test", "effect": "NoSchedule"}


@pytest.fixture
def labelled_node(release: Release, core_v1: client.CoreV1Api, operator_api: client.ApiClient) -> Iterator[str]:
    """A Node (kept off the scheduler) with a device-plugin label, another label, an annotation and a
    taint, once the operator's RBAC and the Node policy are both in force."""
    name = f"trust-node-{uuid.uuid4().hex[:6]}"
    body: Any = {
        "metadata": {
            "name": name,
            "labels": {DEVICE_PLUGIN_LABEL: "true", OTHER_LABEL[0]: OTHER_LABEL[1]},
            "annotations": {OTHER_ANNOTATION[0]: OTHER_ANNOTATION[1]},
        },
        "spec": {"unschedulable": True, "taints": [NODE_TAINT]},
    }
    core_v1.create_node(body=body)
    as_operator = client.CoreV1Api(operator_api)
    probe = {"metadata": {"labels": {OTHER_LABEL[0]: "r2"}}}
    eventually(
        lambda: refusal(lambda: as_operator.patch_node(name, probe, dry_run="All"), policy_only=True),
        "the operator's Node patch and the Node policy to take effect",
        TAKES_EFFECT_SECONDS,
    )
    yield name
    core_v1.delete_node(name)


def node_metadata(core_v1: client.CoreV1Api, name: str) -> tuple[dict[str, str], dict[str, str], Any]:
    node: Any = core_v1.read_node(name)
    return dict(node.metadata.labels or {}), dict(node.metadata.annotations or {}), node.spec


def test_operator_sets_and_puts_back_the_device_plugin_label(
    labelled_node: str, core_v1: client.CoreV1Api, operator_api: client.ApiClient
) -> None:
    """The operator's own calls (Kube.patch_node_metadata, as DevicePluginLabels makes them) pass."""
    kube = Kube(operator_api)
    kube.patch_node_metadata(labelled_node, {DEVICE_PLUGIN_LABEL: DISABLED}, {PREVIOUS_ANNOTATION: "true"})
    labels, annotations, _ = node_metadata(core_v1, labelled_node)
    assert labels[DEVICE_PLUGIN_LABEL] == DISABLED and annotations[PREVIOUS_ANNOTATION] == "true"
    kube.patch_node_metadata(labelled_node, {DEVICE_PLUGIN_LABEL: None}, {PREVIOUS_ANNOTATION: None})
    labels, annotations, spec = node_metadata(core_v1, labelled_node)
    assert DEVICE_PLUGIN_LABEL not in labels and PREVIOUS_ANNOTATION not in annotations
    assert labels[OTHER_LABEL[0]] == OTHER_LABEL[1] and annotations[OTHER_ANNOTATION[0]] == OTHER_ANNOTATION[1]
    assert spec.unschedulable is True


@pytest.mark.parametrize(
    ("patch", "refused_part"),
    [
        ({"metadata": {"labels": {OTHER_LABEL[0]: "r2"}}}, f"not label {OTHER_LABEL[0]}"),
        ({"metadata": {"labels": {OTHER_LABEL[0]: None}}}, f"not label {OTHER_LABEL[0]}"),
        ({"metadata": {"labels": {"example.org/new": "x"}}}, "not label example.org/new"),
        ({"metadata": {"annotations": {OTHER_ANNOTATION[0]: "me"}}}, f"not annotation {OTHER_ANNOTATION[0]}"),
        ({"metadata": {"annotations": {"example.org/new": "x"}}}, "not annotation example.org/new"),
        ({"spec": {"taints": []}}, "not its spec"),
        ({"spec": {"unschedulable": False}}, "not its spec"),
    ],
    ids=["relabel", "unlabel", "new-label", "reannotate", "new-annotation", "taints", "unschedulable"],
)
def test_operator_may_change_nothing_else_of_a_node(
    labelled_node: str,
    core_v1: client.CoreV1Api,
    operator_api: client.ApiClient,
    patch: dict[str, Any],
    refused_part: str,
) -> None:
    """Refused even together with the device-plugin label; the Node is left as it was (the node
    controllers add their own taints and annotations meanwhile: only what the patch names is compared)."""
    patch.setdefault("metadata", {}).setdefault("labels", {})[DEVICE_PLUGIN_LABEL] = DISABLED
    refused = refusal(lambda: client.CoreV1Api(operator_api).patch_node(labelled_node, patch))
    assert refused is not None
    assert "the vram-operator may change only the label nvidia.com/gpu.deploy.device-plugin" in message(refused)
    assert f"{refused_part}" in message(refused) and f"(Node {labelled_node})" in message(refused)
    labels, annotations, spec = node_metadata(core_v1, labelled_node)
    assert labels[DEVICE_PLUGIN_LABEL] == "true" and labels[OTHER_LABEL[0]] == OTHER_LABEL[1]
    assert annotations[OTHER_ANNOTATION[0]] == OTHER_ANNOTATION[1]
    assert "example.org/new" not in labels and "example.org/new" not in annotations
    assert spec.unschedulable is True and NODE_TAINT["key"] in {taint.key for taint in spec.taints}


def test_operator_creates_no_node_and_writes_no_node_status(labelled_node: str, operator_api: client.ApiClient) -> None:
    as_operator = client.CoreV1Api(operator_api)
    body: Any = {"metadata": {"name": f"{labelled_node}-new"}}
    assert refusal(lambda: as_operator.create_node(body, dry_run="All")) is not None  # RBAC: no create
    status = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Test"}]}}
    assert refusal(lambda: as_operator.patch_node_status(labelled_node, status)) is not None  # RBAC: no nodes/status


def test_a_cluster_admin_is_not_bound_by_the_node_policy(labelled_node: str, core_v1: client.CoreV1Api) -> None:
    patch = {
        "metadata": {"labels": {OTHER_LABEL[0]: "r2"}, "annotations": {OTHER_ANNOTATION[0]: None}},
        "spec": {"taints": [], "unschedulable": True},
    }
    core_v1.patch_node(labelled_node, patch)
    labels, annotations, spec = node_metadata(core_v1, labelled_node)
    assert labels[OTHER_LABEL[0]] == "r2" and OTHER_ANNOTATION[0] not in annotations
    assert NODE_TAINT["key"] not in {taint.key for taint in spec.taints or []}
