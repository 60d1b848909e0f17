#!/usr/bin/env bash
# The project's test command: lint, types, unit tests, then (after the Go build) the tests that run
# helm/promtool/kube-score (tests/tools) and integration tests against a real
# local control plane (kube-apiserver, etcd, controller-manager, scheduler, KWOK) built from Go
# modules by hack/build-tools.sh (cached under ~/.cache/vram-operator, so later runs are fast).
#
#   bash hack/test.sh             everything
#   bash hack/test.sh unit        lint, types and unit tests only (no Go toolchain needed)
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
pytest tests/unit -q -p no:cacheprovider

if [ "${1:-all}" = "unit" ]; then
  exit 0
fi

echo "== tools for the local control plane"
bash hack/build-tools.sh

echo "== tests that run the built tools (helm, promtool, kube-score; tests/tools)"
pytest tests/tools -q -p no:cacheprovider

echo "== integration and end-to-end tests (real control plane)"
pytest tests/integration tests/e2e -q -p no:cacheprovider
