"""`vram-operator render` refuses a hostPath volume as the operator does, unless told to allow it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_documents import L4_NODE

from vram_operator.cli import main

SERVER = """
apiVersion: vram.dev/v1alpha1
kind: InferenceServer
metadata: {name: yolo, namespace: ai}
spec:
  engine: generic
  image: example.org/yolo:1
  vramBudget: 1Gi
  volumes: [{name: root, hostPath: {path: /}}]
  volumeMounts: [{name: root, mountPath: /host}]
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    (tmp_path / "node.yaml").write_text(L4_NODE)
    (tmp_path / "server.yaml").write_text(SERVER)
    return tmp_path


def test_render_refuses_a_host_path_in_one_line_naming_the_field(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "-f", str(fleet)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "server.yaml" in line and "spec.volumes[0].hostPath" in line and "--allow-host-access" in line


def test_render_with_allow_host_access_mounts_the_host_path(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--allow-host-access", "-f", str(fleet)]) == 0
    deployment = next(doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["volumes"] == [{"name": "root", "hostPath": {"path": "/"}}]
