"""The serving image's Dockerfile keeps its key properties (there is no Docker engine here)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "serving_image" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_slim_non_root_no_healthcheck() -> None:
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith("AS builder")
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    final = ins[max(i for i, (word, _) in enumerate(ins) if word == "FROM") :]
    words = [word for word, _ in final]
    assert "HEALTHCHECK" not in [word for word, _ in ins]
    # the final stage copies the venv, installs nothing (no build tools, no apt)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    assert "RUN" not in words
    (user,) = [rest for word, rest in final if word == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert words.index("USER") > words.index("COPY")
    (entry,) = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry == '["canarium-serve"]'
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "CANARIUM_MODEL_CACHE_DIR=/tmp/" in env  # writable emptyDir under readOnlyRootFilesystem
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert ("EXPOSE", "8080 8081") in final  # REST + /metrics, gRPC


def test_builder_installs_the_serving_extra_from_the_repo_root() -> None:
    """The serving extra's requirements, read from pyproject.toml, then the project without
    its base dependencies (the CLI's Kubernetes client, which the server never imports)."""
    ins = _instructions()
    copies = [rest for word, rest in ins if word == "COPY"]
    assert any(c.startswith("pyproject.toml") for c in copies)
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert '["optional-dependencies"]["serving"]' in runs
    assert "-r /tmp/serving.txt" in runs
    assert re.search(r"pip install --no-deps \.(\s|$)", runs)


SERVING = REPO / "serving_image" / "canarium_serving"
# Modules of the `build` extra: packaging.py turns scikit-learn models into ONNX (a laptop's or
# a training job's work, never the server's).
BUILD_ONLY = {"packaging.py"}


def third_party_imports(path: Path) -> set[str]:
    """Top-level modules a source file imports, other than the standard library's and its own
    (module-level and function-level imports alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "canarium_serving"}


def test_the_serving_extra_holds_everything_the_server_imports() -> None:
    """The image installs the serving extra alone: a module the server imports from a
    distribution outside it would be missing there."""
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    extra = {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["serving"]
    }
    distributions = packages_distributions()
    missing = {}
    for path in sorted(SERVING.glob("*.py")):
        if path.name in BUILD_ONLY:
            continue
        for module in third_party_imports(path):
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & extra:
                missing[f"{path.name}: {module}"] = sorted(names)
    assert not missing, f"imported by the server, not in the serving extra: {missing}"


def test_the_import_scan_sees_function_level_and_dotted_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nimport numpy.linalg\nfrom . import x\nfrom canarium_serving import y\n"
        "def f():\n    from yaml import safe_load\n"
    )
    assert third_party_imports(source) == {"numpy", "yaml"}


def test_pip_gets_the_ca_bundle_only_as_an_optional_secret() -> None:
    """Behind a TLS-intercepting proxy pip needs its CA: a build secret (hack/images.sh passes
    `--secret id=ca-bundle,...`), optional for a plain docker build, never copied into a layer."""
    ins = _instructions()
    (pip_run,) = [rest for word, rest in ins if word == "RUN" and "pip install" in rest]
    assert pip_run.startswith("--mount=type=secret,id=ca-bundle,required=false ")
    assert "if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi" in (
        pip_run
    )
    for word, rest in ins:
        if word in {"COPY", "ADD"}:
            assert not re.search(r"\.(crt|pem)\b|ca-certificates|/etc/ssl", rest), rest
        if word == "ENV":
            assert "PIP_CERT" not in rest
