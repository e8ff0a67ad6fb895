#!/usr/bin/env bash
# Builds Helm (HELM_VERSION in versions.env) from its Go module into a cache outside the
# repository, and prints the binary's path. The chart tests (tests/unit/test_chart.py,
# tests/e2e/test_helm.py) use it for `helm lint` and `helm template`. Only the first run on a
# machine pays (several CPU-minutes from an empty Go cache on 2 cores); later runs return at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

# Built from the module's own go.mod and go.sum (build_go_module in hack/lib.sh); the ldflags set
# what `helm version` reports, as upstream's Makefile does.
build_go_module helm "helm.sh/helm/v4@$HELM_VERSION" ./cmd/helm \
  "$canarium_cache/bin/helm-$HELM_VERSION/helm" \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
