"""The image Dockerfiles, checked offline (no Docker engine here): a slim, non-root final stage
without build tools or a HEALTHCHECK (Kubernetes ignores it: the manifests carry probes), a
build context (.dockerignore) that holds what the COPY lines need and nothing private, and pip's
CA bundle only ever as an optional build secret (hack/images.sh passes it; never a layer)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [
    p
    for p in (
        REPO / "operator" / "Dockerfile",
        REPO / "serving_image" / "Dockerfile",
        REPO / "training_image" / "Dockerfile",
    )
    if p.exists()
]
BASE_IMAGE = "python:3.11-slim"
PAUSE_CONTAINERFILE = REPO / "hack" / "pause" / "Containerfile"
IMAGES_SCRIPT = REPO / "hack" / "images.sh"
CA_SECRET = "ca-bundle"  # the secret id shared by hack/images.sh and the Dockerfiles
CERT_FILE = re.compile(r"(\.(crt|pem)\b|ca-certificates|/etc/ssl)", re.IGNORECASE)
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|python3?-dev|libc6?-dev|cargo|rustc)\b"
)


@dataclass
class Stage:
    image: str
    alias: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: continuation lines joined, comments
    dropped, ARG defaults substituted into FROM."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instr, _, rest = line.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instr == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            alias = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            stages.append(Stage(image, alias))
        else:
            assert stages, f"{path}: {instr} before FROM"
            stages[-1].instructions.append((instr, rest))
    return args, stages


def dockerignore() -> list[str]:
    path = REPO / ".dockerignore"
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ignored(relative: str, patterns: list[str]) -> bool:
    parts = Path(relative).parts
    for pattern in patterns:
        bare = pattern.removeprefix("**/").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, bare) for p in prefixes):
            return True
        if pattern.startswith("**/") and any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def test_there_is_an_operator_dockerfile() -> None:
    assert REPO / "operator" / "Dockerfile" in DOCKERFILES


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_final_stage_is_slim_python_and_non_root(path: Path) -> None:
    _, stages = parse(path)
    final = stages[-1]
    assert final.image == BASE_IMAGE, final.image
    users = final.all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].split(":")
    assert all(part.isdigit() for part in user), f"numeric USER (runAsNonRoot): {users[-1]}"
    assert int(user[0]) != 0
    if len(user) > 1:
        assert int(user[1]) != 0


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_healthcheck_and_no_build_tools_in_final_stage(path: Path) -> None:
    _, stages = parse(path)
    assert not any(s.all("HEALTHCHECK") for s in stages), "Kubernetes probes, not HEALTHCHECK"
    for run in stages[-1].all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tools in the final stage: {run}"
        assert not re.search(r"\bpip\b.*\binstall\b", run), "install in the builder stage"
    if len(stages) > 1:  # multi-stage: the final stage takes the result, not the sources
        copies = stages[-1].all("COPY")
        assert copies
        assert all("--from=" in c for c in copies), copies


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_copy_sources_are_in_the_build_context(path: Path) -> None:
    """The build context is the repository root (docker build -f <path> .)."""
    patterns = dockerignore()
    _, stages = parse(path)
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "--from=" in copy:
                continue
            words = [w for w in copy.split() if not w.startswith("--")]
            for source in words[:-1]:
                assert (REPO / source).exists(), f"{path.name}: COPY {source}: not in the repo"
                assert not ignored(source, patterns), f"COPY {source} is in .dockerignore"


def test_operator_image_runs_canarium() -> None:
    _, stages = parse(REPO / "operator" / "Dockerfile")
    final = stages[-1]
    assert len(stages) >= 2, "multi-stage"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["canarium"]
    assert json.loads(final.all("CMD")[-1]) == ["run"]
    builder_runs = " ".join(" ".join(s.all("RUN")) for s in stages[:-1])
    assert '".[operator]"' in builder_runs or "'.[operator]'" in builder_runs
    assert final.all("COPY") == [f"--from={stages[0].alias} /opt/canarium /opt/canarium"]


def test_dockerignore_keeps_the_context_small_and_private() -> None:
    patterns = dockerignore()
    for path in (".venv/bin/python", ".git/config", "tests/unit/test_dockerfiles.py"):
        assert ignored(path, patterns), path
    for path in ("operator/canarium/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "operator/canarium/cli.py"):
        assert not ignored(path, patterns), path


def _mount_options(run: str) -> list[dict[str, str]]:
    """The --mount flags of a RUN, each as a dict of its options."""
    mounts = []
    for word in run.split():
        if not word.startswith("--mount="):
            break
        options = word.removeprefix("--mount=").split(",")
        mounts.append(dict(o.partition("=")[::2] for o in options))
    return mounts


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_ca_bundle_is_an_optional_build_secret_never_a_layer(path: Path) -> None:
    """Every RUN that reaches PyPI mounts the CA secret (required=false: a plain `docker build`
    without --secret still works) and points pip at it only when it is there; nothing copies a
    certificate into an image."""
    _, stages = parse(path)
    pip_runs = 0
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            assert not CERT_FILE.search(copy), f"a certificate in a layer: COPY {copy}"
        for env in stage.all("ENV") + stage.all("ARG"):
            assert "PIP_CERT" not in env, env
            assert "/run/secrets" not in env, env
        for run in stage.all("RUN"):
            secrets = [m for m in _mount_options(run) if m.get("type") == "secret"]
            uses_secret = f"/run/secrets/{CA_SECRET}" in run or "PIP_CERT" in run
            if re.search(r"\bpip\b.*\binstall\b", run):
                pip_runs += 1
                assert uses_secret, f"pip without the CA secret: {run}"
            if not uses_secret:
                continue
            assert [m.get("id") for m in secrets] == [CA_SECRET], run
            assert secrets[0].get("required") == "false", "optional: docker builds without it"
            assert "target" not in secrets[0], "default target /run/secrets/<id>"
            assert f"if [ -s /run/secrets/{CA_SECRET} ]; then export PIP_CERT=" in run, run
    assert pip_runs, "the builder installs with pip"


def test_images_script_passes_the_same_secret_and_the_local_base() -> None:
    script = IMAGES_SCRIPT.read_text()
    assert f'--secret "id={CA_SECRET},src=$ca_bundle"' in script
    assert "/etc/ssl/certs/ca-certificates.crt" in script
    assert '--build-arg "PYTHON_IMAGE=$base_image"' in script
    assert "--layers" in script
    for path in DOCKERFILES:
        args, _ = parse(path)
        assert args["PYTHON_IMAGE"] == BASE_IMAGE, "the default a docker user pulls"


def test_pause_image_is_kubernetes_pause_from_scratch() -> None:
    _, stages = parse(PAUSE_CONTAINERFILE)
    (stage,) = stages
    assert stage.image == "scratch"
    assert stage.all("COPY") == ["pause /pause"]
    assert stage.all("USER") == ["65535:65535"]
    assert json.loads(stage.all("ENTRYPOINT")[-1]) == ["/pause"]
    assert not stage.all("RUN")


# --- the images' pins: constraints/images.txt (hack/lock.sh), used by every Dockerfile ---

LOCK = REPO / "constraints" / "images.txt"
LOCKED_EXTRAS = ("operator", "serving", "build")  # what the three images install


def lock_pins(text: str) -> dict[str, Version]:
    """name (normalised) -> pinned version of a constraints file; every line must be a pin."""
    pins: dict[str, Version] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{LOCK.name}: not a pin: {raw!r}"
        assert canonicalize_name(name) not in pins, f"{LOCK.name}: {name} twice"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def image_requirements(pyproject: dict[str, Any]) -> list[Requirement]:
    """What the images install from pyproject: the base dependencies and the three extras,
    those whose markers hold on the images' platform (Linux, CPython 3.11)."""
    project = pyproject["project"]
    names = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        names += project["optional-dependencies"][extra]
    environment = {"sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11"}
    requirements = [Requirement(r) for r in names]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]


def stale_pins(pyproject: dict[str, Any], pins: dict[str, Version]) -> list[str]:
    """What makes the lock stale against pyproject: a dependency the lock does not pin, or a
    pin outside the dependency's bounds."""
    problems = []
    for requirement in image_requirements(pyproject):
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement.name} is not in the lock")
        elif not requirement.specifier.contains(pin, prereleases=True):
            problems.append(f"{requirement.name}=={pin} is outside {requirement}")
    return problems


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_the_image_lock_pins_every_dependency_within_pyprojects_bounds() -> None:
    problems = stale_pins(pyproject(), lock_pins(LOCK.read_text()))
    assert not problems, "constraints/images.txt is stale (run hack/lock.sh): " + "; ".join(
        problems
    )


def test_a_stale_lock_is_told_apart() -> None:
    project = {
        "project": {
            "dependencies": ["kubernetes>=37", "pyyaml>=6"],
            "optional-dependencies": {
                "operator": ["kopf>=1.45"],
                "serving": ["uvloop>=0.19; sys_platform != 'linux'", "orjson>=3.10,<4"],
                "build": ["scikit-learn>=1.5", "joblib>=1.2"],
            },
        }
    }
    pins = lock_pins(
        "# header\nkubernetes==37.0.2\nPyYAML==6.0.1\nkopf==1.44.6\norjson==4.0\n"
        "scikit_learn==1.9.1\n"
    )
    assert stale_pins(project, pins) == [
        "kopf==1.44.6 is outside kopf>=1.45",
        "orjson==4.0 is outside orjson<4,>=3.10",
        "joblib is not in the lock",  # the build extra's (the training image) count too
    ]
    del pins["kubernetes"]
    assert stale_pins(project, pins)[0] == "kubernetes is not in the lock"
    with pytest.raises(AssertionError, match="not a pin"):
        lock_pins("kopf>=1.45\n")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_both_images_install_with_the_lock(path: Path) -> None:
    _, stages = parse(path)
    builder = stages[0]
    assert any("constraints/images.txt" in c for c in builder.all("COPY")), "the lock is copied"
    installs = [
        part
        for run in builder.all("RUN")
        for part in run.split("&&")
        if re.search(r"\bpip\b.*\binstall\b", part)
    ]
    assert installs
    for install in installs:
        if "--no-deps" in install:  # the project alone: nothing resolved, nothing to pin
            continue
        assert "-c constraints/images.txt" in install, install
