#!/usr/bin/env bash
# Builds Argo Rollouts' controller (ARGO_ROLLOUTS_VERSION in versions.env) from its Go module into
# a cache outside the repository, next to the module's CRDs, and prints the binary's path:
#   hack/argo-rollouts.sh         the rollouts-controller binary (builds it on the first run)
#   hack/argo-rollouts.sh crds    the folder of its CRDs (manifests/crds: rollout-crd.yaml, ...)
# tests/bench/bench_operator.py runs it as a local process beside the operator. Only the first run
# on a machine pays (~6 min on 2 cores from an empty Go cache); later runs return at once.
#
# Like hack/helm.sh: the module's source comes from the Go module proxy (`go mod download`) and
# is built with its own go.mod and go.sum (build_go_module in hack/lib.sh), with one change: its
# metrics and healthz servers listen on 0.0.0.0 (a constant, no flag), here on 127.0.0.1.
# Its go.mod asks for a newer Go than this machine's, so the build runs on
# ARGO_ROLLOUTS_GO_TOOLCHAIN, which `go` fetches from the module proxy (GOTOOLCHAIN) into the
# module cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

module=github.com/argoproj/argo-rollouts
dir="$canarium_cache/bin/argo-rollouts-$ARGO_ROLLOUTS_VERSION"
out="$dir/rollouts-controller-loopback"

build() {
  local go work src goroot
  go=$(command -v go || echo /usr/local/go/bin/go)
  if [ ! -x "$go" ]; then echo "[argo-rollouts] go is required to build $module" >&2; exit 1; fi
  # The toolchain's GOROOT (downloaded through the module proxy on first use).
  goroot=$(GOTOOLCHAIN=$ARGO_ROLLOUTS_GO_TOOLCHAIN "$go" env GOROOT)
  export PATH="$goroot/bin:$PATH"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local to this function
  trap "rm -rf '$work'" EXIT
  src=$(cd "$work" && GOTOOLCHAIN=local go mod download -json "$module@$ARGO_ROLLOUTS_VERSION" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(m.get("Dir") or sys.exit(m.get("Error")))')
  cp -r "$src" "$work/src"
  chmod -R u+w "$work/src"
  sed -i 's|^\(\s*listenAddr\s*=\s*\)"0\.0\.0\.0:%d"|\1"127.0.0.1:%d"|' "$work/src/controller/controller.go"
  grep -q 'listenAddr *= "127.0.0.1:%d"' "$work/src/controller/controller.go" ||
    { echo "[argo-rollouts] listen address not found in controller/controller.go" >&2; exit 1; }
  mkdir -p "$dir"
  rm -rf "$dir/crds.tmp"
  cp -r "$work/src/manifests/crds" "$dir/crds.tmp"
  build_go_module argo-rollouts "$work/src" ./cmd/rollouts-controller "$out" \
    -ldflags "-s -w -X $module/utils/version.version=$ARGO_ROLLOUTS_VERSION" >/dev/null
  rm -rf "$dir/crds"
  mv "$dir/crds.tmp" "$dir/crds"
}

if [ ! -x "$out" ] || [ ! -d "$dir/crds" ]; then (build); fi
case "${1:-}" in
  "") echo "$out" ;;
  crds) echo "$dir/crds" ;;
  *) echo "usage: $0 [crds]" >&2; exit 2 ;;
esac
