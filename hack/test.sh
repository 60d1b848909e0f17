#!/usr/bin/env bash
# The project's test command: lint, types, unit tests, then integration tests against a real
# local control plane (kube-apiserver, etcd, controller-manager, scheduler, KWOK) built from Go
# modules by hack/build-tools.sh (cached under ~/.cache/vram-operator, so later runs are fast).
#
#   bash hack/test.sh             everything
#   bash hack/test.sh unit        lint, types and the unit tests that need no built tool (no Go toolchain)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/venv.sh
source hack/venv.sh

echo "== lint and types"
ruff check .
ruff format --check .
mypy
MYPYPATH=hack:operator mypy --strict hack/localcluster hack/cluster.py hack/demo.py

echo "== unit tests"
# Unit tests that need a Go-built tool (helm, promtool) are marked `tools` and run after the build.
pytest tests/unit -q -p no:cacheprovider -m "not tools"

if [ "${1:-all}" = "unit" ]; then
  exit 0
fi

echo "== tools for the local control plane"
bash hack/build-tools.sh

echo "== unit tests that need the built tools (helm, promtool)"
pytest tests/unit -q -p no:cacheprovider -m tools

echo "== integration and end-to-end tests (real control plane)"
pytest tests/integration tests/e2e -q -p no:cacheprovider
