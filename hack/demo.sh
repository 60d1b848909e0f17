#!/usr/bin/env bash
# The main job on a fresh machine: a local simulated GPU cluster with the operator and the
# reference fleet. Builds what it needs once (cached under ~/.cache), then runs hack/demo.py.
#
#   bash hack/demo.sh            bring it up (or show it, when it is already up)
#   bash hack/demo.sh --down     stop everything it started
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/venv.sh
source hack/venv.sh
if [ "${1:-}" != "--down" ]; then
  bash hack/build-tools.sh kubernetes etcd kwok >&2
fi
exec python hack/demo.py "$@"
