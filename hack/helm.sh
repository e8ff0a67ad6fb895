#!/usr/bin/env bash
# Builds Helm (HELM_VERSION in versions.env) from its Go module into a cache outside the
# repository, and prints the binary's path. The chart tests (tests/unit/test_chart.py,
# tests/e2e/test_helm.py) use it for `helm lint` and `helm template`. Only the first run on a
# machine pays (several CPU-minutes from an empty Go cache on 2 cores); later runs return at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
bin="$cache/bin/helm-$HELM_VERSION"
if [ -x "$bin/helm" ]; then echo "$bin/helm"; exit 0; fi

PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "go is required to build Helm" >&2; exit 1; }
mkdir -p "$bin"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
log() { echo "[helm] $*" >&2; }

start=$(date +%s)
log "helm $HELM_VERSION"
# helm's go.mod has no replace directives, so `go install module@version` builds it with its
# own go.sum; the ldflags set what `helm version` reports, as upstream's Makefile does.
GOBIN="$bin/tmp.$$" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
mv "$bin/tmp.$$/helm" "$bin/helm"
rmdir "$bin/tmp.$$"
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin/helm"
