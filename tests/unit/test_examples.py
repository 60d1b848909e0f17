"""Every YAML document under examples/ is a valid object of our API (or a plain Namespace/ConfigMap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vram_operator.api import RESOURCES, GpuNode, InferenceServer
from vram_operator.cli import main
from vram_operator.manifests import PASSIVE_KINDS, load
from vram_operator.sizing.generic import parse_quantity_mib

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {model.kind_name: model for model in RESOURCES}
EXAMPLE_FILES = sorted(path for path in EXAMPLES.rglob("*") if path.suffix in {".yaml", ".yml"})
EXAMPLE_DIRS = sorted(path for path in EXAMPLES.iterdir() if path.is_dir())


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document is not None]


def test_there_are_examples() -> None:
    assert {path.name for path in EXAMPLE_DIRS} >= {"reference-fleet", "shared-12gb", "h100-rack"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_every_document_validates_against_its_model(path: Path) -> None:
    for document in documents(path):
        kind = document["kind"]
        if kind in PASSIVE_KINDS:
            continue
        assert kind in MODELS, f"{path}: unknown kind {kind}"
        MODELS[kind].model_validate(document)


@pytest.mark.parametrize("folder", EXAMPLE_DIRS, ids=lambda path: path.name)
def test_every_example_folder_loads(folder: Path) -> None:
    manifests = load([str(folder)])
    assert manifests.nodes and manifests.servers
    names = [server.key for server in manifests.servers]
    assert len(names) == len(set(names)), "server names repeat"


def _fleet() -> tuple[GpuNode, dict[str, InferenceServer]]:
    manifests = load([str(EXAMPLES / "reference-fleet")])
    (node,) = manifests.nodes
    return node, {server.metadata.name: server for server in manifests.servers}


def test_reference_fleet_is_the_two_gpu_workstation() -> None:
    node, servers = _fleet()
    assert node.metadata.name == "workstation" and node.status is not None
    gpus = [(gpu.index, gpu.name, gpu.memory_total_mib) for gpu in node.status.gpus]
    assert gpus == [(0, "NVIDIA RTX A5500", 24564), (1, "NVIDIA RTX A400", 4094)]
    assert sorted(servers) == ["ai-clip", "ai-enrichment", "ai-florence", "ai-llm", "ai-yolo26"]
    assert {server.metadata.namespace for server in servers.values()} == {"ai"}
    for gpu in node.status.gpus:
        assert gpu.memory_used_mib + gpu.memory_free_mib == gpu.memory_total_mib
        assert sum(process.used_mib or 0 for process in gpu.processes) == gpu.memory_used_mib


def test_reference_fleet_asks_for_more_than_it_has() -> None:
    node, servers = _fleet()
    assert node.status is not None
    small_gpu = min(gpu.memory_total_mib for gpu in node.status.gpus)
    enrichment = servers["ai-enrichment"].spec.vram_budget
    assert enrichment is not None
    assert parse_quantity_mib(enrichment, "vramBudget") > small_gpu
    llm = servers["ai-llm"].spec
    assert llm.engine == "llamacpp" and llm.model is not None and llm.model.weights_mib is not None
    generic_mib = sum(
        parse_quantity_mib(server.spec.vram_budget, "vramBudget")
        for server in servers.values()
        if server.spec.vram_budget is not None
    )
    free_total = sum(gpu.memory_free_mib for gpu in node.status.gpus)
    assert llm.model.weights_mib + generic_mib > free_total


def _shared_12gb() -> tuple[GpuNode, dict[str, InferenceServer]]:
    manifests = load([str(EXAMPLES / "shared-12gb")])
    (node,) = manifests.nodes
    return node, {server.metadata.name: server for server in manifests.servers}


def test_shared_12gb_variants_differ_only_in_utilization() -> None:
    node, servers = _shared_12gb()
    assert node.status is not None
    (gpu,) = node.status.gpus
    # The production report: a 12 GB card, ~1.7 GB held by other services.
    assert gpu.memory_total_mib == 12288 and gpu.memory_used_mib + gpu.memory_free_mib == 12288
    assert 1600 <= gpu.memory_used_mib <= 1800
    by_name = {name: server.spec for name, server in servers.items()}
    manual_040, manual_050, auto = by_name["chat-manual-040"], by_name["chat-manual-050"], by_name["chat-auto"]
    assert (manual_040.gpu_memory_utilization, manual_050.gpu_memory_utilization) == (0.40, 0.50)
    assert auto.gpu_memory_utilization == 0.0
    for manual in (manual_040, manual_050):
        assert manual.model_copy(update={"gpu_memory_utilization": 0.0}) == auto
        # Both hand-set values pass vLLM's start-up check: the failure at 0.40 is the KV cache's.
        assert manual.gpu_memory_utilization * gpu.memory_total_mib < gpu.memory_free_mib


def _plan(capsys: pytest.CaptureFixture[str], server_file: str) -> dict[str, Any]:
    folder = EXAMPLES / "shared-12gb"
    assert main(["plan", "-f", str(folder / "gpunode.yaml"), "-f", str(folder / server_file), "-o", "json"]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def test_shared_12gb_reproduces_the_production_report(capsys: pytest.CaptureFixture[str]) -> None:
    # vLLM failed at 0.40 ("No available memory for the cache blocks") and at 0.50 logged
    # "GPU KV cache size: 6,976 tokens", "Maximum concurrency for 2,048 tokens per request: 3.41x".
    failed = _plan(capsys, "server-manual-0.40.yaml")
    assert failed["placements"] == []
    (unplaced,) = failed["unplaced"]
    assert unplaced["engine"]["reason"] == "NoCacheBlocks"
    (ran,) = _plan(capsys, "server-manual-0.50.yaml")["placements"]
    assert ran["gpuMemoryUtilization"] == 0.50
    assert ran["estimate"]["kvCacheTokens"] == pytest.approx(6976, rel=0.15)
    assert ran["estimate"]["maxConcurrency"] == pytest.approx(3.41, rel=0.15)


def test_shared_12gb_auto_places_a_working_utilization_within_free_memory(capsys: pytest.CaptureFixture[str]) -> None:
    node, _ = _shared_12gb()
    assert node.status is not None
    (gpu,) = node.status.gpus
    (placed,) = _plan(capsys, "server-auto.yaml")["placements"]
    utilization = placed["gpuMemoryUtilization"]
    assert placed["fits"] is True and placed["estimate"]["kvCacheTokens"] >= 2048
    assert placed["estimate"]["minUtilization"] <= utilization
    # vLLM 0.10 captures its CUDA graphs (503 MiB: 51 sizes x 0.34 MiB x 29 pieces) beyond its share: the
    # reservation holds both, and the free memory holds the reservation.
    holds = placed["estimate"]["totalMiB"]
    assert holds == pytest.approx(utilization * gpu.memory_total_mib + 51 * 0.34 * 29, abs=0.1)
    assert holds <= placed["budgetMiB"] <= gpu.memory_free_mib
