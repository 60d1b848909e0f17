"""`vram-operator render --format compose`: the plan as a compose override, valid against the compose spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from vram_operator.cli import main
from vram_operator.commands.plan import decide_from_manifests
from vram_operator.manifests import load

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((REPO / "tests" / "fixtures" / "compose-spec" / "compose-spec.json").read_text())
OVERRIDE = "docker-compose.gpu-override.yml"
ASSIGNMENTS = "gpu-assignments.yml"

NODE = """
apiVersion: vram.dev/v1alpha1
kind: GpuNode
metadata: {{name: {name}}}
status:
  gpus:
    - {{index: 0, uuid: GPU-{name}-0, name: NVIDIA L4, memoryTotalMiB: 23034, memoryUsedMiB: 0, memoryFreeMiB: 23034}}
    - {{index: 1, uuid: GPU-{name}-1, name: NVIDIA L4, memoryTotalMiB: 23034, memoryUsedMiB: 0, memoryFreeMiB: 23034}}
"""
SERVERS = """
apiVersion: vram.dev/v1alpha1
kind: InferenceServer
metadata: {name: chat, namespace: ai}
spec:
  engine: vllm
  image: vllm/vllm-openai:v0.19.0
  tensorParallelSize: 2
  maxModelLen: 8192
  model:
    name: Qwen/Qwen2.5-7B-Instruct
    weightsMiB: 7300
    architecture: {numLayers: 28, numKVHeads: 4, headDim: 128, hiddenSize: 3584, intermediateSize: 18944,
                   vocabSize: 152064, paramsB: 7.6}
---
apiVersion: vram.dev/v1alpha1
kind: InferenceServer
metadata: {name: detector, namespace: ai}
spec:
  engine: generic
  image: example.org/detector:1
  vramBudget: 6Gi
  vramBudgetMin: 2Gi
"""


def _validate(document: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def host(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "node.yaml").write_text(NODE.format(name="desktop"))
    (tmp_path / "in" / "servers.yaml").write_text(SERVERS)
    return tmp_path


def test_compose_output_is_a_valid_compose_file_pinning_gpus_by_uuid(
    host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))
    assert code == 0
    assert out == ""
    override = yaml.safe_load((host / OVERRIDE).read_text())
    _validate(override)
    chat = override["services"]["chat"]
    devices = chat["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["GPU-desktop-0", "GPU-desktop-1"], "capabilities": ["gpu"]}]
    assert chat["image"] == "vllm/vllm-openai:v0.19.0"
    assert chat["entrypoint"] == ["vllm", "serve"]
    # The same engine flags the Kubernetes render sets, from the same plan.
    plan = decide_from_manifests(load([str(host / "in")]), None, 256)
    utilization = plan.servers["ai/chat"].gpu_memory_utilization
    flags = chat["command"]
    assert flags[flags.index("--gpu-memory-utilization") + 1] == f"{utilization}"
    assert flags[flags.index("--tensor-parallel-size") + 1] == "2"
    assert "environment" not in chat  # vLLM gets its budget as a flag


def test_a_budget_reaches_the_service_as_vram_budget_gb(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))[0] == 0
    detector = yaml.safe_load((host / OVERRIDE).read_text())["services"]["detector"]
    assert detector["environment"] == {
        "VRAM_BUDGET_GB": "6.00",
        "VRAM_BUDGET_MIB": "6144",
        "CUDA_DEVICE_MEMORY_LIMIT": "6144m",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "6144m",
    }
    assert "entrypoint" not in detector  # a generic service keeps its image's entrypoint


def test_warnings_are_comments_and_the_assignments_file_is_readable(
    host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 16 GiB budget shrinks onto a 22.5 GiB GPU already holding the chat server: the plan warns.
    (host / "in" / "servers.yaml").write_text(SERVERS.replace("vramBudget: 6Gi", "vramBudget: 40Gi"))
    assert _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))[0] == 0
    text = (host / OVERRIDE).read_text()
    comments = [line.strip() for line in text.splitlines() if line.strip().startswith("# ai/detector:")]
    assert comments, text
    detector = yaml.safe_load(text)["services"]["detector"]
    budget_gib = float(detector["environment"]["VRAM_BUDGET_GB"])
    assert 2 <= budget_gib < 40  # shrunk, and said so
    assignments = yaml.safe_load((host / ASSIGNMENTS).read_text())
    assert [gpu["uuid"] for gpu in assignments["gpus"]] == ["GPU-desktop-0", "GPU-desktop-1"]
    assert {entry["server"] for entry in assignments["servers"]} == {"ai/chat", "ai/detector"}
    assert all(gpu["freeAfterMiB"] <= gpu["totalMiB"] for gpu in assignments["gpus"])


def test_nothing_placed_is_still_a_valid_compose_file(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (host / "in" / "servers.yaml").write_text(
        SERVERS.replace("weightsMiB: 7300", "weightsMiB: 900000")
        .replace("vramBudget: 6Gi", "vramBudget: 1Ti")
        .replace("vramBudgetMin: 2Gi", "vramBudgetMin: 1Ti")
    )
    code, _, err = _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))
    assert code == 0
    assert "ai/chat: not placed" in err
    override = yaml.safe_load((host / OVERRIDE).read_text())
    _validate(override)
    assert override["services"] == {}


def test_a_plan_over_two_nodes_is_one_line_and_exit_2(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (host / "in" / "node2.yaml").write_text(NODE.format(name="other"))
    (host / "in" / "servers.yaml").write_text(SERVERS.replace("vramBudget: 6Gi", "vramBudget: 20Gi"))
    code, out, err = _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "--format" in err
    assert "other" in err
    assert "desktop" in err
    assert not (host / OVERRIDE).exists()


def test_bad_server_names_the_file_and_field(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (host / "in" / "servers.yaml").write_text(SERVERS.replace("tensorParallelSize: 2", "tensorParallelSize: two"))
    code, _, err = _run(capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host))
    assert code == 2
    assert err.count("\n") == 1
    assert "servers.yaml" in err
    assert "tensorParallelSize" in err


def test_a_missing_output_directory_is_named(host: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys, "render", "-f", str(host / "in"), "--format", "compose", "--output-dir", str(host / "absent")
    )
    assert code == 2
    assert err.count("\n") == 1
    assert "--output-dir" in err


@pytest.mark.parametrize("example", ["reference-fleet", "shared-12gb"])
def test_examples_render_as_valid_compose_files(
    example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = _run(
        capsys, "render", "-f", str(REPO / "examples" / example), "--format", "compose", "--output-dir", str(tmp_path)
    )
    assert code == 0
    _validate(yaml.safe_load((tmp_path / OVERRIDE).read_text()))


def test_the_schema_catches_what_compose_would_refuse() -> None:
    # The vendored schema is strict where compose is: an unknown device field is an error.
    bad = {"services": {"x": {"deploy": {"resources": {"reservations": {"devices": [{"device_id": ["0"]}]}}}}}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)
