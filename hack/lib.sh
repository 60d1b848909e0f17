# Shared settings for the hack/ scripts; sourced, not executed.
# shellcheck shell=bash

HACK_DIR="${HACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
TOOLS_DIR="${HACK_DIR}/tools"
ALL_COMPONENTS=(kubernetes etcd kwok helm prometheus kube-score checkov)
# The wrapper modules declare this language version; Go 1.26 is the toolchain we use.
GO_DIRECTIVE=1.26.0

# Prometheus is built with only the service discoveries the harness needs (file, static and
# Kubernetes): the others pull in modules the proxy does not serve (see update-modules.sh).
PROMETHEUS_BUILD_TAGS="remove_all_sd,enable_kubernetes_sd"

# Never let `go` fetch a different toolchain behind our back.
export GOTOOLCHAIN=local

# shellcheck source=hack/versions.env
source "${HACK_DIR}/versions.env"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go toolchain not found on PATH (need Go >= ${GO_DIRECTIVE})"
