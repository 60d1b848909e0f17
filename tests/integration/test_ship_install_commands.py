"""Every install command the README prints, run exactly as printed (read from README.md, so the
test and the README cannot drift) with the real kubectl and helm, on a fresh local control plane of
this module's own (no CRDs, as a new cluster); and `helm upgrade` upgrading a changed CRD."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import LocalCluster, binary_path
from localcluster.resources import admin_client
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CHART = REPO / "charts" / "vram-operator"
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


def _ok(kubeconfig: Path, command: str) -> str:
    done = _run(kubeconfig, command)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


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


@dataclass(frozen=True)
class FreshCluster:
    kubeconfig: Path
    api: client.ApiClient


@pytest.fixture(scope="module")
def fresh_cluster() -> Iterator[FreshCluster]:
    """A control plane of its own without the project's CRDs, as a user's new cluster; with stand-ins
    for the Prometheus operator's CRDs, which `kubectl apply -f manifests/monitoring/` needs."""
    with LocalCluster(crd_dir=None) as local:
        api = admin_client(local.kubeconfig)
        extensions = client.ApiextensionsV1Api(api)
        for plural, kind in PROMETHEUS_OPERATOR_KINDS.items():
            extensions.create_custom_resource_definition(_stand_in_crd(plural, kind))
        yield FreshCluster(local.kubeconfig, api)
        api.close()  # type: ignore[no-untyped-call]


def _namespace_gone(core_v1: client.CoreV1Api, name: str) -> None:
    def gone() -> bool:
        try:
            core_v1.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(gone, f"namespace {name} deleted", NAMESPACE_GONE_SECONDS)


def _printer_columns(api: client.ApiClient, crd: str) -> list[str]:
    found: Any = client.ApiextensionsV1Api(api).read_custom_resource_definition(crd)
    return [column.name for column in found.spec.versions[0].additional_printer_columns]


def _chart_with_a_changed_crd(tmp_path: Path) -> Path:
    """The chart with one more printer column on InferenceServer: the CRD change of an upgrade."""
    chart = tmp_path / "vram-operator"
    shutil.copytree(CHART, chart)
    path = chart / "files" / "crds" / "vram.dev_inferenceservers.yaml"
    crd = yaml.safe_load(path.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Upgraded", "type": "string", "jsonPath": ".spec.engine"}
    )
    path.write_text(yaml.safe_dump(crd))
    return chart


def test_every_printed_install_command_works_and_helm_upgrades_the_crds(
    fresh_cluster: FreshCluster, tmp_path: Path
) -> None:
    """The Helm path first (a new cluster), `helm upgrade` with a changed CRD, uninstall (the CRDs
    stay); then the kubectl paths, each exactly as printed."""
    kubeconfig, api = fresh_cluster.kubeconfig, fresh_cluster.api
    core_v1, apps_v1 = client.CoreV1Api(api), client.AppsV1Api(api)
    commands = install_commands()
    print("\n".join(["printed install commands:", *commands]))
    for command in (c for c in commands if c.startswith("helm")):
        _ok(kubeconfig, command)
    assert apps_v1.read_namespaced_deployment("vram-operator", "vram-system").spec.replicas == 1
    crd = "inferenceservers.vram.dev"
    assert "Upgraded" not in _printer_columns(api, crd)
    _ok(kubeconfig, f"helm upgrade vram-operator {_chart_with_a_changed_crd(tmp_path)} --namespace vram-system")
    assert "Upgraded" in _printer_columns(api, crd)
    _ok(kubeconfig, "helm uninstall vram-operator --namespace vram-system --wait")
    assert "Upgraded" in _printer_columns(api, crd)  # kept: uninstalling never deletes the servers
    core_v1.delete_namespace("vram-system")
    _namespace_gone(core_v1, "vram-system")

    for command in (c for c in commands if c.startswith("kubectl")):
        _ok(kubeconfig, command)
    assert apps_v1.read_namespaced_deployment("vram-operator", "vram-system").spec.replicas == 1
    assert "Upgraded" not in _printer_columns(api, crd)  # kubectl apply -k manifests/ wrote the shipped CRD
    assert "qwen-72b-fp8" in _ok(kubeconfig, "kubectl get infs -A")
