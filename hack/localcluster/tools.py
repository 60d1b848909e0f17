"""Where the binaries built by hack/build-tools.sh live, derived from hack/versions.env."""

from __future__ import annotations

import os
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
VERSIONS_FILE = HACK_DIR / "versions.env"

# binary -> the versions.env key its cache directory is named after
_BINARY_VERSION_KEYS = {
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "etcd": "ETCD_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "prometheus": "PROMETHEUS_MODULE_VERSION",
    "promtool": "PROMETHEUS_MODULE_VERSION",
    "kube-score": "KUBE_SCORE_VERSION",
    "checkov": "CHECKOV_VERSION",
}
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class MissingBinaryError(RuntimeError):
    """A tool the harness needs has not been built."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of versions.env (comments and blank lines ignored)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def _prometheus_release(module_version: str) -> str:
    # Go module v0.3XY.Z is Prometheus release v3.XY.Z (same rule as build-tools.sh).
    rest = module_version.removeprefix("v0.")
    return f"v{rest[0]}.{rest[1:]}"


def binary_version(name: str, versions: dict[str, str] | None = None) -> str:
    versions = versions if versions is not None else read_versions()
    key = _BINARY_VERSION_KEYS.get(name)
    if key is None:
        raise MissingBinaryError(f"unknown tool '{name}'")
    version = versions[key]
    return _prometheus_release(version) if key == "PROMETHEUS_MODULE_VERSION" else version


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vram-operator" / "bin"


def binary_path(name: str, versions: dict[str, str] | None = None) -> Path:
    """Path of a built tool; raises MissingBinaryError with the command that builds it."""
    path = cache_root() / f"{name}-{binary_version(name, versions)}" / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{name} not found at {path}; build it with hack/build-tools.sh")
    return path


def control_plane_binaries() -> dict[str, Path]:
    versions = read_versions()
    return {name: binary_path(name, versions) for name in CONTROL_PLANE_BINARIES}
