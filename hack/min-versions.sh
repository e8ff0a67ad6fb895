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
python=${PYTHON:-python3}
venv=${CANARIUM_MIN_VENV:-$repo/.venv-min}
# From dev: what the tests need (linters and type stubs do not run there).
test_tools="pytest pytest-timeout hypothesis httpx tritonclient kserve"

pins=$("$python" - "$repo/pyproject.toml" "$test_tools" <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
tools = set(sys.argv[2].split())
requirements = list(project["dependencies"])
for extra, entries in project["optional-dependencies"].items():
    if extra == "dev":
        requirements += [r for r in entries if re.split(r"[\s<>=!~;\[]", r, 1)[0] in tools]
    else:
        requirements += entries
missing, seen = [], set()
for requirement in requirements:
    spec, _, marker = requirement.partition(";")
    name = re.split(r"[\s<>=!~\[]", spec.strip(), maxsplit=1)[0]
    extras = re.match(r"[\w.-]+(\[[^\]]*\])?", spec.strip()).group(1) or ""  # kept: tritonclient[http]
    if name == project["name"] or requirement in seen:  # itself; shared by two extras
        continue
    seen.add(requirement)
    floor = re.search(r"(?:>=|==)\s*([\w.]+)", spec)
    if not floor:
        missing.append(requirement)
        continue
    print(f"{name}{extras}=={floor.group(1)}" + (f"; {marker.strip()}" if marker else ""))
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
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
