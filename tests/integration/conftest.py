"""Fixtures for integration tests: a real control plane on loopback, or any cluster.

By default the session starts a LocalCluster (hack/localcluster) from the binaries built by
hack/build-tools.sh; if they are missing the fixtures fail, they never skip. To run the same
tests against another cluster (kind, a real one):

    VRAM_TEST_KUBECONFIG=/path/to/kubeconfig pytest -m integration tests/integration
    VRAM_TEST_USE_EXISTING=1 pytest -m integration tests/integration   # uses $KUBECONFIG
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))

from operator_harness import Operator, Twin, gpu_node_status, publish, start_operator, start_twin

from localcluster import UNPRIVILEGED_USER, FakeNode, LocalCluster
from localcluster.fleet import FAKE_GPUS_ANNOTATION, FAKE_NODE_LABEL, parse_fake_gpus
from localcluster.resources import admin_client, wait_service_account

NAMESPACE_READY_SECONDS = 60.0
_LOCAL_CLUSTER = pytest.StashKey[LocalCluster]()
_BRING_UP_TIMINGS = pytest.StashKey[dict[str, float]]()


@dataclass(frozen=True)
class ClusterAccess:
    """How tests reach the cluster under test."""

    kubeconfig: Path
    local: LocalCluster | None  # None when the tests run against an existing cluster
    fake_nodes: list[FakeNode] = field(default_factory=list)


def existing_kubeconfig() -> Path | None:
    """The kubeconfig of an existing cluster to test instead of starting one, if asked for."""
    explicit = os.environ.get("VRAM_TEST_KUBECONFIG")
    if explicit:
        return Path(explicit)
    if os.environ.get("VRAM_TEST_USE_EXISTING") == "1":
        return Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    return None


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterAccess]:
    """The cluster under test; a LocalCluster is started once per session and torn down after."""
    existing = existing_kubeconfig()
    if existing is not None:
        if not existing.is_file():
            pytest.fail(f"kubeconfig {existing} does not exist", pytrace=False)
        yield ClusterAccess(kubeconfig=existing, local=None)
        return
    local = LocalCluster().up()  # raises MissingBinaryError when hack/build-tools.sh has not run
    request.config.stash[_LOCAL_CLUSTER] = local
    request.config.stash[_BRING_UP_TIMINGS] = dict(local.timings)
    try:
        yield ClusterAccess(kubeconfig=local.kubeconfig, local=local, fake_nodes=list(local.nodes))
    finally:
        del request.config.stash[_LOCAL_CLUSTER]
        local.down()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the control-plane logs to a failed test's report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    local = item.config.stash.get(_LOCAL_CLUSTER, None)
    if report.failed and local is not None:
        report.sections.append(("local control plane logs", local.failure_report()))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    timings = config.stash.get(_BRING_UP_TIMINGS, None)
    if timings:
        steps = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in timings.items())
        terminalreporter.write_line(f"local control plane: {steps}")


@pytest.fixture(scope="session")
def kubeconfig(cluster: ClusterAccess) -> Path:
    """Path of an admin kubeconfig for the cluster under test."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(cluster: ClusterAccess) -> Iterator[client.ApiClient]:
    """Admin ApiClient (not the global default configuration)."""
    api = admin_client(cluster.kubeconfig)
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def unprivileged_api_client(cluster: ClusterAccess) -> Iterator[client.ApiClient]:
    """ApiClient of an authenticated user that RBAC grants nothing: the local cluster's client
    certificate, or admin credentials impersonating that user on an existing cluster."""
    if cluster.local is not None:
        api = admin_client(cluster.local.unprivileged_kubeconfig)
    else:
        api = admin_client(cluster.kubeconfig)
        api.set_default_header("Impersonate-User", UNPRIVILEGED_USER)  # type: ignore[no-untyped-call]
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def core_v1(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps_v1(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def custom_objects(api_client: client.ApiClient) -> client.CustomObjectsApi:
    """For custom resources (InferenceServer, GpuNode, GpuAssignment)."""
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def dynamic_client(api_client: client.ApiClient) -> Any:
    """kubernetes.dynamic.DynamicClient: any resource by apiVersion/kind, incl. CRDs and DRA."""
    return dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def fake_gpu_nodes(cluster: ClusterAccess, core_v1: client.CoreV1Api) -> list[FakeNode]:
    """The KWOK-managed GPU nodes: one workstation (RTX A5500 + RTX A400), 8x H100 servers."""
    if cluster.local is not None:
        return cluster.fake_nodes
    labelled: list[Any] = core_v1.list_node(label_selector=f"{FAKE_NODE_LABEL}=true").items
    if not labelled:
        pytest.skip(f"the existing cluster has no nodes labelled {FAKE_NODE_LABEL}=true (KWOK fake GPU nodes)")
    return [
        FakeNode(
            name=node.metadata.name,
            gpus=parse_fake_gpus((node.metadata.annotations or {}).get(FAKE_GPUS_ANNOTATION, "[]")),
        )
        for node in labelled
    ]


@pytest.fixture
def namespace(api_client: client.ApiClient, core_v1: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace for one test (with its default ServiceAccount), deleted afterwards."""
    name = f"vram-test-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name, "labels": {"vram.dev/test": "true"}}}
    core_v1.create_namespace(body=body)
    try:
        wait_service_account(api_client, name, NAMESPACE_READY_SECONDS)
        yield name
    finally:
        core_v1.delete_namespace(name)


# --- the operator under test (helpers in operator_harness.py), for the test_operator_*.py files ---


@pytest.fixture(scope="module")
def gpu_fleet(
    api_client: client.ApiClient, custom_objects: client.CustomObjectsApi, fake_gpu_nodes: list[FakeNode]
) -> list[FakeNode]:
    """GpuNodes for every fake node, and the RuntimeClass envvar pinning renders into pods."""
    try:
        client.NodeV1Api(api_client).create_runtime_class(
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"},
                "handler": "nvidia",
            }
        )
    except ApiException as error:
        if error.status != 409:
            raise
    for node in fake_gpu_nodes:
        publish(custom_objects, node, gpu_node_status(node))
    return fake_gpu_nodes


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, tmp_path: Path, gpu_fleet: list[FakeNode]) -> Iterator[Operator]:
    """The operator as a subprocess, watching the test's namespace; its logs are printed afterwards."""
    yield from start_operator(kubeconfig, namespace, tmp_path)


@pytest.fixture(scope="module")
def gpu_twin(
    request: pytest.FixtureRequest,
    kubeconfig: Path,
    gpu_fleet: list[FakeNode],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Twin]:
    """The simulated GPU runtime over every fake node (for the module): plays the engines of the pods
    bound there and reports their memory in the GpuNodes, replacing gpu_fleet's static statuses.
    Seeded by the module's TWIN_SEED (default 0)."""
    seed = int(getattr(request.module, "TWIN_SEED", 0))
    yield from start_twin(kubeconfig, tmp_path_factory.mktemp("twin"), seed=seed)
