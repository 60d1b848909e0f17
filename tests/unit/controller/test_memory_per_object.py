"""What the operator keeps in memory: per object in its indexes, and once, in what it imports."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from typing import Any, cast

import kopf

from vram_operator.controller.child_keeper import server_deployments
from vram_operator.controller.runtime import plain
from vram_operator.controller.servers import inference_servers
from vram_operator.placement import solver

MANAGED_FIELDS = [
    {
        "manager": "vram-operator",
        "operation": "Update",
        "subresource": "status",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {".": {}, "f:phase": {}, "f:conditions": {".": {}}}},
    }
]


def body(**extra: Any) -> kopf.Body:
    raw = {
        "apiVersion": "vram.dev/v1alpha1",
        "kind": "InferenceServer",
        "metadata": {
            "name": "s1",
            "namespace": "team",
            "uid": "u-1",
            "labels": {"app": "chat"},
            "resourceVersion": "7",
            "managedFields": MANAGED_FIELDS,
            **extra,
        },
        "spec": {"engine": "generic", "image": "example.invalid/s:1", "vramBudget": "8Gi"},
        "status": {"phase": "Placed"},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def test_plain_leaves_out_managed_fields_and_keeps_the_rest_of_the_metadata() -> None:
    data = plain(body(deletionTimestamp="2026-01-01T00:00:00Z"))
    assert "managedFields" not in data["metadata"]
    assert data["metadata"] == {
        "name": "s1",
        "namespace": "team",
        "uid": "u-1",
        "labels": {"app": "chat"},
        "resourceVersion": "7",
        "deletionTimestamp": "2026-01-01T00:00:00Z",
    }
    assert data["spec"]["vramBudget"] == "8Gi" and data["status"] == {"phase": "Placed"}


def test_the_server_index_keeps_no_managed_fields() -> None:
    indexed = asyncio.run(inference_servers(namespace="team", name="s1", body=body()))
    server = indexed["team/s1"]
    assert "managedFields" not in (server.metadata.model_extra or {})
    assert server.metadata.uid == "u-1" and server.metadata.labels == {"app": "chat"}


def test_the_child_index_keeps_no_managed_fields() -> None:
    indexed = asyncio.run(server_deployments(namespace="team", name="s1", body=body()))
    assert "managedFields" not in indexed["team/s1"]["metadata"]


def test_the_operator_imports_neither_the_solver_library_nor_gguf() -> None:
    """HiGHS, gguf and numpy under them are ~27 MiB of the operator's memory: imported only when a plan
    needs the solver or a model is a GGUF file, not to start."""
    probe = "import sys, vram_operator.controller.main; print(sorted({'highspy', 'gguf', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_solver_infinity_is_highs_own() -> None:
    import highspy

    assert solver._INF == highspy.kHighsInf == math.inf
