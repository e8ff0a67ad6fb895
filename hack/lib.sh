# shellcheck shell=bash
# Shared by the hack/*.sh scripts that build a pinned Go program into the cache: hack/versitygw.sh,
# hack/gateway.sh, hack/helm.sh and hack/kstatus.sh. Source it (after `set -euo pipefail`); it
# defines only what is below and runs nothing.

# The cache outside the repository: $CANARIUM_CACHE, by default ~/.cache/canarium.
# shellcheck disable=SC2034 # used by the scripts that source this
canarium_cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}

# build_go_module TAG SOURCE PACKAGE OUT [go build flags...]
#
# Prints OUT, the path of the binary, after building it if it is not there yet. OUT carries the
# pin (a version, or a hash of the sources, in its path), so a new pin builds again and an
# unchanged one returns at once, without needing go.
#   TAG      what the progress lines on stderr start with: "[TAG] ...".
#   SOURCE   MODULE@VERSION: the module's source from the Go module proxy (`go mod download`),
#            copied out of the read-only module cache and built there with its own go.mod and
#            go.sum, as upstream builds it (`go install MODULE@VERSION` would refuse a go.mod
#            with replace directives); or an absolute path: a directory built in place.
#   PACKAGE  the main package, relative to SOURCE (./cmd/traefik, .).
#   flags    given to `go build` after -trimpath: what differs per tool (-ldflags, -tags, -mod).
# CGO off, the local toolchain only, no VCS stamping. go is looked for on PATH, then in
# /usr/local/go/bin; without it: a message and exit status 1. The binary is written next to OUT
# and renamed into place, so OUT is never half-written. Call it as a plain command (not in `if`,
# `||` or `$(...)`, where errexit is off): its body runs in a subshell with errexit on, and a
# failed step fails the call with that step's status.
build_go_module() (
  set -euo pipefail
  local tag=$1 source=$2 package=$3 out=$4
  shift 4
  if [ -x "$out" ]; then echo "$out"; exit 0; fi

  if ! command -v go >/dev/null; then
    if [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; else
      echo "[$tag] go is required to build $source" >&2; exit 1; fi
  fi
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
  local start work dir
  start=$(date +%s)
  echo "[$tag] building $source" >&2
  mkdir -p "$(dirname "$out")"
  case $source in
    /*) cd "$source" ;;
    *)
      work=$(mktemp -d)
      # shellcheck disable=SC2064 # expand now: $work is local to this function
      trap "rm -rf '$work'" EXIT
      dir=$(cd "$work" && go mod download -json "$source" |
        python3 -c 'import json,sys; m=json.load(sys.stdin); print(m.get("Dir") or sys.exit(m.get("Error")))')
      cp -r "$dir" "$work/src"
      chmod -R u+w "$work/src"
      cd "$work/src"
      ;;
  esac
  go build -trimpath "$@" -o "$out.tmp.$$" "$package"
  mv "$out.tmp.$$" "$out"
  echo "[$tag] built in $(( $(date +%s) - start ))s into $(dirname "$out")" >&2
  echo "$out"
)
