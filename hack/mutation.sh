#!/usr/bin/env bash
# Mutation testing of the pure core with mutmut (`make mutation`).
#
# mutmut derives module names from file paths under ./ or src/, and our two packages live in
# operator/ and serving_image/. So the run happens in a staging copy of the tree (.mutation/,
# git-ignored) whose src/ holds both packages; the unit tests there import the mutated copies.
# Prints one line per module: killed, survived, no tests, timeouts, score.
#   hack/mutation.sh                          # all thirteen modules
#   hack/mutation.sh rollout.py               # one module (a file name under src/)
#   hack/mutation.sh replicas.py judge.py     # several
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin=$repo/.venv/bin
# MUTATION_STAGE: another staging folder, so that runs on different modules can go side by side.
stage=${MUTATION_STAGE:-$repo/.mutation}

modules=(
  src/canarium/rollout.py
  src/canarium/reconcile.py
  src/canarium/retraining.py
  src/canarium/render.py
  src/canarium/analysis/judge.py
  src/canarium/analysis/monitoring.py
  src/canarium/analysis/stats.py
  src/canarium/analysis/sequential.py
  src/canarium/routers/base.py
  src/canarium/routers/replicas.py
  src/canarium/routers/gatewayapi.py
  src/canarium_serving/protocol.py
  src/canarium_serving/grpc_protocol.py
  src/canarium_serving/admission.py
  src/canarium_serving/metrics_contract.py
)
if (($#)); then
  selected=()
  for want in "$@"; do
    for m in "${modules[@]}"; do [[ $m == *"/$want" ]] && selected+=("$m"); done
  done
  ((${#selected[@]})) || { echo "mutation.sh: no pure-core module named $*" >&2; exit 2; }
  modules=("${selected[@]}")
fi

rm -rf "$stage"
mkdir -p "$stage/src"
git ls-files -z | grep -zv '^\(operator/canarium\|serving_image/canarium_serving\)/' \
  | tar --null -T - -cf - | tar -xf - -C "$stage"
cp -r operator/canarium serving_image/canarium_serving "$stage/src/"
find "$stage/src" -name __pycache__ -prune -exec rm -rf {} +

only=$(printf '"%s",' "${modules[@]}")
# mutmut runs the tests in .mutation/mutants/: the files they read (crds/, manifests/, ...) go too.
copy=$(cd "$stage" && for f in * .[!.]*; do [[ $f == src ]] || printf '"%s",' "$f"; done)
cat >"$stage/pyproject.toml" <<TOML
[tool.mutmut]
source_paths = ["src"]
only_mutate = [${only%,}]
# The Dockerfile checks look for the packages where the staging copy moved them from.
pytest_add_cli_args_test_selection = [
  "tests/unit",
  "tests/serving/test_admission.py",  # admission.py's tests: pure, beside the server's
  "--ignore=tests/unit/test_dockerfiles.py",
  "--ignore=tests/unit/test_serving_dockerfile.py",
  "--ignore=tests/unit/test_training_dockerfile.py",
]
also_copy = [${copy%,}]

[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"
timeout = 600
TOML

cd "$stage"
export CANARIUM_MUTATION=1
"$bin/mutmut" run --max-children "$(nproc)" >mutmut.log 2>&1 \
  || { tail -40 mutmut.log >&2; echo "mutation.sh: mutmut failed; its log: $stage/mutmut.log" >&2; exit 2; }
"$bin/python" "$repo/hack/mutation_report.py" "$stage" "${modules[@]}"
