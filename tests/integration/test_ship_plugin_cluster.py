"""kubectl vram against the local API server: top, explain and plan read the live objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vram_operator.api.base import GROUP, VERSION
from vram_operator.kubectl_plugin import main

pytestmark = pytest.mark.integration

NODE = "ship-plugin-node"
GPU_UUID = "GPU-5b1f0c0e-0000-4000-8000-00000000a550"


@pytest.fixture
def gpu_node(custom_objects: client.CustomObjectsApi) -> Iterator[str]:
    body: Any = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": NODE}, "spec": {}}
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "gpunodes", body)
    status: Any = {
        "status": {
            "backend": "simulated",
            "gpus": [
                {
                    "index": 0,
                    "uuid": GPU_UUID,
                    "name": "NVIDIA RTX A5500",
                    "memoryTotalMiB": 24564,
                    "memoryUsedMiB": 1200,
                    "memoryFreeMiB": 23364,
                    "processes": [{"pid": 1800, "usedMiB": 350, "name": "Xorg"}],
                }
            ],
        }
    }
    custom_objects.patch_cluster_custom_object_status(GROUP, VERSION, "gpunodes", NODE, status)
    yield NODE
    try:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "gpunodes", NODE)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def server(namespace: str, custom_objects: client.CustomObjectsApi) -> str:
    body: Any = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": "yolo", "namespace": namespace},
        "spec": {"engine": "generic", "image": "ultralytics/ultralytics:8.3", "vramBudget": "650Mi"},
    }
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "inferenceservers", body)
    status: Any = {
        "status": {
            "phase": "Placed",
            "placement": {
                "node": NODE,
                "gpus": [{"index": 0, "uuid": GPU_UUID, "name": "NVIDIA RTX A5500", "totalMiB": 24564}],
                "budgetMiB": 650,
                "strategy": "VRAMBased",
                "reason": "GPU 0 has the most free memory",
            },
        }
    }
    custom_objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "inferenceservers", "yolo", status)
    return f"{namespace}/yolo"


def test_top_explain_and_plan_read_the_cluster(
    kubeconfig: Path, gpu_node: str, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--kubeconfig", str(kubeconfig), "top"]) == 0
    top = capsys.readouterr().out
    assert gpu_node in top and "1,200MiB / 24,564MiB" in top and "foreign: Xorg" in top
    assert "650MiB" in top  # reserved by the server's status

    assert main(["--kubeconfig", str(kubeconfig), "explain", server]) == 0
    explained = capsys.readouterr().out
    assert f"Placed on {gpu_node}" in explained and "Why: GPU 0 has the most free memory" in explained

    assert main(["--kubeconfig", str(kubeconfig), "plan", "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    placed = {p["server"]: p for p in plan["placements"]}
    assert server in placed
    assert placed[server]["budgetMiB"] == 650
    assert any(gpu["uuid"] == GPU_UUID and gpu["foreignMiB"] >= 350 for gpu in plan["gpus"])

    assert main(["--kubeconfig", str(kubeconfig), "explain", server + "-missing"]) == 2
    assert "not found" in capsys.readouterr().err


def test_namespace_flags_and_the_context_namespace(
    kubeconfig: Path, gpu_node: str, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace, name = server.split("/")
    assert main(["--kubeconfig", str(kubeconfig), "top", "-n", namespace]) == 0
    narrowed = capsys.readouterr().out
    assert gpu_node in narrowed and "foreign: Xorg" not in narrowed  # another namespace's (here: no pod's) process
    assert main(["--kubeconfig", str(kubeconfig), "top", "-A"]) == 0
    assert "foreign: Xorg" in capsys.readouterr().out

    # kubectl's habit: a bare NAME is looked up in the current context's namespace.
    config = yaml.safe_load(kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    current["context"]["namespace"] = namespace
    in_context = tmp_path / "kubeconfig"
    in_context.write_text(yaml.safe_dump(config))
    assert main(["--kubeconfig", str(in_context), "explain", name]) == 0
    assert f"Placed on {gpu_node}" in capsys.readouterr().out
    assert main(["--kubeconfig", str(kubeconfig), "explain", name]) == 2  # default namespace: not there
