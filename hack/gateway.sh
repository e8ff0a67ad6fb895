#!/usr/bin/env bash
# Builds Traefik (TRAEFIK_VERSION in versions.env), the Gateway API implementation the e2e tests
# send router gatewayAPI's traffic through, into a cache outside the repository, and prints the
# binary's path. Only the first run on a machine pays (some 12 CPU-minutes from an empty Go
# cache, downloads included: 11m45s on a busy 2-core machine); later runs return at once.
#
# The tests run it as a host process (tests/e2e/conftest.py, fixture `gateway`): its
# kubernetesGateway provider reads the cluster through KUBECONFIG, and it proxies to the pod IPs
# of the EndpointSlices, from one entry point on 127.0.0.1.
#
# Traefik's go.mod has replace directives, so `go install …@version` refuses it: the module's
# source is taken from the Go module proxy (`go mod download`), copied out of the read-only
# module cache and built there with its own go.mod and go.sum, as upstream builds it
# (build_go_module in hack/lib.sh).
# Why v3.6: v3.7.x needs github.com/containous/go-http-auth v0.4.1-0.20260804094822-b975dcaa8c48
# (and v3.7.13 some of lego v5's DNS SDKs), which the module proxy here refuses (403), and its
# nested module github.com/traefik/traefik/dynamic/ext (pkg/config/dynamic/ext) is replaced by a
# local path that the module zip leaves out.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=lib.sh
. "$here/lib.sh"

build_go_module gateway "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" ./cmd/traefik \
  "$canarium_cache/bin/traefik-$TRAEFIK_VERSION/traefik" \
  -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
