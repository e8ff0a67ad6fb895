#!/usr/bin/env bash
# Builds the container images with buildah (no Docker engine) and exports each one as an archive
# that `ctr -n k8s.io images import` accepts (docker-archive, named by its tag):
#   ghcr.io/canarium-dev/canarium-operator:<version>   operator/Dockerfile
#   ghcr.io/canarium-dev/canarium-serving:<version>    serving_image/Dockerfile
#   ghcr.io/canarium-dev/canarium-training:<version>   training_image/Dockerfile
#   registry.k8s.io/pause:$PAUSE_VERSION                hack/pause/Containerfile
# <version> is canarium.__version__. The Dockerfiles' Python base is made here with mmdebstrap
# (Debian bookworm: Python 3.11) instead of pulling python:3.11-slim; its rootfs is cached under
# $CANARIUM_CACHE/images keyed by its inputs (delete base-*.tar there to pick up Debian updates).
# pause.c comes from the k8s.io/kubernetes Go module.
# pip's CA bundle reaches the builds as a build secret, never as a layer (checked on every export).
# Prints the archive paths, one per line (logs go to stderr):
#   for t in $(hack/images.sh); do ctr -n k8s.io images import "$t"; done
# Images of earlier builds stay in buildah's storage as the layer cache; `buildah rmi --prune`
# frees them (the next build then starts cold).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${CANARIUM_CACHE:-$HOME/.cache/canarium}
out="$cache/images"
ca_bundle=${CANARIUM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PAUSE_VERSION=${PAUSE_VERSION:-3.10.1}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/operator/canarium/__init__.py")
[ -n "$version" ] || { echo "no __version__ in operator/canarium/__init__.py" >&2; exit 1; }
operator_image=ghcr.io/canarium-dev/canarium-operator:$version
serving_image=ghcr.io/canarium-dev/canarium-serving:$version
training_image=ghcr.io/canarium-dev/canarium-training:$version
pause_image=registry.k8s.io/pause:$PAUSE_VERSION

# The base: what python:3.11-slim offers the Dockerfiles (python, venv, CA certificates, netbase).
base_image=localhost/canarium/python:3.11-bookworm
suite=bookworm
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
sources=("deb $debian_mirror $suite main" "deb $debian_mirror $suite-updates main"
         "deb $security_mirror $suite-security main")
packages=(python3 python3-venv python-is-python3 ca-certificates netbase)
# Like Debian's slim images: no documentation, manuals or translations (copyrights stay).
dpkg_opts=(path-exclude=/usr/share/doc/* path-include=/usr/share/doc/*/copyright
           path-exclude=/usr/share/man/* path-exclude=/usr/share/info/*
           path-exclude=/usr/share/locale/* path-include=/usr/share/locale/locale.alias)
apt_opts=('Apt::Install-Recommends "false"')
# merged-/usr by symlinks (as Debian's own images), instead of the usrmerge package and its perl.
hook_dirs=(/usr/share/mmdebstrap/hooks/merged-usr)
base_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

log() { echo "[images] $*" >&2; }

install_deps() {
  local pkgs=()
  command -v buildah >/dev/null || pkgs+=(buildah runc)
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  command -v gcc >/dev/null || pkgs+=(gcc)
  command -v strip >/dev/null || pkgs+=(binutils)
  dpkg-query -W -f='${Status}' libc6-dev 2>/dev/null | grep -q 'ok installed' || pkgs+=(libc6-dev)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "apt-get install ${pkgs[*]}"
    apt-get update >&2 && apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
  fi
  command -v go >/dev/null || { echo "go is required (pause.c comes from the Go module cache)" >&2; exit 1; }
}

# The id of an image in buildah's storage, or nothing.
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }

build_base() {
  local key tar id t0
  t0=$(date +%s)
  key=$(printf '%s\n' "$suite" "${sources[@]}" "${packages[@]}" "${dpkg_opts[@]}" "${apt_opts[@]}" \
          "${hook_dirs[@]}" "${base_env[@]}" |
        sha256sum | cut -c1-16)
  tar="$out/base-python3.11-$suite-$key.tar"
  id=$(image_id "$base_image")
  if [ -n "$id" ] && [ "$(buildah inspect --type image --format '{{index .ImageAnnotations "dev.canarium.base-key"}}' "$base_image")" = "$key" ]; then
    log "base $base_image ($key) is current"
    return
  fi
  if [ ! -s "$tar" ]; then
    log "base: mmdebstrap --variant=minbase $suite + ${packages[*]}"
    local opts=() o
    for o in "${dpkg_opts[@]}"; do opts+=("--dpkgopt=$o"); done
    for o in "${apt_opts[@]}"; do opts+=("--aptopt=$o"); done
    for o in "${hook_dirs[@]}"; do opts+=("--hook-dir=$o"); done
    # /etc/hostname and /etc/resolv.conf are the host's: a container runtime provides its own.
    # apt's package caches go as the lists do; device nodes stay out (runtimes mount /dev).
    mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" "${opts[@]}" \
      --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1"/var/cache/apt/*.bin' \
      --format=tar "$suite" - "${sources[@]}" 2> >(sed 's/^/[mmdebstrap] /' >&2) |
      mmtarfilter --path-exclude='/dev/*' >"$tar.tmp" || { rm -f "$tar.tmp"; exit 1; }
    mv "$tar.tmp" "$tar"
    find "$out" -maxdepth 1 -name "base-python3.11-$suite-*.tar" ! -name "${tar##*/}" -delete
    log "base: rootfs in $(( $(date +%s) - t0 ))s ($(du -h "$tar" | cut -f1))"
  fi
  log "base: importing $tar as $base_image"
  local ctr env=()
  for o in "${base_env[@]}"; do env+=(--env "$o"); done
  ctr=$(buildah from --quiet scratch)
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah config "${env[@]}" --cmd '["python3"]' --annotation "dev.canarium.base-key=$key" \
    --label org.opencontainers.image.description="Debian $suite minbase + ${packages[*]}" "$ctr"
  # Timestamp of the tarball: the same tarball gives the same image id, so that the layer cache
  # of the builds holds even when the base is imported again.
  buildah commit --quiet --rm --timestamp "$(stat -c %Y "$tar")" "$ctr" "$base_image" >/dev/null
}

# buildah build with the layer cache; the CA bundle as the optional `ca-bundle` secret.
build() {
  local tag=$1 file=$2 context=$3 t0; shift 3
  t0=$(date +%s)
  log "build $tag ($file)"
  local secret=()
  [ -s "$ca_bundle" ] && secret=(--secret "id=ca-bundle,src=$ca_bundle")
  buildah build --layers --pull=false --network=host "${secret[@]}" "$@" \
    -f "$file" -t "$tag" "$context" >&2
  log "built $tag in $(( $(date +%s) - t0 ))s"
}

build_pause() {
  local dir ctx version_define
  dir=$(GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  ctx="$work/pause"
  mkdir -p "$ctx"
  # As build/pause/Makefile: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV), strip.
  version_define="v$PAUSE_VERSION-$KUBERNETES_VERSION"
  gcc -Os -Wall -Werror -static -DVERSION="$version_define" -o "$ctx/pause" "$dir/build/pause/linux/pause.c"
  strip "$ctx/pause"
  "$ctx/pause" -v >&2
  build "$pause_image" "$here/pause/Containerfile" "$ctx"
}

# Fails when a layer of the archive holds the CA bundle (same bytes), or a file under /run/secrets.
check_no_ca() {
  python3 - "$1" "$ca_bundle" <<'EOF'
import hashlib, json, sys, tarfile
archive, bundle = sys.argv[1], sys.argv[2]
try:
    data = open(bundle, "rb").read()
except OSError:
    sys.exit(0)
want, size = hashlib.sha256(data).hexdigest(), len(data)
with tarfile.open(archive) as outer:
    (manifest,) = json.load(outer.extractfile("manifest.json"))
    for layer in manifest["Layers"]:
        with tarfile.open(fileobj=outer.extractfile(layer), mode="r|*") as inner:
            for m in inner:
                name = m.name.removeprefix("./")
                if name.startswith("run/secrets/") and not m.isdir():
                    sys.exit(f"{archive}: {layer} holds {name}")
                if m.isfile() and m.size == size:
                    if hashlib.sha256(inner.extractfile(m).read()).hexdigest() == want:
                        sys.exit(f"{archive}: {layer} holds the CA bundle as {name}")
EOF
}

# docker-archive named by its tag; written again only when the image changed.
export_image() {
  local tag=$1 name=$2 id tar
  tar="$out/$name.tar"
  id=$(image_id "$tag")
  if [ -s "$tar" ] && [ "$(cat "$tar.id" 2>/dev/null)" = "$id" ]; then
    echo "$tar"
    return
  fi
  rm -f "$tar.tmp" "$tar.id"
  buildah push --quiet "$tag" "docker-archive:$tar.tmp:$tag" >&2
  check_no_ca "$tar.tmp" || { rm -f "$tar.tmp"; exit 1; }
  mv "$tar.tmp" "$tar"
  echo "$id" >"$tar.id"
  log "$tag -> $tar ($(du -h "$tar" | cut -f1))"
  echo "$tar"
}

install_deps
mkdir -p "$out"
# One build at a time per cache (the base import and the archives are shared).
exec 9>"$out/.lock"
flock -n 9 || { log "waiting for another hack/images.sh"; flock 9; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
build_base
build "$operator_image" "$repo/operator/Dockerfile" "$repo" --build-arg "PYTHON_IMAGE=$base_image"
build "$serving_image" "$repo/serving_image/Dockerfile" "$repo" --build-arg "PYTHON_IMAGE=$base_image"
build "$training_image" "$repo/training_image/Dockerfile" "$repo" --build-arg "PYTHON_IMAGE=$base_image"
build_pause
export_image "$operator_image" "canarium-operator-$version"
export_image "$serving_image" "canarium-serving-$version"
export_image "$training_image" "canarium-training-$version"
export_image "$pause_image" "pause-$PAUSE_VERSION"
log "done in $(( $(date +%s) - start ))s"
