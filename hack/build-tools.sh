#!/usr/bin/env bash
# Build the local control plane and its companions from their Go modules, caching each
# binary under ${XDG_CACHE_HOME:-~/.cache}/vram-operator/bin/<name>-<version>/<name>.
# A cached binary is reused as is, so a warm run costs seconds.
#
# usage: hack/build-tools.sh [component...]        (default: all)
#        hack/build-tools.sh --bin-dir NAME       print the cache dir of binary NAME
# components: kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl),
#             etcd, kwok, helm, prometheus (prometheus, promtool), kube-score,
#             checkov (not Go: pip-installed into a venv of its own in the same cache)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/lib.sh
source "${HACK_DIR}/lib.sh"

CACHE_ROOT="${XDG_CACHE_HOME:-${HOME}/.cache}/vram-operator/bin"
BUILD_FLAGS=(-p 2 -trimpath)
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# Static binaries, as upstream ships them; also keeps the build free of a C toolchain.
export CGO_ENABLED=0

# Prometheus module v0.3XY.Z is Prometheus release v3.XY.Z.
prometheus_release() {
  local rest="${PROMETHEUS_MODULE_VERSION#v0.}"
  echo "v${rest:0:1}.${rest:1}"
}

component_version() {
  case "$1" in
    kubernetes) echo "${KUBERNETES_VERSION}" ;;
    etcd) echo "${ETCD_VERSION}" ;;
    kwok) echo "${KWOK_VERSION}" ;;
    helm) echo "${HELM_VERSION}" ;;
    prometheus) prometheus_release ;;
    kube-score) echo "${KUBE_SCORE_VERSION}" ;;
    checkov) echo "${CHECKOV_VERSION}" ;;
    *) die "unknown component '$1' (known: ${ALL_COMPONENTS[*]})" ;;
  esac
}

component_binaries() {
  case "$1" in
    kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubectl ;;
    prometheus) echo prometheus promtool ;;
    *) echo "$1" ;;
  esac
}

binary_component() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo kubernetes ;;
    prometheus | promtool) echo prometheus ;;
    etcd | kwok | helm | kube-score | checkov) echo "$1" ;;
    *) die "unknown binary '$1'" ;;
  esac
}

bin_dir() { echo "${CACHE_ROOT}/$1-$(component_version "$(binary_component "$1")")"; }

# The main packages to build, as import paths resolvable in the wrapper module.
component_packages() {
  case "$1" in
    kubernetes) for b in $(component_binaries kubernetes); do echo "k8s.io/kubernetes/cmd/${b}"; done ;;
    etcd) echo . ;; # the wrapper's main package; its directory name makes the binary "etcd"
    kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
    helm) echo helm.sh/helm/v3/cmd/helm ;;
    prometheus) echo github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool ;;
    kube-score) echo github.com/zegl/kube-score/cmd/kube-score ;;
  esac
}

# module_version DIR MODULE: the version DIR's module graph selects for MODULE.
module_version() { (cd "$1" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$2"); }

# ldflags that make `--version` report the pinned release instead of a placeholder.
component_ldflags() {
  local c="$1" dir="${TOOLS_DIR}/$1" v flags="-s -w" p minor
  v="$(component_version "${c}")"
  case "${c}" in
    kubernetes)
      minor="${v#v1.}"
      minor="${minor%%.*}"
      for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        flags+=" -X ${p}.gitVersion=${v} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor}"
        flags+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=${BUILD_DATE}"
      done
      ;;
    # the version is a constant in go.etcd.io/etcd/api/v3/version; no git checkout, so no SHA
    etcd) flags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=go-module-${v}" ;;
    kwok) flags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=${v#v}" ;;
    helm)
      local client k8s_major k8s_minor
      client="$(module_version "${dir}" k8s.io/client-go)"
      k8s_major=$((${client:1:1} + 1))
      k8s_minor="$(echo "${client}" | cut -d. -f2)"
      flags+=" -X helm.sh/helm/v3/internal/version.version=${v}"
      flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X ${p}.k8sVersionMajor=${k8s_major} -X ${p}.k8sVersionMinor=${k8s_minor}"
      done
      ;;
    prometheus)
      p=github.com/prometheus/common/version
      flags+=" -X ${p}.Version=${v#v} -X ${p}.Branch=release -X ${p}.BuildUser=vram-operator"
      flags+=" -X ${p}.BuildDate=${BUILD_DATE}"
      ;;
    kube-score) flags+=" -X main.version=${v#v} -X main.date=${BUILD_DATE}" ;;
  esac
  echo "${flags}"
}

# Fail when a wrapper go.mod no longer selects the version pinned in versions.env.
check_pin() {
  local c="$1" dir="${TOOLS_DIR}/$1" module want got
  case "${c}" in
    kubernetes) module=k8s.io/kubernetes want="${KUBERNETES_VERSION}" ;;
    etcd) module=go.etcd.io/etcd/server/v3 want="${ETCD_VERSION}" ;;
    kwok) module=sigs.k8s.io/kwok want="${KWOK_VERSION}" ;;
    helm) module=helm.sh/helm/v3 want="${HELM_VERSION}" ;;
    prometheus) module=github.com/prometheus/prometheus want="${PROMETHEUS_MODULE_VERSION}" ;;
    kube-score) module=github.com/zegl/kube-score want="${KUBE_SCORE_VERSION}" ;;
  esac
  [[ -f "${dir}/go.sum" ]] || die "${dir}/go.sum missing; run hack/update-modules.sh ${c}"
  got="$(module_version "${dir}" "${module}")"
  [[ "${got}" == "${want}" ]] ||
    die "hack/tools/${c}/go.mod selects ${module} ${got}, versions.env pins ${want}; run hack/update-modules.sh ${c}"
}

cached() {
  local b
  for b in $(component_binaries "$1"); do
    [[ -x "$(bin_dir "${b}")/${b}" ]] || return 1
  done
}

# checkov is a Python program: a venv of its own next to the Go binaries, the command linked in
# last (what `cached` looks for), so an interrupted install is never taken for a finished one. The
# venv is built in place: its scripts name their interpreter by absolute path.
install_checkov() {
  local dir
  dir="$(bin_dir checkov)"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  python3 -m venv "${dir}/venv" && "${dir}/venv/bin/python" -m pip install --quiet "checkov==${CHECKOV_VERSION}" ||
    { rm -rf "${dir}"; die "installing checkov ${CHECKOV_VERSION} failed"; }
  ln -s venv/bin/checkov "${dir}/checkov"
}

build_component() {
  local c="$1" v start out b
  v="$(component_version "${c}")"
  start="$(date +%s)"
  if cached "${c}"; then
    printf '%-11s %-9s cache hit   %4ss\n' "${c}" "${v}" "$(($(date +%s) - start))"
    return 0
  fi
  if [[ "${c}" == checkov ]]; then
    mkdir -p "${CACHE_ROOT}"
    install_checkov
    printf '%-11s %-9s installed   %4ss\n' "${c}" "${v}" "$(($(date +%s) - start))"
    return 0
  fi
  check_pin "${c}"
  mkdir -p "${CACHE_ROOT}"
  out="$(mktemp -d "${CACHE_ROOT}/.build-${c}.XXXXXX")"
  # shellcheck disable=SC2046  # the package list is a word list on purpose
  local tags=""
  [[ "${c}" != prometheus ]] || tags="${PROMETHEUS_BUILD_TAGS}"
  if ! (cd "${TOOLS_DIR}/${c}" &&
    go build "${BUILD_FLAGS[@]}" -tags "${tags}" -ldflags "$(component_ldflags "${c}")" -o "${out}/" \
      $(component_packages "${c}")); then
    rm -rf "${out}"
    die "building ${c} ${v} failed"
  fi
  for b in $(component_binaries "${c}"); do
    mkdir -p "$(bin_dir "${b}")"
    mv "${out}/${b}" "$(bin_dir "${b}")/${b}"
  done
  rm -rf "${out}"
  printf '%-11s %-9s built       %4ss\n' "${c}" "${v}" "$(($(date +%s) - start))"
}

main() {
  if [[ "${1:-}" == "--bin-dir" ]]; then
    [[ $# -eq 2 ]] || die "usage: $0 --bin-dir NAME"
    bin_dir "$2"
    return 0
  fi
  local components=("$@") c failed=0 total_start
  [[ ${#components[@]} -gt 0 ]] || components=("${ALL_COMPONENTS[@]}")
  for c in "${components[@]}"; do component_version "${c}" >/dev/null; done
  total_start="$(date +%s)"
  for c in "${components[@]}"; do
    # A failed component is reported and the others still build; the exit code says it.
    (build_component "${c}") || failed=1
  done
  printf '%-11s %-9s %-11s %4ss\n' total "" "" "$(($(date +%s) - total_start))"
  return "${failed}"
}

main "$@"
