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
# shellcheck source=lib.sh
. "$here/lib.sh"
src="$here/kstatus"

# go.mod is what the build uses: it must require the version versions.env pins.
if ! grep -qE "^[[:space:]]*(require[[:space:]]+)?sigs\.k8s\.io/cli-utils[[:space:]]+$CLI_UTILS_VERSION\$" "$src/go.mod"; then
  echo "hack/kstatus/go.mod does not require sigs.k8s.io/cli-utils $CLI_UTILS_VERSION" \
    "(CLI_UTILS_VERSION in hack/versions.env): update one of them (then go mod tidy)" >&2
  exit 1
fi

sum=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-12)
build_go_module kstatus "$src" . "$canarium_cache/bin/kstatus-$CLI_UTILS_VERSION-$sum/kstatus" \
  -mod=readonly -ldflags "-s -w"
