"""What the operator keeps in memory: per object in its indexes, and once, in what it imports."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from typing import Any, cast

import kopf
from fake_kube import FakeKube

from vram_operator.api.inference_server import InferenceServerStatus
from vram_operator.controller.child_keeper import server_deployments
from vram_operator.controller.main import WORKER_IDLE_SECONDS, configure
from vram_operator.controller.metrics import Metrics
from vram_operator.controller.runtime import Runtime, plain
from vram_operator.controller.servers import inference_servers
from vram_operator.controller.settings import ControllerSettings
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


def runtime() -> Runtime:
    return Runtime(settings=ControllerSettings(), kube=FakeKube(), metrics=Metrics())


def index(rt: Runtime, server_body: kopf.Body) -> Any:
    return asyncio.run(inference_servers(namespace="team", name="s1", body=server_body, memo=kopf.Memo(rt=rt)))


def test_the_server_index_keeps_no_managed_fields() -> None:
    indexed = index(runtime(), body())
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


def test_a_written_status_the_watch_brings_back_is_held_once() -> None:
    rt = runtime()
    written = InferenceServerStatus.model_validate({"phase": "Placed"})
    rt.written["team/s1"] = ("u-1", written)
    server = index(rt, body())["team/s1"]
    assert rt.written["team/s1"][1] is server.status  # one object, not two equal ones
    assert rt.latest_status(server) == written


def test_a_status_that_differs_from_the_written_one_leaves_it_as_written() -> None:
    rt = runtime()
    newer = InferenceServerStatus.model_validate({"phase": "Running"})
    rt.written["team/s1"] = ("u-1", newer)
    server = index(rt, body())["team/s1"]  # the watch is behind: it still says Placed
    assert rt.written["team/s1"][1] is newer
    assert rt.latest_status(server) is newer


def test_a_status_written_for_an_earlier_object_of_the_same_name_is_not_shared() -> None:
    rt = runtime()
    old = InferenceServerStatus.model_validate({"phase": "Placed"})
    rt.written["team/s1"] = ("u-0", old)
    index(rt, body())
    assert rt.written["team/s1"] == ("u-0", old)


def test_kopf_lets_an_idle_object_worker_go_after_half_a_second() -> None:
    settings = kopf.OperatorSettings()
    rt = runtime()
    asyncio.run(configure(settings=settings, memo=kopf.Memo(rt=rt)))
    assert settings.queueing.idle_timeout == WORKER_IDLE_SECONDS == 0.5
    assert settings.persistence.diffbase_storage is rt.diffbase
