"""The training image's Dockerfile keeps its contract and its key properties (no Docker engine
here; hack/images.sh builds it with buildah, and its build runs the example as a smoke test).
The generic checks (slim non-root final stage, build context, CA secret, the lock) are
tests/unit/test_dockerfiles.py's, which covers this Dockerfile too."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from canarium.cli import BUILD_MODULES
from canarium_serving import contract
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_dockerfiles import DOCKERFILES, Stage, parse
from tests.unit.test_serving_dockerfile import third_party_imports

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "training_image" / "Dockerfile"
EXAMPLE = REPO / "training_image" / "examples" / "train_iris.py"


def stages() -> list[Stage]:
    return parse(DOCKERFILE)[1]


def test_the_generic_dockerfile_checks_cover_it() -> None:
    assert DOCKERFILE in DOCKERFILES


def test_it_runs_the_users_training_script_as_a_numeric_non_root_user() -> None:
    builder, final = stages()
    assert builder.alias == "builder"
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["python"]
    assert json.loads(final.all("CMD")[-1]) == [contract.TRAINING_SCRIPT] == ["/train/train.py"]
    assert final.all("WORKDIR") == [str(Path(contract.TRAINING_SCRIPT).parent)]
    assert final.all("USER") == ["65532:65532"]
    words = [word for word, _ in final.instructions]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "COPY")
    env = " ".join(final.all("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # a read-only root filesystem
    assert "HOME=/tmp" in env  # the writable emptyDir, as the work dir's
    assert contract.DEFAULT_TRAINING_WORK_DIR.startswith("/tmp/")


def test_the_final_stage_takes_the_venv_and_the_example_only() -> None:
    _, final = stages()
    assert final.all("COPY") == [
        "--from=builder /opt/venv /opt/venv",
        "--from=builder /opt/canarium/examples /opt/canarium/examples",
    ]
    assert not final.all("RUN")


def _pip_installs(stage: Stage) -> list[str]:
    return [
        part.strip()
        for run in stage.all("RUN")
        for part in run.split("&&")
        if re.search(r"\bpip\b.*\binstall\b", part)
    ]


def test_the_builder_installs_the_build_extra_then_the_project_without_its_base() -> None:
    """The build extra's requirements from pyproject.toml (wheels only: no compiler), pinned by
    the lock, before the sources are copied (a source change does not download them again);
    then the project with --no-deps: the CLI's Kubernetes client stays out."""
    builder, _ = stages()
    runs = " ".join(builder.all("RUN"))
    assert '["optional-dependencies"]["build"]' in runs
    installs = _pip_installs(builder)
    (requirements,) = [i for i in installs if "-r /tmp/build.txt" in i]
    assert "--only-binary=:all:" in requirements
    assert "-c constraints/images.txt" in requirements
    (project,) = [i for i in installs if re.search(r"--no-deps .*\.$", i)]
    assert "--no-build-isolation" in project  # the pinned setuptools, no download
    order = [
        (word, rest)
        for word, rest in builder.instructions
        if word in {"COPY", "RUN"} and not rest.startswith("python -m venv")
    ]
    first_source = next(i for i, (w, r) in enumerate(order) if w == "COPY" and "operator/" in r)
    first_install = next(
        i for i, (w, r) in enumerate(order) if w == "RUN" and "-r /tmp/build.txt" in r
    )
    assert first_install < first_source
    copied = [rest for word, rest in order[:first_install] if word == "COPY"]
    assert copied == ["pyproject.toml ./", "constraints/images.txt constraints/"]


def test_the_test_suites_of_the_wheels_go_and_the_example_is_the_smoke_test() -> None:
    builder, _ = stages()
    runs = builder.all("RUN")
    slimming = next(r for r in runs if "-r /tmp/build.txt" in r)
    assert "-type d -name tests -exec rm -rf {} +" in slimming
    assert 'rm -rf "$site/onnx/backend/test/data"' in slimming
    assert "canarium model build --help" in " ".join(runs)
    assert "COPY" in dict(builder.instructions)
    assert "training_image/examples/ /opt/canarium/examples/" in builder.all("COPY")
    smoke = runs[-1]
    assert "python /opt/canarium/examples/train_iris.py --out /tmp/smoke" in smoke
    assert 'read_manifest("/tmp/smoke")' in smoke


def test_make_images_builds_and_exports_it() -> None:
    script = (REPO / "hack" / "images.sh").read_text()
    assert "training_image=ghcr.io/canarium-dev/canarium-training:$version" in script
    assert re.search(
        r'^build "\$training_image" "\$repo/training_image/Dockerfile" "\$repo" '
        r'--build-arg "PYTHON_IMAGE=\$base_image"$',
        script,
        re.MULTILINE,
    )
    assert re.search(
        r'^export_image "\$training_image" "canarium-training-\$version"$', script, re.MULTILINE
    )


# --- the build extra holds everything packaging and `canarium model build` import -----------

SERVING = REPO / "serving_image" / "canarium_serving"
OPERATOR = REPO / "operator" / "canarium"


def local_imports(path: Path, package: str) -> set[Path]:
    """The files of `package` that `path` imports (relative and absolute imports)."""
    root = {"canarium_serving": SERVING, "canarium": OPERATOR}
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules: list[tuple[str, str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = node.module or ""
                names = [base] if base else [a.name for a in node.names]
                modules += [(package, n) for n in names]
            elif node.module and node.module.split(".")[0] in root:
                top, _, rest = node.module.partition(".")
                modules += [(top, rest)] if rest else [(top, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top in root and rest:
                    modules.append((top, rest))
        for top, name in modules:
            candidate = root[top] / (name.replace(".", "/") + ".py")
            if candidate.exists():
                found.add(candidate)
    return found


def closure(start: list[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = "canarium_serving" if SERVING in path.parents else "canarium"
        todo += local_imports(path, package)
    return seen


def build_extra() -> set[str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    return {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["build"]
    }


def test_the_build_extra_holds_everything_packaging_imports() -> None:
    """The training image installs the build extra alone: what packaging, the manifest,
    `canarium model build` (modelbuild.py and the modules they import, transitively) and the
    example import must come from it."""
    files = closure([SERVING / "packaging.py", SERVING / "manifest.py", OPERATOR / "modelbuild.py"])
    assert SERVING / "fetch.py" in files  # packaging uses the server's fetch (transitively)
    extra = build_extra()
    distributions = packages_distributions()
    missing = {}
    for path in sorted(files | {EXAMPLE}):
        for module in third_party_imports(path) - {"canarium"}:
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & extra:
                missing[f"{path.name}: {module}"] = sorted(names)
    for module in [*BUILD_MODULES, "yaml", "obstore"]:  # the CLI's check, -o yaml, the upload
        names = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not names & extra:
            missing[f"cli.py: {module}"] = sorted(names)
    assert not missing, f"imported for packaging, not in the build extra: {missing}"


def test_the_closure_follows_relative_and_absolute_imports(tmp_path: Path) -> None:
    files = closure([OPERATOR / "modelbuild.py"])
    assert {SERVING / "packaging.py", SERVING / "manifest.py", SERVING / "contract.py"} <= files
    assert SERVING / "stats.py" in files  # packaging's `from .stats import ...`
    assert SERVING / "app.py" not in files  # the server's transport is not packaging's
    assert sys.version_info >= (3, 11)
