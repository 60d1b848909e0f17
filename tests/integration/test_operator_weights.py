"""Weights as vLLM loads them, on the real control plane: status.estimate.weightsMiB of a pooling
(embedding) server leaves out the LM head, of gpt-oss counts its MXFP4 experts padded as vLLM's
kernels need them, of a vision-language model counts the vision tower."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_harness import Operator, create, eventually, phase_is, vllm_server

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures/model-configs"


def vllm(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return vllm_server(name, model=model, maxModelLen=8192, **spec)


def config_map(core_v1: client.CoreV1Api, namespace: str, name: str, fixture: str) -> dict[str, Any]:
    config = {k: v for k, v in json.loads((CONFIGS / f"{fixture}.json").read_text()).items() if not k.startswith("_")}
    body: Any = {"metadata": {"name": name}, "data": {"config.json": json.dumps(config)}}
    core_v1.create_namespaced_config_map(namespace, body)
    return {"configMapRef": {"name": name}}


def placed_weights_mib(custom_objects: client.CustomObjectsApi, namespace: str, name: str) -> float:
    placed = eventually(lambda: phase_is(custom_objects, namespace, name, "Placed", "Running"), f"{name} placed")
    weights: float = placed["status"]["estimate"]["weightsMiB"]
    return weights


def test_an_embedding_server_is_budgeted_without_the_lm_head(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, core_v1: client.CoreV1Api
) -> None:
    # Before: --task embed changed nothing: the LM head (151,665 x 4,096 bf16) was counted in the weights.
    model = {"name": "Qwen/Qwen3-Embedding-8B", **config_map(core_v1, namespace, "emb", "Qwen__Qwen3-Embedding-8B")}
    create(custom_objects, namespace, vllm("chat", model))
    create(custom_objects, namespace, vllm("embed", model, args=["--task", "embed"]))
    chat, embed = (placed_weights_mib(custom_objects, namespace, name) for name in ("chat", "embed"))
    assert chat - embed == pytest.approx(151665 * 4096 * 2 / 2**20, abs=0.2), (chat, embed)
    assert operator.alive(), operator.logs()


def test_gpt_oss_and_a_vision_language_model_weigh_what_vllm_loads(
    operator: Operator, namespace: str, custom_objects: client.CustomObjectsApi, core_v1: client.CoreV1Api
) -> None:
    # Before: gpt-oss-20b 12.80 GiB (vLLM logs 13.64-13.72 GiB); Qwen2.5-VL-7B without its 0.68B-parameter
    # vision tower's gated MLP and merger, 15.10 GiB (8.29B parameters in bf16 are 15.44 GiB).
    create(custom_objects, namespace, vllm("oss", {"name": "openai/gpt-oss-20b"}))
    vl = {"name": "Qwen/Qwen2.5-VL-7B-Instruct", **config_map(core_v1, namespace, "vl", "Qwen__Qwen2.5-VL-7B-Instruct")}
    create(custom_objects, namespace, vllm("vl", vl))
    gib = tuple(placed_weights_mib(custom_objects, namespace, name) / 1024 for name in ("oss", "vl"))
    assert gib == pytest.approx((13.69, 15.47), abs=0.03)
    assert operator.alive(), operator.logs()
