#!/usr/bin/env bash
# The lower bounds of pyproject.toml, tested: a venv (.venv-min) where every direct dependency
# (the base, every extra but dev, and the test tools of dev) is installed at exactly its lower
# bound (`>=X` becomes `==X`; transitive ones are left to pip), and the project editable; then
# the unit tests run there. A dependency without a lower bound is an error: an untested floor.
# The venv is reused while the pins are unchanged (stamp: the pins file).
#   hack/min-versions.sh                 # install if needed, then the tests below
#   hack/min-versions.sh tests/unit/x.py # other pytest arguments
# By default tests/unit and tests/serving (real servers: uvicorn, uvloop, httptools, orjson,
# onnxruntime at their floors) but three slow tests that exercise no dependency more than the
# rest do: the model-based state machine test (pure logic), the real-Prometheus provider test
# and the metrics-under-load test; the main run (`make test`) has them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}  # has packaging (make setup)
venv=${CANARIUM_MIN_VENV:-$repo/.venv-min}
# From dev: what the tests import (linters and type stubs do not run there), with the extras
# they import in-process; the V2 clients that run as processes of their own come from the dev
# venv (CANARIUM_DEV_PYTHON below): tritonclient[grpc] and kserve need newer grpcio and
# orjson than the server's floors.
test_tools="pytest pytest-timeout hypothesis httpx tritonclient[http]"

pins=$("$python" - "$repo/pyproject.toml" "$test_tools" <<'PY'
import sys
import tomllib

from packaging.requirements import Requirement

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
tools = {r.name: r.extras for r in map(Requirement, sys.argv[2].split())}
requirements = [Requirement(r) for r in project["dependencies"]]
for extra, entries in project["optional-dependencies"].items():
    parsed = [Requirement(r) for r in entries]
    if extra == "dev":
        parsed = [r for r in parsed if r.name in tools]
        for r in parsed:
            r.extras = tools[r.name]
    requirements += parsed
missing, seen = [], set()
for req in requirements:
    if req.name == project["name"] or str(req) in seen:  # itself; shared by two extras
        continue
    seen.add(str(req))
    floors = [s.version for s in req.specifier if s.operator in (">=", "==")]
    if not floors:
        missing.append(str(req))
        continue
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    print(f"{req.name}{extras}=={floors[0]}" + (f"; {req.marker}" if req.marker else ""))
if missing:
    sys.exit(f"min-versions: no lower bound in pyproject.toml: {', '.join(missing)}")
PY
)
stamp="$venv/.pins"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
  echo "[min-versions] installing the lower bounds into $venv:" $(echo "$pins" | cut -d';' -f1) >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/pip" --disable-pip-version-check -q)
  "${pip[@]}" install --upgrade pip >&2
  echo "$pins" >"$venv/requirements.txt"
  "${pip[@]}" install -r "$venv/requirements.txt" >&2
  "${pip[@]}" install --no-deps -e "$repo" >&2
  "$venv/bin/pip" check >&2
  echo "$pins" >"$stamp"
fi
cd "$repo"
[ $# -gt 0 ] || set -- tests/unit tests/serving \
  --deselect tests/unit/test_rollout_stateful.py::TestRolloutMachine \
  --deselect tests/serving/test_analysis_scrape.py::test_prometheus_provider_over_real_prometheus \
  --deselect tests/serving/test_server.py::test_metrics_endpoint_survives_scrapes_during_load
# The V2 clients (tests/serving/v2_clients.py) run in their own processes, from the dev venv:
# kserve cannot be installed next to these floors (it needs orjson >= 3.11.6).
export CANARIUM_DEV_PYTHON="$repo/.venv/bin/python"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
