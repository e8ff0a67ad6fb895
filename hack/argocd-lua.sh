#!/usr/bin/env bash
# Builds hack/argocd-lua (the Lua runner of the Argo CD health check and actions in
# manifests/argocd: gopher-lua GOPHER_LUA_VERSION, as Argo CD runs them) into the cache and
# prints the binary's path. The binary is named after a hash of its sources, so a change to
# them builds it again and an unchanged tree returns at once. tests/argocd_lua.py calls this.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
src="$here/argocd-lua"

grep -q "github.com/yuin/gopher-lua $GOPHER_LUA_VERSION\$" "$src/go.mod" || {
  echo "hack/argocd-lua/go.mod does not require gopher-lua $GOPHER_LUA_VERSION (hack/versions.env)" >&2
  exit 1
}
cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
sum=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
bin="$cache/bin/argocd-lua-$sum"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

go=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$go" ] || { echo "go is required to build hack/argocd-lua" >&2; exit 1; }
mkdir -p "$cache/bin"
cd "$src"
CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$go" build -trimpath -o "$bin.tmp.$$" .
mv "$bin.tmp.$$" "$bin"
# Older builds of the runner are stale now.
find "$cache/bin" -maxdepth 1 -name 'argocd-lua-*' ! -name '*.tmp.*' ! -name "argocd-lua-$sum" -delete
echo "$bin"
