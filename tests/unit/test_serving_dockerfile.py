"""The serving image's Dockerfile keeps its key properties (there is no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "serving_image" / "Dockerfile"


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
    assert ("EXPOSE", "8080") in final


def test_builder_installs_the_serving_extra_from_the_repo_root() -> None:
    ins = _instructions()
    copies = [rest for word, rest in ins if word == "COPY"]
    assert any(c.startswith("pyproject.toml") for c in copies)
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert '".[serving]"' in runs


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
