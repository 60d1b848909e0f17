from __future__ import annotations

import json
from typing import Any

from vram_operator.agent.pods import STATIC_POD_HASH, PodDirectory, PodInfo, kubernetes_pod_lister, pod_index

UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"


def pod(
    uid: str, name: str, statuses: list[dict[str, str]], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": name, "namespace": "ml", "annotations": annotations or {}},
        "status": {
            "containerStatuses": statuses,
            "initContainerStatuses": [{"name": "fetch", "containerID": "cri-o://" + "e" * 64}],
        },
    }


def test_index_maps_bare_container_ids_to_names_for_every_runtime_scheme() -> None:
    index = pod_index(
        [
            pod(
                UID,
                "llama-0",
                [
                    {"name": "vllm", "containerID": "containerd://" + "a" * 64},
                    {"name": "sidecar", "containerID": "docker://" + "b" * 64},
                    {"name": "starting"},  # no container ID yet
                ],
            )
        ]
    )
    assert index[UID] == PodInfo(
        uid=UID, namespace="ml", name="llama-0", containers={"a" * 64: "vllm", "b" * 64: "sidecar", "e" * 64: "fetch"}
    )


def test_static_pods_are_also_found_by_their_config_hash() -> None:
    config_hash = "8daa50c3a64c9ff60bb9eab7b44b56fd"
    index = pod_index([pod(UID, "etcd-node1", [], {STATIC_POD_HASH: config_hash})])
    assert index[config_hash].name == "etcd-node1"


def test_incomplete_pods_are_skipped() -> None:
    assert pod_index([{"metadata": {"name": "x"}}, {}]) == {}


class Lister:
    def __init__(self) -> None:
        self.calls = 0
        self.pods = [pod(UID, "llama-0", [])]
        self.error: Exception | None = None

    def __call__(self) -> list[dict[str, Any]]:
        self.calls += 1
        if self.error:
            raise self.error
        return self.pods


def test_directory_lists_when_stale_or_for_an_unknown_uid_but_not_too_often() -> None:
    lister, now = Lister(), [0.0]
    directory = PodDirectory(lister, max_age_s=60, min_interval_s=5, clock=lambda: now[0])

    assert UID in directory.lookup([UID])
    directory.lookup([UID])
    assert lister.calls == 1  # fresh and complete: no list

    now[0] = 2.0
    directory.lookup(["new-pod"])
    assert lister.calls == 1  # unknown UID, but listed 2 s ago

    now[0] = 6.0
    directory.lookup(["new-pod"])
    assert lister.calls == 2

    now[0] = 70.0
    directory.lookup([])
    assert lister.calls == 3  # stale


def test_a_list_error_keeps_the_last_index() -> None:
    lister, now = Lister(), [0.0]
    directory = PodDirectory(lister, max_age_s=10, clock=lambda: now[0])
    directory.lookup([])
    lister.error = ConnectionError("refused")
    now[0] = 20.0
    assert UID in directory.lookup([])


def test_kubernetes_lister_asks_for_this_nodes_pods_as_raw_json() -> None:
    class Response:
        data = json.dumps({"items": [pod(UID, "llama-0", [])]}).encode()

    class CoreApi:
        def __init__(self) -> None:
            self.kwargs: dict[str, Any] = {}

        def list_pod_for_all_namespaces(self, **kwargs: Any) -> Response:
            self.kwargs = kwargs
            return Response()

    api = CoreApi()
    pods = kubernetes_pod_lister(api, "gpu-node-1")()
    assert api.kwargs == {"field_selector": "spec.nodeName=gpu-node-1", "_preload_content": False}
    assert pod_index(pods)[UID].name == "llama-0"
