# Canarium: one entry point. `make demo` sets up and runs the demo; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup lint format typecheck unit e2e test test-deps crds cluster-up cluster-down kubeconfig kubectl \
        control-plane demo bench bench-serving bench-operator bench-rollback bench-judgement clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

setup: $(STAMP) ## create .venv with the project (editable) and its tools

lint: setup ## ruff lint and format check, and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: setup ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: setup ## mypy --strict on both packages
	$(BIN)/mypy

.PHONY: images
images: ## build the operator, serving, training and pause images (buildah, no Docker); load them into the local node if it runs
	@archives=$$(hack/images.sh) && hack/cluster.sh load $$archives

control-plane: ## build the local control plane into ~/.cache/canarium (first run only)
	@hack/build-control-plane.sh >/dev/null

cluster-up: control-plane ## start the local control plane with kwok nodes
	@hack/cluster.sh up

cluster-down: ## stop the local control plane, leaving no process behind
	@hack/cluster.sh down

kubeconfig: ## print the local cluster's kubeconfig path
	@hack/cluster.sh kubeconfig

kubectl: ## print the path of the matching kubectl
	@hack/cluster.sh kubectl

.PHONY: deploy
KUBECTL ?= kubectl
crds: setup ## regenerate crds/ (and the Helm chart's copy) from the pydantic models
	$(BIN)/canarium crds --out crds
	$(BIN)/canarium crds --out charts/canarium/crds

deploy: ## install the operator into the current kubectl context (kubectl apply -k manifests/install)
	$(KUBECTL) apply -k manifests/install

unit: setup ## unit and model-server tests (no cluster)
	$(BIN)/pytest tests/unit tests/serving

test-deps: ## what the tests need, if missing: Prometheus (Debian), Traefik (hack/gateway.sh), Helm (hack/helm.sh), versitygw (hack/versitygw.sh), Azurite (hack/azurite.sh)
	command -v prometheus >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus)
	@hack/gateway.sh >/dev/null
	@hack/helm.sh >/dev/null
	@hack/versitygw.sh >/dev/null
	@hack/azurite.sh >/dev/null

e2e: setup control-plane test-deps images ## e2e tests against the local control plane (or CANARIUM_KUBECONFIG)
	$(BIN)/pytest tests/e2e

test: setup control-plane test-deps images ## everything: lint, type checks, unit, serving and e2e tests
	$(MAKE) --no-print-directory lint typecheck test-min
	CANARIUM_REQUIRE_PROMETHEUS=1 $(BIN)/pytest

.PHONY: test-min lock
test-min: setup ## unit and model-server tests with every dependency at its lower bound (.venv-min)
	hack/min-versions.sh

lock: ## re-pin the images' packages (constraints/images.txt) after a dependency change
	hack/lock.sh

.PHONY: mutation
mutation: setup ## mutation testing of the pure core (mutmut); per-module scores, bar 90%
	hack/mutation.sh

.PHONY: test-deep
test-deep: setup ## longer model-based tests
	CANARIUM_DEEP=1 $(BIN)/pytest tests/unit/test_rollout_stateful.py

demo: setup control-plane images ## local cluster with a real node, the operator from its image, the iris story and the closed loop
	@hack/versitygw.sh >/dev/null
	$(BIN)/python hack/demo.py

clean: cluster-down ## stop the cluster and remove the venv (the control-plane cache stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

bench: bench-serving bench-operator bench-rollback bench-judgement ## every benchmark, printed as figures and ratios

bench-serving: setup ## ours (REST JSON/binary, gRPC) vs KServe 0.21 vs MLServer 1.7.1, no-op HTTP and onnxruntime ceilings
	$(BIN)/python tests/bench/bench_serving.py --no-batching $(BENCH_SERVING_ARGS)

.PHONY: bench-soak
bench-soak: setup ## the model server at saturation for 3 min (RSS drift, p99 per interval), then 503 latency past its in-flight limit
	$(BIN)/python -m tests.bench.bench_soak $(BENCH_SOAK_ARGS)

bench-operator: setup control-plane ## vs Argo Rollouts, one kwok cluster: 1,000 to Ready, RSS, CPU, 100 rollouts vs 1 (BENCH_OPERATOR_ARGS="--count 5000")
	$(BIN)/python -m tests.bench.bench_operator --count 1000 $(BENCH_OPERATOR_ARGS)

bench-rollback: setup control-plane images ## broken canary to all traffic on stable, in analysis intervals
	$(BIN)/python -m tests.bench.bench_rollback --runs 3

bench-judgement: setup ## simulated rollouts: sequential judge vs fixed thresholds (false rollbacks, detection)
	$(BIN)/python -m tests.bench.bench_judgement

.PHONY: proto
proto: setup ## regenerate the model server's gRPC messages (serving_image/canarium_serving/proto) from inference.proto
	cd serving_image/canarium_serving/proto && $(CURDIR)/$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. inference.proto

.PHONY: argocd-cm
argocd-cm: setup ## regenerate manifests/argocd/argocd-cm-actions*.yaml from the Argo CD actions' Lua
	$(BIN)/python -m tests.argocd_lua
