"""Small builders of servers and placements for the render tests."""

from __future__ import annotations

from typing import Any

from vram_operator.api import InferenceServer, PlacementStatus

UUID_A = "GPU-1a2b3c4d-0000-1111-2222-333344445555"
UUID_B = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"


def server(
    spec: dict[str, Any], *, name: str = "chat", namespace: str = "ai", uid: str | None = "uid-1"
) -> InferenceServer:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return InferenceServer.model_validate({"metadata": metadata, "spec": spec})


def vllm(**extra: Any) -> dict[str, Any]:
    return {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.19.0",
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct"},
        **extra,
    }


def llamacpp(**extra: Any) -> dict[str, Any]:
    return {
        "engine": "llamacpp",
        "image": "ghcr.io/ggml-org/llama.cpp:server-cuda",
        "model": {"path": "/models/model.gguf"},
        **extra,
    }


def generic(**extra: Any) -> dict[str, Any]:
    return {"engine": "generic", "image": "example.org/yolo:1", "vramBudget": "650Mi", **extra}


def placement(*uuids: str, node: str = "workstation", budget_mib: float = 9000, reason: str = "") -> PlacementStatus:
    return PlacementStatus.model_validate(
        {
            "node": node,
            "gpus": [
                {"index": index, "uuid": uuid, "name": "NVIDIA RTX A5500", "totalMiB": 24564}
                for index, uuid in enumerate(uuids or (UUID_A,))
            ],
            "budgetMiB": budget_mib,
            "reason": reason,
        }
    )


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container(deployment).get("env", [])}
