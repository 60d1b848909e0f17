"""The krew plugin manifest: krew's v1alpha2 Plugin shape, the archive it names (rebuilt here, same
sha256), and a binary that runs the real kubectl-vram entry point."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from script_loader import load_script
from ship_helpers import REPO, strict_load_all

MANIFEST = REPO / "plugins" / "vram.yaml"


def _manifest() -> dict[str, Any]:
    (document,) = strict_load_all(MANIFEST.read_text(encoding="utf-8"))
    manifest: dict[str, Any] = document
    return manifest


def _archive_module() -> ModuleType:
    return load_script(REPO / "plugins" / "archive.py", "krew_archive")


def test_manifest_has_krews_plugin_shape() -> None:
    manifest = _manifest()
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "vram"  # kubectl vram
    spec = manifest["spec"]
    assert {"version", "shortDescription", "platforms"} <= spec.keys()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", spec["version"])
    assert len(spec["shortDescription"]) <= 70
    for platform in spec["platforms"]:
        assert set(platform) <= {"selector", "uri", "sha256", "bin", "files"}
        assert platform["uri"].startswith("https://") and f"/{spec['version']}/" in platform["uri"]
        assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
        expressions = platform["selector"]["matchExpressions"]
        assert all(e["key"] == "os" and e["operator"] == "In" for e in expressions)


def test_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _manifest()["spec"]["version"] == f"v{project['version']}"
    assert project["scripts"]["kubectl-vram"] == "vram_operator.kubectl_plugin:main"


def test_sha256_is_that_of_the_reproducible_archive() -> None:
    data = _archive_module().archive_bytes()
    assert data == _archive_module().archive_bytes()
    (platform,) = _manifest()["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
    assert {entry["from"] for entry in platform["files"]} == names
    assert platform["bin"] in names


def test_the_bin_runs_the_kubectl_vram_entry_point() -> None:
    (platform,) = _manifest()["spec"]["platforms"]
    shim = REPO / "plugins" / platform["bin"]
    assert os.access(shim, os.X_OK)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [str(shim), "plan", "--help"], capture_output=True, text=True, check=False, env={**os.environ, "PATH": path}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kubectl vram plan")
    assert "--all-namespaces" in done.stdout and "--filename" in done.stdout
