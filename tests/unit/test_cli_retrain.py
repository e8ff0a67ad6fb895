"""`kubectl canarium retrain` and `kubectl canarium status mretrain/NAME`: the annotations the
operator reads (canarium.api.modelretraining), patched alone, and the refusals of a candidate
that is not there. The API server is a small stub on 127.0.0.1 that records every request."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from canarium import cli
from canarium.api.modelretraining import (
    ANNOTATION_APPROVE,
    ANNOTATION_DISCARD,
    ANNOTATION_RETRAIN,
)
from canarium.cli import build_parser, completions, main, status_target
from canarium.statusview import render_retraining, render_status

API = "/apis/canarium.dev/v1alpha1/namespaces/{ns}"
RETRAININGS = API + "/modelretrainings"
MDEPS = API + "/modeldeployments"
R_PATH = RETRAININGS.format(ns="ml") + "/iris-retrain"
SHA = "cd" * 32


class Request:
    def __init__(self, method: str, path: str, content_type: str, body: str) -> None:
        self.method, self.path, self.content_type = method, path, content_type
        self.body: Any = json.loads(body) if body else None

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.body}"


class StubApi(BaseHTTPRequestHandler):
    """Answers GETs and PATCHes of the objects in `objects` (path -> JSON) with the object (a
    PATCH changes nothing: what was sent is in `requests`), 404s as kube-apiserver words them,
    403 for the paths in `forbidden`."""

    objects: ClassVar[dict[str, Any]] = {}
    forbidden: ClassVar[set[str]] = set()
    requests: ClassVar[list[Request]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        path = self.path.split("?")[0]
        self.requests.append(Request(method, path, self.headers.get("Content-Type", ""), body))
        if path in self.forbidden:
            self._answer(403, {"kind": "Status", "reason": "Forbidden", "message": "forbidden"})
        elif path in self.objects:
            self._answer(200, self.objects[path])
        else:
            name = path.rsplit("/", 1)[1]
            kind = path.rsplit("/", 2)[1]
            details = {"name": name, "group": "canarium.dev", "kind": kind}
            self._answer(404, {"kind": "Status", "reason": "NotFound", "details": details})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[type[StubApi], Path]]:
    handler = type("Api", (StubApi,), {"objects": {}, "requests": [], "forbidden": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}
                ],
                "current-context": "main",
            }
        )
    )
    yield handler, config
    server.shutdown()
    server.server_close()


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def retraining(candidate: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    if candidate is not None:
        status["candidate"] = candidate
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelRetraining",
        "metadata": {"name": "iris-retrain", "namespace": "ml", "annotations": {"team": "ml"}},
        "spec": {
            "deploymentRef": {"name": "iris"},
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}
            },
            "output": {"uri": "s3://models/iris/retrain"},
            "approval": "Manual",
        },
        "status": status,
    }


def candidate(run: str = "iris-retrain-4", *, approved: bool) -> dict[str, Any]:
    return {
        "run": run,
        "approved": approved,
        "acceptedTime": "2026-12-03T11:20:00Z",
        "model": {
            "uri": f"s3://models/iris/retrain/{run}/model.onnx",
            "version": "2.0.0-rt4",
            "sha256": SHA,
        },
        "replaces": {"uri": "s3://models/iris/2.0.0/model.onnx", "version": "2.0.0"},
    }


def patches(handler: type[StubApi]) -> list[Request]:
    return [r for r in handler.requests if r.method == "PATCH"]


# --- retrain: a run now --------------------------------------------------------------------


def test_retrain_patches_only_the_request_annotation_with_the_time_now(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[R_PATH] = retraining()
    before = datetime.now(UTC).replace(microsecond=0)
    code, out, err = run(["retrain", "iris-retrain", "--kubeconfig", str(config)], capsys)
    after = datetime.now(UTC)
    assert (code, err) == (0, "")
    # One request: a JSON merge patch of metadata.annotations alone, never the spec.
    [request] = handler.requests
    assert (request.method, request.path) == ("PATCH", R_PATH)
    assert request.content_type == "application/merge-patch+json"
    assert list(request.body) == ["metadata"]
    assert list(request.body["metadata"]) == ["annotations"]
    [(key, value)] = request.body["metadata"]["annotations"].items()
    assert key == ANNOTATION_RETRAIN == "canarium.dev/retrain-requested-at"
    # RFC 3339 in UTC, to the second: a new value every second, as the operator wants one.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    assert before <= datetime.fromisoformat(value.replace("Z", "+00:00")) <= after
    assert out == f"modelretraining.canarium.dev/iris-retrain retrain requested at {value}\n"


def test_retrain_of_a_suspended_retraining_says_when_the_run_starts(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[R_PATH] = retraining()
    handler.objects[R_PATH]["spec"]["suspend"] = True
    code, out, _ = run(["retrain", "iris-retrain", "--kubeconfig", str(config)], capsys)
    assert code == 0
    suffix = " (it is suspended: the run starts once spec.suspend is false)\n"
    assert out.startswith("modelretraining.canarium.dev/iris-retrain retrain requested at ")
    assert out.endswith(suffix), out
    assert len(patches(handler)) == 1


def test_retrain_takes_the_cluster_options_anywhere(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[RETRAININGS.format(ns="other") + "/r"] = retraining(candidate(approved=False))
    argv = ["-n", "other", "retrain", "r", "--approve", "--kubeconfig", str(config)]
    assert run(argv, capsys)[0] == 0
    argv = ["retrain", "--kubeconfig", str(config), "r", "--namespace=other"]
    assert run(argv, capsys)[0] == 0
    assert [(r.method, r.path) for r in handler.requests] == [
        ("GET", RETRAININGS.format(ns="other") + "/r"),
        ("PATCH", RETRAININGS.format(ns="other") + "/r"),
        ("PATCH", RETRAININGS.format(ns="other") + "/r"),
    ]


@pytest.mark.parametrize("flags", [[], ["--approve"], ["--discard", "x-1"]])
def test_a_missing_retraining_is_one_line_and_exit_1(
    flags: list[str], api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    code, out, err = run(["retrain", "nope", *flags, "--kubeconfig", str(config)], capsys)
    assert (code, out, err) == (
        1,
        "",
        'error: modelretraining "nope" not found in namespace "ml"\n',
    )
    # --approve/--discard read the candidate first: the 404 comes before any PATCH.
    assert [r.method for r in handler.requests] == (["GET"] if flags else ["PATCH"])


def test_approve_and_discard_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["retrain", "r", "--approve", "--discard"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- --approve / --discard -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "annotation", "approved"),
    [
        (["--approve"], ANNOTATION_APPROVE, False),  # the candidate's run, by default
        (["--approve", "iris-retrain-4"], ANNOTATION_APPROVE, False),
        (["--discard"], ANNOTATION_DISCARD, True),
        (["--discard", "iris-retrain-4"], ANNOTATION_DISCARD, True),
        (["--discard"], ANNOTATION_DISCARD, False),  # one awaiting approval may be discarded
    ],
)
def test_approve_and_discard_annotate_the_candidates_run(
    flags: list[str],
    annotation: str,
    approved: bool,
    api: tuple[type[StubApi], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler, config = api
    handler.objects[R_PATH] = retraining(candidate(approved=approved))
    code, out, err = run(["retrain", "iris-retrain", *flags, "--kubeconfig", str(config)], capsys)
    assert (code, err) == (0, "")
    get, patch = handler.requests
    assert (get.method, get.path) == ("GET", R_PATH)
    assert (patch.method, patch.path) == ("PATCH", R_PATH)
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"metadata": {"annotations": {annotation: "iris-retrain-4"}}}
    verb = flags[0][2:]
    assert out == (
        f"modelretraining.canarium.dev/iris-retrain {verb} of run iris-retrain-4 "
        "(candidate 2.0.0-rt4) requested\n"
    )


@pytest.mark.parametrize(
    ("flags", "status", "message"),
    [
        (["--approve"], retraining(phase="Idle")["status"],
         'modelretraining "iris-retrain" has no candidate awaiting approval (phase Idle)'),
        (["--approve", "iris-retrain-4"], {},
         'modelretraining "iris-retrain" has no candidate awaiting approval (phase Pending)'),
        (["--discard"], retraining(phase="Training")["status"],
         'modelretraining "iris-retrain" has no candidate to discard (phase Training)'),
        # approval Automatic (or approved already): nothing awaits approval
        (["--approve"], retraining(candidate(approved=True), phase="Canarying")["status"],
         'modelretraining "iris-retrain" has no candidate awaiting approval: candidate '
         "2.0.0-rt4 of run iris-retrain-4 is approved already"),
        # another run's candidate: the operator would ignore the annotation
        (["--approve", "iris-retrain-3"], retraining(candidate(approved=False))["status"],
         'run "iris-retrain-3" is not the candidate of modelretraining "iris-retrain": the '
         "candidate is 2.0.0-rt4 of run iris-retrain-4"),
        (["--discard", "iris-retrain-5"], retraining(candidate(approved=True))["status"],
         'run "iris-retrain-5" is not the candidate of modelretraining "iris-retrain": the '
         "candidate is 2.0.0-rt4 of run iris-retrain-4"),
    ],
)  # fmt: skip
def test_approve_and_discard_refuse_without_such_a_candidate(
    flags: list[str],
    status: dict[str, Any],
    message: str,
    api: tuple[type[StubApi], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler, config = api
    handler.objects[R_PATH] = {**retraining(), "status": status}
    code, out, err = run(["retrain", "iris-retrain", *flags, "--kubeconfig", str(config)], capsys)
    assert (code, out, err) == (1, "", f"error: {message}\n")
    assert patches(handler) == []  # nothing written


# --- status mretrain/NAME, and a ModelDeployment serving a candidate -----------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("iris", ("ModelDeployment", "iris")),
        ("mdep/iris", ("ModelDeployment", "iris")),
        ("modeldeployments.canarium.dev/iris", ("ModelDeployment", "iris")),
        ("mretrain/r", ("ModelRetraining", "r")),
        ("modelretraining/r", ("ModelRetraining", "r")),
        ("ModelRetrainings/r", ("ModelRetraining", "r")),
        ("modelretraining.canarium.dev/r", ("ModelRetraining", "r")),
    ],
)
def test_status_takes_kubectls_kind_slash_name(word: str, expected: tuple[str, str]) -> None:
    assert status_target(word) == expected


@pytest.mark.parametrize("word", ["pod/iris", "mretrain/", "/iris"])
def test_status_of_an_unknown_kind_or_no_name_is_a_usage_error(
    word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", word])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "mretrain/NAME" in err or "names no object" in err


RUNNING = retraining(
    phase="Training",
    message="run iris-retrain-2: Job iris-retrain-2 trains 2.0.0-rt2",
    runs=[
        {"name": "iris-retrain-2", "trigger": "manual", "phase": "Running",
         "startTime": "2026-12-03T11:00:00Z", "message": "Job iris-retrain-2 trains 2.0.0-rt2"},
        {"name": "iris-retrain-1", "trigger": "drift", "phase": "RolledBack",
         "startTime": "2026-12-02T11:00:00Z",
         "model": {"uri": "s3://models/iris/retrain/iris-retrain-1/m.onnx",
                   "version": "2.0.0-rt1"},
         "metrics": {"accuracy": 0.95}, "baseMetrics": {"accuracy": 0.94},
         "message": "candidate 2.0.0-rt1 rolled back: errorRate 0.2"},
    ],
)  # fmt: skip


def test_status_of_a_retraining_renders_it(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[R_PATH] = RUNNING
    code, out, _ = run(["status", "mretrain/iris-retrain", "--kubeconfig", str(config)], capsys)
    assert (code, out) == (0, render_retraining(RUNNING) + "\n")
    assert "  iris-retrain-1   drift     RolledBack   2026-12-02T11:00:00Z   2.0.0-rt1" in out
    assert [(r.method, r.path) for r in handler.requests] == [("GET", R_PATH)]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_status_of_a_retraining_as_json_or_yaml_is_its_status(
    output: str, api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[R_PATH] = RUNNING
    argv = ["status", "modelretraining/iris-retrain", "-o", output, "--kubeconfig", str(config)]
    code, out, _ = run(argv, capsys)
    assert (code, yaml.safe_load(out)) == (0, RUNNING["status"])
    if output == "json":
        assert json.loads(out) == RUNNING["status"]


def test_status_of_a_missing_retraining_names_its_kind(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = api
    for extra in ([], ["-o", "json"]):
        code, out, err = run(
            ["status", "mretrain/nope", *extra, "--kubeconfig", str(config)], capsys
        )
        assert (code, out, err) == (
            1,
            "",
            'error: modelretraining "nope" not found in namespace "ml"\n',
        )


IRIS: dict[str, Any] = {
    "apiVersion": "canarium.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {"model": {"uri": "s3://models/iris/2.0.0/model.onnx", "version": "2.0.0"}},
    "status": {
        "phase": "Healthy",
        "retrained": {
            "retraining": "iris-retrain",
            "run": "iris-retrain-4",
            "modelVersion": "2.0.0-rt4",
            "modelUri": "s3://models/iris/retrain/iris-retrain-4/model.onnx",
            "replacesVersion": "2.0.0",
        },
    },
}


def test_status_of_a_deployment_serving_a_candidate_reads_its_sha256_from_the_retraining(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[MDEPS.format(ns="ml") + "/iris"] = IRIS
    handler.objects[R_PATH] = retraining(candidate(approved=True))
    for word in ("iris", "mdep/iris"):
        code, out, _ = run(["status", word, "--kubeconfig", str(config)], capsys)
        assert (code, out) == (0, render_status(IRIS, None, handler.objects[R_PATH]) + "\n")
        assert f"version 2.0.0-rt4, sha256 {SHA}" in out
        assert "  revert:   kubectl canarium retrain iris-retrain --discard (back to 2.0.0)" in out
    assert [r.path for r in handler.requests] == [MDEPS.format(ns="ml") + "/iris", R_PATH] * 2
    # Not allowed to read ModelRetrainings (or it is gone): the view all the same, without it.
    handler.forbidden.add(R_PATH)
    code, out, err = run(["status", "iris", "--kubeconfig", str(config)], capsys)
    assert (code, err) == (0, "")
    assert out == render_status(IRIS, None) + "\n"
    assert SHA not in out


# --- completion ------------------------------------------------------------------------------


def lookup(kind: str, given: dict[str, str]) -> list[str]:
    names = {
        "modeldeployments": {"ml": ["iris", "digits"], "": ["other"]},
        "modelretrainings": {"ml": ["iris-retrain", "digits-retrain"], "": ["nightly"]},
    }
    return names[kind][given.get("namespace", "")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (["re"], ["recording", "retry", "resume", "retrain"]),
        (["retrain", ""], ["nightly"]),
        (["-n", "ml", "retrain", "i"], ["iris-retrain"]),
        (["retrain", "-n", "ml", ""], ["iris-retrain", "digits-retrain"]),
        (["retrain", "iris-retrain", ""], []),  # the name is there already
        (["retrain", "iris-retrain", "--approve", ""], []),  # a run: not listed
        (["retrain", "r", "--"], ["--approve", "--context", "--discard", "--help",
                                  "--kubeconfig", "--namespace"]),
        (["status", ""], ["other"]),  # plain names stay ModelDeployments
        (["-n", "ml", "status", "mretrain/"], ["mretrain/iris-retrain",
                                               "mretrain/digits-retrain"]),
        (["-n", "ml", "status", "modelretraining/d"], ["modelretraining/digits-retrain"]),
        (["-n", "ml", "status", "mdep/i"], ["mdep/iris"]),
        (["status", "pod/"], []),
        (["abort", "mretrain/"], []),  # KIND/NAME is status's alone
    ],
)  # fmt: skip
def test_completion_of_retrain_and_of_status_kind_slash_name(
    line: list[str], expected: list[str]
) -> None:
    assert completions(build_parser(), line[:-1], line[-1], lookup) == (expected, ":4")


def test_completion_lists_retrainings_from_the_cluster(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[RETRAININGS.format(ns="ml")] = {
        "items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]
    }
    assert cli.complete(["--kubeconfig", str(config), "retrain", ""]) == 0
    assert capsys.readouterr().out == "a\nb\n:4\n"
    assert [r.path for r in handler.requests] == [RETRAININGS.format(ns="ml")]
