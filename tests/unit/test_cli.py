"""The CLI as kubectl's users expect it: cluster options anywhere on the line, one-line errors
with documented exit codes. The API server here is a small stub on 127.0.0.1 (the real one is
tests/e2e/test_cli.py's)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import urllib3
import yaml
from canarium import cli
from canarium.cli import (
    EPILOG,
    build_parser,
    completions,
    context_namespace,
    main,
    not_found_message,
    unreachable_message,
)


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "ml", "status", "iris", "-o", "json"],
        ["status", "-n", "ml", "iris", "-o", "json"],
        ["status", "iris", "-o", "json", "--namespace", "ml"],
        ["--namespace=ml", "status", "iris", "--output=json"],
    ],
)
def test_namespace_goes_anywhere_on_the_line(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.namespace, args.name, args.output) == (
        "status",
        "ml",
        "iris",
        "json",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--context", "c", "--kubeconfig", "k", "list", "-A"],
        ["list", "-A", "--context", "c", "--kubeconfig", "k"],
        ["--kubeconfig", "k", "list", "--context=c", "--all-namespaces"],
    ],
)
def test_context_and_kubeconfig_go_anywhere_on_the_line(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.context, args.kubeconfig, args.all_namespaces) == (
        "list",
        "c",
        "k",
        True,
    )
    # Not given: None, so that the namespace falls back to the context's.
    assert args.namespace is None


def test_a_later_option_wins_over_the_one_before_the_command() -> None:
    args = build_parser().parse_args(["-n", "a", "promote", "iris", "-n", "b", "--full"])
    assert (args.namespace, args.verb, args.full) == ("b", "promote", True)


def test_every_cluster_command_takes_the_cluster_options() -> None:
    for verb in ["status", "list", "promote", "abort", "retry", "pause", "resume", "recording"]:
        extra = [] if verb == "list" else ["x"]
        args = build_parser().parse_args([verb, *extra, "-n", "ns", "--context", "c"])
        assert (args.namespace, args.context) == ("ns", "c"), verb


def test_run_watches_the_namespaces_given_before_or_after_it() -> None:
    assert build_parser().parse_args(["-n", "a", "run"]).namespace == "a"
    assert build_parser().parse_args(["run", "-n", "a", "-n", "b"]).namespace == ["a", "b"]
    assert build_parser().parse_args(["run"]).namespace is None


def test_run_refuses_a_context_and_says_what_a_plain_install_lacks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["--context", "c", "run"]) == 2
    assert capsys.readouterr().err.startswith("error: `run` uses the kubeconfig's current context")
    monkeypatch.setitem(sys.modules, "kopf", None)  # as if the operator extra were missing
    assert main(["run"]) == 1
    assert capsys.readouterr().err.startswith(
        "error: `canarium run` needs the operator extra (no module 'kopf'): pip install"
    )


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert EPILOG in out
    for code in ("0  success", "1  error", "2  usage error"):
        assert code in out


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],  # no name
        ["status", "x", "-o", "table"],
        ["nope"],
        ["status", "x", "-w", "-o", "json"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == cli.EXIT_USAGE == 2
    assert "usage:" in capsys.readouterr().err


def test_context_namespace() -> None:
    contexts = [
        {"name": "a", "context": {"cluster": "c", "namespace": "ns-a"}},
        {"name": "b", "context": {"cluster": "c"}},
    ]
    assert context_namespace(contexts, contexts[0], None) == "ns-a"
    assert context_namespace(contexts, contexts[0], "b") is None
    assert context_namespace(contexts, contexts[1], "a") == "ns-a"
    assert context_namespace(contexts, None, None) is None
    assert context_namespace(contexts, contexts[0], "missing") is None


def test_a_404_names_the_missing_object_or_the_missing_kind() -> None:
    # What kube-apiserver answers for a missing object and for a kind it does not serve.
    missing = json.dumps(
        {
            "kind": "Status",
            "reason": "NotFound",
            "details": {"name": "iris", "group": "canarium.dev", "kind": "modeldeployments"},
        }
    )
    assert (
        not_found_message(missing, "modeldeployment", "iris", "ml")
        == 'modeldeployment "iris" not found in namespace "ml"'
    )
    no_crd = json.dumps({"kind": "Status", "reason": "NotFound", "details": {}})
    for body in (no_crd, "404 page not found"):
        message = not_found_message(body, "modeldeployment", "iris", "ml")
        assert "CRDs installed" in message, message


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server}},
                    {"name": "d", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "main", "context": context},
                    {"name": "other", "context": {"cluster": "c", "user": "u", "namespace": "o"}},
                    {"name": "dead", "context": {"cluster": "d", "user": "u"}},
                ],
                "current-context": "main",
            }
        )
    )
    return path


def test_unreachable_message_names_the_server_and_the_cause() -> None:
    port = closed_port()
    # The shape the kubernetes client raises: its pool retries, then gives up.
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, retries=0)
    with pytest.raises(urllib3.exceptions.HTTPError) as raised:
        pool.request("GET", "/")
    assert unreachable_message(raised.value) == (
        f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}: Connection refused"
    )


def test_a_request_nobody_answers_is_a_kube_error_that_keeps_its_cause() -> None:
    """The operator survives an API server that is away as it survives one that answers an
    error: every caller that catches KubeError (events, the analysis recording, the Lease)."""
    from canarium.kube import Kube, KubeError, Unreachable
    from kubernetes import client

    port = closed_port()
    kube = Kube(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}")))
    with pytest.raises(KubeError) as raised:
        asyncio.run(kube.request("GET", "/api/v1/namespaces", timeout=2))
    assert isinstance(raised.value, Unreachable)
    assert raised.value.status == 0
    assert isinstance(raised.value.__cause__, urllib3.exceptions.HTTPError)
    assert unreachable_message(raised.value.__cause__).endswith(": Connection refused")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv",
    [["list", "-A"], ["status", "iris"], ["status", "iris", "-o", "yaml"], ["abort", "iris"]],
)
def test_an_unreachable_server_is_one_line_and_exit_1(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{closed_port()}")
    code, out, err = run([*argv, "--kubeconfig", str(config)], capsys)
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert err.count("\n") == 1, err
    assert err.startswith("error: cannot reach the Kubernetes API server at https://127.0.0.1:")
    assert err.endswith(": Connection refused\n")


def test_a_bad_kubeconfig_or_context_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["list", "--kubeconfig", str(tmp_path / "none")], capsys)
    assert (code, err) == (1, f"error: kubeconfig {tmp_path / 'none'}: no such file\n")
    config = kubeconfig(tmp_path / "config", "https://127.0.0.1:1")
    code, _, err = run(["--kubeconfig", str(config), "--context", "nope", "list"], capsys)
    assert (code, err) == (1, 'error: context "nope" not found in the kubeconfig\n')
    (tmp_path / "empty").write_text("")
    code, _, err = run(["status", "x", "--kubeconfig", str(tmp_path / "empty")], capsys)
    assert code == 1
    assert err.startswith("error: no usable kubeconfig: ")
    assert err.count("\n") == 1


# --- against a stub API server ---------------------------------------------------------------


class StubApi(BaseHTTPRequestHandler):
    """Answers GETs from `objects` (path -> JSON), 404s as kube-apiserver words them, and
    records every request."""

    objects: ClassVar[dict[str, Any]] = {}
    served_kinds: tuple[str, ...] = ("modeldeployments", "rolloutpolicies")
    requests: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        self._lookup()

    def _lookup(self) -> None:
        path = self.path.split("?")[0]
        if path in self.objects:
            self._answer(200, self.objects[path])
        elif not any(f"/{kind}" in path for kind in self.served_kinds):
            self._answer(404, {"kind": "Status", "reason": "NotFound", "details": {}})
        else:
            name = path.rsplit("/", 1)[1]
            details = {"name": name, "group": "canarium.dev", "kind": "modeldeployments"}
            self._answer(404, {"kind": "Status", "reason": "NotFound", "details": details})

    def do_PATCH(self) -> None:
        length = int(self.headers["Content-Length"])
        self.requests.append(("PATCH", self.path + " " + self.rfile.read(length).decode()))
        self._lookup()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[type[StubApi], Path]]:
    handler = type("Api", (StubApi,), {"objects": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    config = kubeconfig(tmp_path / "config", f"http://127.0.0.1:{server.server_port}", "ml")
    yield handler, config
    server.shutdown()
    server.server_close()


MDEPS = "/apis/canarium.dev/v1alpha1/namespaces/{ns}/modeldeployments"
IRIS: dict[str, Any] = {
    "apiVersion": "canarium.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"model": {"uri": "file:///m.onnx", "version": "2.0.0"}},
    "status": {"phase": "Healthy", "ready": "1/1", "stable": {"modelVersion": "2.0.0"}},
}


def test_status_output_json_and_yaml_are_the_object_status(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[MDEPS.format(ns="ml") + "/iris"] = IRIS
    code, out, _ = run(["--kubeconfig", str(config), "status", "iris", "-o", "json"], capsys)
    assert (code, json.loads(out)) == (0, IRIS["status"])
    code, out, _ = run(["--kubeconfig", str(config), "status", "iris", "-o", "yaml"], capsys)
    assert (code, yaml.safe_load(out)) == (0, IRIS["status"])
    # The context's namespace (ml) was used: nothing else was asked for.
    assert {path for _, path in handler.requests} == {MDEPS.format(ns="ml") + "/iris"}


def test_the_namespace_option_and_the_other_context_choose_the_namespace(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    run(["-n", "x", "status", "iris", "--kubeconfig", str(config)], capsys)
    run(["--context", "other", "status", "iris", "--kubeconfig", str(config)], capsys)
    assert [path for _, path in handler.requests] == [
        MDEPS.format(ns="x") + "/iris",
        MDEPS.format(ns="o") + "/iris",
    ]


def test_the_context_option_chooses_the_cluster(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[MDEPS.format(ns="ml") + "/iris"] = IRIS
    assert run(["status", "iris", "-o", "json", "--kubeconfig", str(config)], capsys)[0] == 0
    code, _, err = run(["--context", "dead", "status", "iris", "--kubeconfig", str(config)], capsys)
    assert code == 1
    assert err.startswith("error: cannot reach the Kubernetes API server at http://127.0.0.1:")


@pytest.mark.parametrize("argv", [["status", "iris"], ["status", "iris", "-o", "json"],
                                  ["promote", "iris"]])  # fmt: skip
def test_a_missing_object_is_one_line_and_exit_1(
    argv: list[str], api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config = api
    code, out, err = run([*argv, "--kubeconfig", str(config)], capsys)
    assert (code, out, err) == (
        1,
        "",
        'error: modeldeployment "iris" not found in namespace "ml"\n',
    )


def test_a_cluster_without_the_crds_says_so(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.served_kinds = ()
    code, _, err = run(["list", "-A", "--kubeconfig", str(config)], capsys)
    assert code == 1
    assert err.startswith("error: the cluster does not serve modeldeployments")
    assert err.count("\n") == 1


def test_list_prints_a_table_or_a_list_document(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects["/apis/canarium.dev/v1alpha1/modeldeployments"] = {"items": [IRIS]}
    handler.objects["/apis/canarium.dev/v1alpha1/rolloutpolicies"] = {"items": []}
    handler.objects[MDEPS.format(ns="ml")] = {"items": []}
    handler.objects["/apis/canarium.dev/v1alpha1/namespaces/ml/rolloutpolicies"] = {"items": []}
    code, out, _ = run(["list", "-A", "--kubeconfig", str(config)], capsys)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert row.split()[:5] == ["ml", "iris", "Healthy", "1/1", "2.0.0"]
    code, out, _ = run(["list", "-A", "-o", "json", "--kubeconfig", str(config)], capsys)
    assert json.loads(out) == {"apiVersion": "v1", "kind": "List", "items": [IRIS]}
    code, out, err = run(["list", "--kubeconfig", str(config)], capsys)
    assert (code, out, err) == (0, "", "No resources found in ml namespace.\n")


def test_commands_patch_only_annotations(
    api: tuple[type[StubApi], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    handler, config = api
    handler.objects[MDEPS.format(ns="ml") + "/iris"] = IRIS
    code, out, _ = run(["pause", "iris", "--kubeconfig", str(config)], capsys)
    assert (code, out) == (0, "modeldeployment.canarium.dev/iris pause requested\n")
    method, request = handler.requests[-1]
    path, body = request.split(" ", 1)
    assert (method, path) == ("PATCH", MDEPS.format(ns="ml") + "/iris")
    assert json.loads(body) == {"metadata": {"annotations": {"canarium.dev/paused": "true"}}}


# --- completion (kubectl_complete-canarium) --------------------------------------------------


def lookup(kind: str, given: dict[str, str]) -> list[str]:
    """The cluster, as completion sees it: names by kind, namespaced ones per namespace."""
    if kind == "modeldeployments":
        return {"ml": ["iris", "digits"], "": ["other"]}[given.get("namespace", "")]
    return {"namespaces": ["ml", "kube-system"], "contexts": ["dev", "prod"]}[kind]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ([""], ["run", "crds", "list", "status", "recording", "policy", "model", "promote",
                "abort", "retry", "pause", "resume", "retrain"]),
        (["st"], ["status"]),
        (["-n", "ml", "p"], ["policy", "promote", "pause"]),
        (["status", ""], ["other"]),
        (["-n", "ml", "status", "i"], ["iris"]),
        (["status", "-n", "ml", ""], ["iris", "digits"]),
        (["--namespace=ml", "abort", ""], ["iris", "digits"]),
        (["status", "iris", ""], []),  # the name is there already
        (["list", ""], []),  # list takes no name
        (["status", "-n", ""], ["ml", "kube-system"]),
        (["--context", "p"], ["prod"]),
        (["status", "iris", "-o", ""], ["json", "yaml"]),
        (["list", "-A", "--"], ["--all-namespaces", "--context", "--help", "--kubeconfig",
                                "--namespace", "--output", "--selector"]),
    ],
)  # fmt: skip
def test_completion_offers_what_may_come_next(line: list[str], expected: list[str]) -> None:
    candidates, directive = completions(build_parser(), line[:-1], line[-1], lookup)
    assert (candidates, directive) == (expected, ":4")


def test_completion_of_a_kubeconfig_is_file_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert completions(build_parser(), ["list", "--kubeconfig"], "", lookup) == ([], ":0")
    # The command prints cobra's format: candidates, then the directive.
    assert cli.complete(["li"]) == 0
    assert capsys.readouterr().out == "list\n:4\n"


def test_completion_prints_no_error_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{closed_port()}")
    assert cli.complete(["--kubeconfig", str(config), "status", ""]) == 0
    assert cli.complete(["--kubeconfig", str(config), "--context", ""]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (":4\nmain\nother\ndead\n:4\n", "")
