#!/usr/bin/env bash
# Builds versitygw (VERSITYGW_VERSION in versions.env), an S3 gateway whose posix backend serves
# a local folder as buckets and verifies AWS Signature V4 like S3 does, into a cache outside the
# repository, and prints the binary's path. The model-fetch tests run it as a real S3 server
# (tests/s3server.py): on 127.0.0.1 for tests/serving, on the cluster's bridge address for e2e.
# Only the first run on a machine pays (a few CPU-minutes); later runs return at once.
#
# Like hack/gateway.sh: the module's source comes from the Go module proxy (`go mod download`),
# is copied out of the read-only module cache and built there with its own go.mod and go.sum.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
bin="$cache/bin/versitygw-$VERSITYGW_VERSION"
if [ -x "$bin/versitygw" ]; then echo "$bin/versitygw"; exit 0; fi

if ! command -v go >/dev/null; then
  if [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; else
    echo "go is required to build versitygw" >&2; exit 1; fi
fi
mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
log() { echo "[versitygw] $*" >&2; }

start=$(date +%s)
log "versitygw $VERSITYGW_VERSION"
module="github.com/versity/versitygw@$VERSITYGW_VERSION"
dir=$(cd "$work" && go mod download -json "$module" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
go build -trimpath -ldflags "-s -w" -o "$bin/versitygw.tmp.$$" ./cmd/versitygw
mv "$bin/versitygw.tmp.$$" "$bin/versitygw"
log "built in $(( $(date +%s) - start ))s into $bin"
echo "$bin/versitygw"
