"""The harness itself: the CLI brings a second cluster up and down, leaving no process and no
working directory behind; missing binaries fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster import LocalCluster, MissingBinaryError
from localcluster.process import pid_alive

pytestmark = pytest.mark.integration

CLI = Path(__file__).resolve().parents[2] / "hack" / "cluster.py"


def run_cli(*args: str, state: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLI), "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def test_cli_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    up = run_cli("up", "--h100-nodes", "0", "--no-crds", state=state_file)
    assert up.returncode == 0, up.stderr
    state = json.loads(state_file.read_text())
    assert up.stdout.strip() == state["kubeconfig"]
    pids = [c["pid"] for c in state["components"]]
    assert [c["name"] for c in state["components"]] == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ]
    try:
        assert all(pid_alive(pid) for pid in pids)
        status = run_cli("status", state=state_file)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("running") == len(pids)
    finally:
        down = run_cli("down", state=state_file)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert not Path(state["workdir"]).exists()
    assert not state_file.exists()
    assert run_cli("status", state=state_file).returncode == 1


def test_missing_binaries_fail_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    cluster = LocalCluster()
    with pytest.raises(MissingBinaryError, match=r"build it with hack/build-tools\.sh"):
        cluster.up()
    assert cluster.workdir is None  # failed before creating anything
    cli = run_cli("up", state=tmp_path / "state.json", env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "x")})
    assert cli.returncode == 2
    assert "hack/build-tools.sh" in cli.stderr
