"""Bad input: one line on stderr naming the file and field, exit code 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_documents import L4_NODE

from vram_operator.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
QWEN = FIXTURES / "model-configs" / "Qwen__Qwen2.5-7B-Instruct.json"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _plan_with(tmp_path: Path, server_yaml: str) -> list[str]:
    (tmp_path / "node.yaml").write_text(L4_NODE)
    (tmp_path / "server.yaml").write_text(server_yaml)
    return ["plan", "-f", str(tmp_path)]


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("server", "needles"),
    [
        ("kind: InferenceServer\nmetadata: {name: a\n", ("server.yaml", "malformed YAML")),
        ("apiVersion: vram.dev/v1alpha1\nkind: Pod\nmetadata: {name: a}\n", ("server.yaml", "kind", "unknown kind")),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: generic, image: i, vramBudget: -5Gi}\n",
            ("server.yaml", "vramBudget"),
        ),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: vllm, image: i, model: {name: m}, gpuMemoryUtilization: 1.5}\n",
            ("server.yaml", "gpuMemoryUtilization"),
        ),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: vllm, image: i, model: {name: m, weightsMiB: 99999999}}\n",
            ("server.yaml", "weightsMiB"),
        ),
        ("- just\n- a list\n", ("server.yaml", "mapping")),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: vllm, image: i, model: {name: m}, args: [--gpu_memory_utilization, '0.95']}\n",
            ("server.yaml", "spec.args", "--gpu_memory_utilization", "use spec.gpuMemoryUtilization"),
        ),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: llamacpp, image: i, model: {path: /m.gguf}, args: [--ctx_size, '32768']}\n",
            ("server.yaml", "spec.args", "use spec.maxModelLen"),
        ),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: my.dotted.server, namespace: x}\n"
            "spec: {engine: generic, image: i, vramBudget: 1Gi}\n",
            ("server.yaml", "my.dotted.server", "DNS-1035"),
        ),
        (
            "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
            "spec: {engine: generic, image: i, vramBudget: 6.8GB}\n",
            ("server.yaml", "vramBudget", "6.8GB"),
        ),
    ],
)
def test_plan_rejects_bad_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str, needles: tuple[str, ...]
) -> None:
    code, _, err = _run(capsys, *_plan_with(tmp_path, server))
    _assert_one_line_error(code, err, *needles)


def test_plan_names_the_configmap_field_of_a_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads(QWEN.read_text())
    del config["num_hidden_layers"]
    server = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: qwen, namespace: x}\n"
        f"data:\n  config.json: '{json.dumps(config)}'\n---\n"
        "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
        "spec: {engine: vllm, image: i, model: {name: m, configMapRef: {name: qwen}}, maxModelLen: 4096}\n"
    )
    code, _, err = _run(capsys, *_plan_with(tmp_path, server))
    _assert_one_line_error(code, err, "server.yaml", "num_hidden_layers")


def test_plan_needs_gpu_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.yaml").write_text(
        "apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\nmetadata: {name: a, namespace: x}\n"
        "spec: {engine: generic, image: i, vramBudget: 1Gi}\n"
    )
    code, _, err = _run(capsys, "plan", "-f", str(tmp_path))
    _assert_one_line_error(code, err, "GpuNode")


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "-f", "does-not-exist.yaml")
    _assert_one_line_error(code, err, "does-not-exist.yaml", "no such file")


def test_estimate_rejects_tp_that_does_not_divide_heads(capsys: pytest.CaptureFixture[str]) -> None:
    # Qwen2.5-7B has 28 attention heads: 3 does not divide them.
    code, _, err = _run(capsys, "estimate", "--config", str(QWEN), "--gpu-memory-mib", "81089", "--tp", "3")
    _assert_one_line_error(code, err, "Qwen__Qwen2.5-7B-Instruct.json", "3")


def test_estimate_rejects_config_missing_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "config.json"
    broken.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    code, _, err = _run(capsys, "estimate", "--config", str(tmp_path), "--gpu-memory-mib", "24564")
    _assert_one_line_error(code, err, "config.json", "num_hidden_layers")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--utilization", "1.5"], "--utilization"),
        (["--utilization", "1.2"], "--utilization"),
        (["--max-model-len", "40000"], "--max-model-len"),
        (["--gpu-memory-mib", "-1"], "--gpu-memory-mib"),
        (["--gpu-free-mib", "999999"], "--gpu-free-mib"),
        (["--quantization", "int3"], "quantization"),
    ],
)
def test_estimate_rejects_bad_numbers(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    base = ["estimate", "--config", str(QWEN), "--gpu-memory-mib", "24564"]
    if argv[0] == "--gpu-memory-mib":
        base = base[:3]
    code, _, err = _run(capsys, *base, *argv)
    _assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("version", ["stable-ish", "x.y", "nightly"])
def test_estimate_with_a_version_string_without_a_version_names_the_flag(
    capsys: pytest.CaptureFixture[str], version: str
) -> None:
    code, _, err = _run(
        capsys, "estimate", "--config", str(QWEN), "--gpu-memory-mib", "24564", "--engine-version", version
    )
    _assert_one_line_error(code, err, "--engine-version")
