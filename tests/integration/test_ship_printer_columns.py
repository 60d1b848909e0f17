"""`kubectl get infs` on the real API server: Ready and the reason a server is not ready come from
its conditions; the Memory column does not repeat its header."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster import binary_path

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "vram.dev", "v1alpha1", "inferenceservers"


def _condition(kind: str, status: str, reason: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def _kubectl_get(kubeconfig: Path, namespace: str) -> dict[str, dict[str, str]]:
    """The table `kubectl get infs` prints, as {name: {column: cell}} (cells split on 2+ spaces)."""
    done = subprocess.run(
        [str(binary_path("kubectl")), "get", "infs", "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    header, *rows = done.stdout.splitlines()
    starts = [header.index(column) for column in header.split()]
    columns = header.split()
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        cells = [row[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        table[cells[0]] = dict(zip(columns, cells, strict=True))
    return table


def _server(custom_objects: client.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"engine": "generic", "image": "registry.example/whisper:1", "vramBudget": "2Gi"},
    }
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom_objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def test_get_infs_shows_ready_reason_and_a_bare_memory_column(
    kubeconfig: Path, custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    running = f"run-{uuid.uuid4().hex[:5]}"
    unplaced = f"unplaced-{uuid.uuid4().hex[:5]}"
    _server(
        custom_objects,
        namespace,
        running,
        {
            "phase": "Running",
            "conditions": [
                _condition("Estimated", "True", "Estimated"),
                _condition("Placed", "True", "Placed"),
                _condition("Ready", "True", "PodsReady"),
            ],
            "memory": {
                "usedMiB": 6134,
                "totalMiB": 12288,
                "percent": 49.9,
                "display": "Memory: 6134MiB / 12288MiB (49.9%)",
                "summary": "6134MiB / 12288MiB (49.9%)",
            },
        },
    )
    _server(
        custom_objects,
        namespace,
        unplaced,
        {
            "phase": "Pending",
            "conditions": [
                _condition("Estimated", "True", "Estimated"),
                _condition("Placed", "False", "InsufficientMemory"),
                _condition("Ready", "False", "PodsNotReady"),
            ],
        },
    )
    table = _kubectl_get(kubeconfig, namespace)
    assert table[running]["MEMORY"] == "6134MiB / 12288MiB (49.9%)"
    assert (table[running]["READY"], table[running]["REASON"]) == ("True", "")
    assert (table[unplaced]["READY"], table[unplaced]["REASON"]) == ("False", "InsufficientMemory")
