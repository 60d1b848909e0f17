"""Every install command the README prints, run exactly as printed (read from README.md, so the
test and the README cannot drift) with the real kubectl and helm against the local control plane."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import binary_path
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# What a reader runs to install the operator, its monitoring, the examples, and to look at them.
INSTALL_PREFIXES = ("kubectl apply", "kubectl get infs", "helm install", "helm upgrade")
NAMESPACE_GONE_SECONDS = 120.0
# Stand-ins for the Prometheus operator's CRDs, which `kubectl apply -f manifests/monitoring/` needs.
PROMETHEUS_OPERATOR_KINDS = {"servicemonitors": "ServiceMonitor", "prometheusrules": "PrometheusRule"}


def printed_commands(markdown: str) -> list[str]:
    """Shell commands the markdown prints: lines of ```sh blocks and inline code spans (a span may
    wrap across lines; its whitespace is collapsed), each once, in order."""
    commands: list[str] = []
    prose: list[str] = []
    for index, part in enumerate(re.split(r"^```.*$", markdown, flags=re.MULTILINE)):
        if index % 2:  # inside a fenced block
            commands += [line.split("  #", 1)[0].strip() for line in part.splitlines()]
        else:
            prose.append(part)
    commands += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", "\n".join(prose))]
    return list(dict.fromkeys(command for command in commands if command))


def install_commands() -> list[str]:
    """The printed install commands; a bare verb in prose ("`kubectl apply` of a server refused") is no command."""
    return [
        command
        for command in printed_commands(README.read_text())
        if command.startswith(INSTALL_PREFIXES) and len(command.split()) > len(INSTALL_PREFIXES[0].split())
    ]


def test_the_readme_prints_the_install_paths() -> None:
    commands = install_commands()
    assert "kubectl apply -k manifests/" in commands
    assert any(command.startswith("helm install") for command in commands)
    assert "kubectl apply -f crds/ -f manifests/" not in commands  # applies manifests/kustomization.yaml as an object


def test_printed_commands_reads_spans_and_blocks() -> None:
    markdown = "Run `kubectl apply\n  -k x/` then:\n```sh\nhelm install a b   # comment\n```\n`kubectl apply -k x/`\n"
    assert printed_commands(markdown) == ["helm install a b", "kubectl apply -k x/"]


def _run(kubeconfig: Path, command: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    binary = binary_path(argv[0])
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [str(binary), *argv[1:]], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=180
    )


def _stand_in_crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"plural": plural, "kind": kind},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def prometheus_operator_crds(api_client: client.ApiClient) -> Iterator[None]:
    extensions = client.ApiextensionsV1Api(api_client)
    created = []
    for plural, kind in PROMETHEUS_OPERATOR_KINDS.items():
        try:
            extensions.create_custom_resource_definition(_stand_in_crd(plural, kind))
            created.append(f"{plural}.monitoring.coreos.com")
        except ApiException as error:
            if error.status != 409:
                raise
    for name in created:
        eventually(
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions or []
            ),
            f"CRD {name} established",
            30.0,
        )
    yield
    for name in created:
        extensions.delete_custom_resource_definition(name)


def _namespace_gone(core_v1: client.CoreV1Api, name: str) -> None:
    def gone() -> bool:
        try:
            core_v1.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(gone, f"namespace {name} deleted", NAMESPACE_GONE_SECONDS)


def test_every_printed_install_command_works(
    kubeconfig: Path, prometheus_operator_crds: None, core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api
) -> None:
    """kubectl paths first, then (their objects deleted, CRDs kept) the Helm path, each exactly as printed."""
    commands = install_commands()
    kubectl_commands = [c for c in commands if c.startswith("kubectl")]
    helm_commands = [c for c in commands if c.startswith("helm")]
    try:
        for command in kubectl_commands:
            done = _run(kubeconfig, command)
            assert done.returncode == 0, f"{command}: {done.stderr}"
            if command == "kubectl apply -k manifests/":
                assert apps_v1.read_namespaced_deployment("vram-operator", "vram-system").spec.replicas == 1
        listed = _run(kubeconfig, "kubectl get infs -A")
        assert "qwen-72b-fp8" in listed.stdout
    finally:
        for cleanup in (
            "kubectl delete -f manifests/monitoring/ --ignore-not-found",
            "kubectl delete -f examples/reference-fleet/ --ignore-not-found",
            "kubectl delete -f manifests/vram-operator.yaml --ignore-not-found",
        ):
            _run(kubeconfig, cleanup)
    _namespace_gone(core_v1, "vram-system")
    try:
        for command in helm_commands:
            done = _run(kubeconfig, command)
            assert done.returncode == 0, f"{command}: {done.stderr}"
        assert apps_v1.read_namespaced_deployment("vram-operator", "vram-system").spec.replicas == 1
    finally:
        _run(kubeconfig, "helm uninstall vram-operator --namespace vram-system")
        core_v1.delete_namespace("vram-system")
