#!/usr/bin/env bash
# Builds versitygw (VERSITYGW_VERSION in versions.env), an S3 gateway whose posix backend serves
# a local folder as buckets and verifies AWS Signature V4 like S3 does, into a cache outside the
# repository, and prints the binary's path. The model-fetch tests run it as a real S3 server
# (tests/s3server.py): on 127.0.0.1 for tests/serving, on the cluster's bridge address for e2e.
# Only the first run on a machine pays (a few CPU-minutes); later runs return at once.
#
# Like hack/gateway.sh: the module's source comes from the Go module proxy (`go mod download`),
# is copied out of the read-only module cache and built there with its own go.mod and go.sum
# (build_go_module in hack/lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

build_go_module versitygw "github.com/versity/versitygw@$VERSITYGW_VERSION" ./cmd/versitygw \
  "$canarium_cache/bin/versitygw-$VERSITYGW_VERSION/versitygw" -ldflags "-s -w"
