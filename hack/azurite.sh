#!/usr/bin/env bash
# Installs Azurite (AZURITE_VERSION in versions.env), Microsoft's Azure Blob Storage emulator
# from the npm registry, into a cache outside the repository, and prints the path of its
# azurite-blob command. The az:// model-fetch tests run it on 127.0.0.1 (tests/azurite.py):
# it checks SharedKey signatures as Azure does. Needs node and npm (Debian: nodejs, npm).
# Only the first run on a machine pays (about 30 s); later runs return at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
prefix="$cache/azurite-$AZURITE_VERSION"
bin="$prefix/node_modules/.bin/azurite-blob"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
if ! command -v npm >/dev/null; then
  echo "[azurite] apt-get install nodejs npm" >&2
  apt-get update >&2 && apt-get install -y --no-install-recommends nodejs npm >&2
fi
echo "[azurite] azurite@$AZURITE_VERSION into $prefix" >&2
mkdir -p "$prefix.tmp.$$"
trap 'rm -rf "$prefix.tmp.$$"' EXIT
npm install --no-audit --no-fund --loglevel=error --prefix "$prefix.tmp.$$" "azurite@$AZURITE_VERSION" >&2
rm -rf "$prefix"
mv "$prefix.tmp.$$" "$prefix"
echo "$bin"
