"""kubectl vram's command line: -n/-A like kubectl, the kubeconfig context's namespace, plan -f
without any cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_ship_plugin_format import WORKSTATION, placed, server, text_of

from vram_operator.cli import main as vram_operator_main
from vram_operator.kubectl_plugin import build_parser, context_namespace, listed_namespace, main, top_table

REPO = Path(__file__).resolve().parents[3]
FLEET = REPO / "examples" / "reference-fleet"


@pytest.mark.parametrize("verb", ["top", "plan"])
def test_fleet_verbs_take_namespace_and_all_namespaces(verb: str) -> None:
    parser = build_parser()
    assert listed_namespace(parser.parse_args([verb])) is None  # the whole fleet by default
    assert listed_namespace(parser.parse_args([verb, "-n", "ai"])) == "ai"
    assert listed_namespace(parser.parse_args([verb, "--namespace", "ai"])) == "ai"
    assert listed_namespace(parser.parse_args([verb, "-A"])) is None
    assert listed_namespace(parser.parse_args([verb, "-n", "ai", "--all-namespaces"])) is None  # -A wins


def test_top_with_a_namespace_lists_only_its_processes_but_every_gpu() -> None:
    servers = [server("chat", status=placed("workstation", "GPU-a", 0, 8000)), server("yolo")]
    pods = {"ai/chat": {"u1"}, "ai/yolo": {"u2"}}
    ai = text_of(top_table([WORKSTATION], servers, pods, "ai"))
    assert "infs ai/chat" in ai and "infs ai/yolo" in ai
    assert "foreign: Xorg" not in ai and "pod web/x" not in ai
    assert "7,200MiB / 24,564MiB" in ai  # the GPU row still counts everyone
    web = text_of(top_table([WORKSTATION], servers, pods, "web"))
    assert "pod web/x" in web and "infs ai/chat" not in web


def _kubeconfig(tmp_path: Path, namespace: str | None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": context}, {"name": "other", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path


def test_explain_defaults_to_the_context_namespace(tmp_path: Path) -> None:
    assert context_namespace(str(_kubeconfig(tmp_path, "ai")), None) == "ai"
    assert context_namespace(str(_kubeconfig(tmp_path, "ai")), "other") is None
    assert context_namespace(str(_kubeconfig(tmp_path, None)), None) is None


def test_plan_from_files_needs_no_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    assert main(["plan", "-f", str(FLEET), "-o", "json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert vram_operator_main(["plan", "-f", str(FLEET), "-o", "json"]) == 0
    assert offline == json.loads(capsys.readouterr().out)  # the same planner as vram-operator plan
    assert main(["plan", "-f", str(FLEET)]) == 0
    assert "ai/ai-llm" in capsys.readouterr().out


def test_plan_from_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "servers.yaml").write_text("apiVersion: vram.dev/v1alpha1\nkind: InferenceServer\n")
    assert main(["plan", "-f", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kubectl-vram: error:") and "\n" not in err
