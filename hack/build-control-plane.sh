#!/usr/bin/env bash
# Builds a real Kubernetes control plane from Go modules into a cache outside the repository:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, etcd,
# kwok, kwokctl.
# Only the first run on a machine pays; later runs find the binaries and return at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy etcd kwok kwokctl)

missing=()
for b in "${want[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
log() { echo "[build-control-plane] $*" >&2; }

build_kubernetes() {
  log "kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy)"
  local mod="$work/k8s"
  mkdir -p "$mod" && cd "$mod"
  go mod init canarium.local/k8sbuild >/dev/null 2>&1
  # k8s.io/kubernetes replaces its staging modules with local paths, so it cannot be
  # `go install`ed; point every staging module at its published v0.x release instead.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$KUBERNETES_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } >>go.mod
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
              k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  for p in "${pkgs[@]}"; do go get "$p@$KUBERNETES_VERSION" >/dev/null; done
  go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$bin/" "${pkgs[@]}"
}

build_etcd() {
  log "etcd $ETCD_VERSION"
  local mod="$work/etcd"
  mkdir -p "$mod" && cd "$mod"
  go mod init canarium.local/etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  log "kwok $KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

start=$(date +%s)
for b in "${missing[@]}"; do
  case $b in
    kube-*|kubectl|kubelet) [ -n "${done_k8s:-}" ] || { build_kubernetes; done_k8s=1; } ;;
    etcd) build_etcd ;;
    kwok|kwokctl) [ -n "${done_kwok:-}" ] || { build_kwok; done_kwok=1; } ;;
  esac
done
for b in "${want[@]}"; do [ -x "$bin/$b" ] || { echo "missing $bin/$b after build" >&2; exit 1; }; done
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin"
