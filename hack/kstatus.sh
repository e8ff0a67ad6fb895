#!/usr/bin/env bash
# Builds hack/kstatus/ (a small main over sigs.k8s.io/cli-utils' pkg/kstatus/status, pinned as
# CLI_UTILS_VERSION in versions.env) into a cache outside the repository, and prints the
# binary's path. It is rebuilt only when its sources change (their hash is in the path); a
# build from an empty Go cache takes about a minute, later runs return at once.
#
# The e2e tests run it lazily (tests/e2e/conftest.py, fixture `kstatus`) on live objects, so
# that "Flux's kstatus reads our status right" is checked against the real library.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
src="$here/kstatus"

# go.mod is what the build uses: it must require the version versions.env pins.
if ! grep -qE "^[[:space:]]*(require[[:space:]]+)?sigs\.k8s\.io/cli-utils[[:space:]]+$CLI_UTILS_VERSION\$" "$src/go.mod"; then
  echo "hack/kstatus/go.mod does not require sigs.k8s.io/cli-utils $CLI_UTILS_VERSION" \
    "(CLI_UTILS_VERSION in hack/versions.env): update one of them (then go mod tidy)" >&2
  exit 1
fi

sum=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-12)
cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
bin="$cache/bin/kstatus-$CLI_UTILS_VERSION-$sum"
if [ -x "$bin/kstatus" ]; then echo "$bin/kstatus"; exit 0; fi

go=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$go" ] || { echo "go is required to build the kstatus helper" >&2; exit 1; }
mkdir -p "$bin"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly"
start=$(date +%s)
echo "[kstatus] building against sigs.k8s.io/cli-utils $CLI_UTILS_VERSION" >&2
(cd "$src" && "$go" build -trimpath -ldflags "-s -w" -o "$bin/kstatus.tmp.$$" .)
mv "$bin/kstatus.tmp.$$" "$bin/kstatus"
echo "[kstatus] built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin/kstatus"
