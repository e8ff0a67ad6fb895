"""Model loading from every URI scheme, checksum failures, and what Kubernetes gets to see."""

from __future__ import annotations

import base64
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from canarium_serving import metrics_contract as mc

from tests.azurite import Azurite, start_azurite
from tests.s3server import S3Server, start_s3_server

from .conftest import (
    LOOKUP_TABLE,
    Models,
    Server,
    grpc_call,
    infer_body,
    start_server,
    wait_until_ok,
)

pytestmark = pytest.mark.serving

NO_PROXY = {"no_proxy": "*", "NO_PROXY": "*", "http_proxy": "", "HTTP_PROXY": ""}


def predict_one(server: Server, models: Models, name: str = "iris") -> None:
    with server.client() as c:
        r = c.post(f"/v2/models/{name}/infer", content=orjson.dumps(infer_body(models.iris_x[:3])))
        assert r.status_code == 200, r.text
        label = next(o for o in r.json()["outputs"] if o["name"] == "label")
        assert label["data"] == models.iris_estimator.predict(models.iris_x[:3]).tolist()


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` by path."""

    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[dict[str, str]]] = []
    gate: ClassVar[threading.Event | None] = None  # when set: answers wait until it opens

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).requests.append({"path": self.path, **headers})
        if self.gate is not None:
            self.gate.wait(60)
        body = self.files.get(self.path)
        if body is None:
            self._send(404, b"no such file")
            return
        self._send(200, body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Handler", (_Files,), {"files": {}, "requests": [], "gate": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    if handler.gate is not None:
        handler.gate.set()
    httpd.shutdown()
    httpd.server_close()


def test_http_model_with_sha256(
    models: Models, file_server: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    url, handler = file_server
    handler.files["/models/iris/model.onnx"] = models.iris.model_path.read_bytes()
    server = start_server(
        [
            "--model-uri",
            f"{url}/models/iris/model.onnx",
            "--model-sha256",
            models.iris.sha256,
            "--model-name",
            "iris",
        ],
        tmp_path,
        env=NO_PROXY,
    )
    try:
        predict_one(server, models)
        assert list((tmp_path / "cache").glob("*model.onnx"))
    finally:
        assert server.stop() == 0


S3_SECRET = "versitygw-Secret/Value+0123456789"  # searched for in every output below


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(
        tmp_path_factory.mktemp("s3"), access_key="canarium-test", secret_key=S3_SECRET
    )
    yield server
    server.stop()


def test_s3_model_from_a_real_s3_server(models: Models, s3: S3Server, tmp_path: Path) -> None:
    s3.put("models-bucket", "iris/v1/model.onnx", models.iris.model_path.read_bytes())
    env = {
        **NO_PROXY,
        **s3.env(),
        "CANARIUM_MODEL_URI": "s3://models-bucket/iris/v1/model.onnx",
        "CANARIUM_MODEL_SHA256": models.iris.sha256,
        "CANARIUM_MODEL_NAME": "iris",
    }
    server = start_server([], tmp_path, env=env)
    try:
        predict_one(server, models)
        with server.client() as c:
            metrics = c.get("/metrics").text
    finally:
        assert server.stop() == 0, server.log()
    assert list((tmp_path / "cache").glob("*-model.onnx"))
    assert S3_SECRET not in server.log() + metrics


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret", "HTTP 403 Forbidden: SignatureDoesNotMatch"),
        ("wrong region", "AuthorizationHeaderMalformed"),
        ("no credentials", "HTTP 403 Forbidden: AccessDenied"),
        ("missing object", "HTTP 404 Not Found: NoSuchKey"),
        ("bad sha256", "sha256 mismatch for 's3://models-bucket/iris/v1/model.onnx'"),
    ],
)
def test_s3_failures_say_why_and_never_show_the_secret(
    models: Models, s3: S3Server, tmp_path: Path, case: str, message: str
) -> None:
    s3.put("models-bucket", "iris/v1/model.onnx", models.iris.model_path.read_bytes())
    uri = "s3://models-bucket/iris/v1/model.onnx"
    env = {**NO_PROXY, **s3.env(), "CANARIUM_MODEL_NAME": "iris"}
    if case == "wrong secret":
        # the server's secret with one character changed: a leak of either shows below
        env["AWS_SECRET_ACCESS_KEY"] = S3_SECRET[:-1] + "X"
    elif case == "wrong region":
        env["AWS_REGION"] = "us-east-1"
    elif case == "no credentials":
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    elif case == "missing object":
        uri = "s3://models-bucket/iris/v2/model.onnx"
    else:
        env["CANARIUM_MODEL_SHA256"] = "0" * 64
    termination = tmp_path / "termination-log"
    env |= {"CANARIUM_MODEL_URI": uri, "CANARIUM_TERMINATION_LOG": str(termination)}
    failed = start_server([], tmp_path, env=env, wait_ready=False)
    assert failed.proc.wait(60) == 1, failed.log()
    said = failed.log() + termination.read_text()
    assert message in failed.log()
    assert message in termination.read_text()
    assert S3_SECRET not in said
    assert env.get("AWS_SECRET_ACCESS_KEY", S3_SECRET) not in said
    assert not list((tmp_path / "cache").glob("*-model.onnx"))  # nothing half-fetched is kept


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


@pytest.mark.parametrize("scheme", ["az", "azure"])
def test_azure_blob_model_from_the_azure_storage_emulator(
    models: Models, azurite: Azurite, tmp_path: Path, scheme: str
) -> None:
    azurite.put("models", "iris/v1/model.onnx", models.iris.model_path.read_bytes())
    env = {
        **NO_PROXY,
        **azurite.env(),
        "CANARIUM_MODEL_URI": f"{scheme}://models/iris/v1/model.onnx",
        "CANARIUM_MODEL_SHA256": models.iris.sha256,
        "CANARIUM_MODEL_NAME": "iris",
    }
    server = start_server([], tmp_path, env=env)
    try:
        predict_one(server, models)
    finally:
        assert server.stop() == 0, server.log()


def test_azure_blob_wrong_key_says_why_and_never_shows_the_key(
    models: Models, azurite: Azurite, tmp_path: Path
) -> None:
    azurite.put("models", "iris/v1/model.onnx", models.iris.model_path.read_bytes())
    wrong = base64.b64encode(
        b"a wrong account key of 64 bytes, never to be seen in a log!!"
    ).decode()
    termination = tmp_path / "termination-log"
    env = {
        **NO_PROXY,
        **azurite.env(AZURE_STORAGE_ACCOUNT_KEY=wrong),
        "CANARIUM_MODEL_URI": "az://models/iris/v1/model.onnx",
        "CANARIUM_MODEL_NAME": "iris",
        "CANARIUM_TERMINATION_LOG": str(termination),
    }
    failed = start_server([], tmp_path, env=env, wait_ready=False)
    assert failed.proc.wait(60) == 1, failed.log()
    assert "HTTP 403 Forbidden: AuthorizationFailure" in termination.read_text()
    assert wrong not in failed.log() + termination.read_text()


@pytest.mark.parametrize("scheme", ["pvc", "configmap"])
def test_mounted_volume_schemes(models: Models, tmp_path: Path, scheme: str) -> None:
    root = tmp_path / "mnt"
    target = root / "models-claim" / "iris" / "model.onnx"
    target.parent.mkdir(parents=True)
    shutil.copy(models.iris.model_path, target)
    env = {
        "CANARIUM_PVC_ROOT": str(root),
        "CANARIUM_CONFIGMAP_ROOT": str(root),
        "CANARIUM_MODEL_URI": f"{scheme}://models-claim/iris/model.onnx",
        "CANARIUM_MODEL_NAME": "iris",
        "CANARIUM_MODEL_SHA256": models.iris.sha256,
    }
    server = start_server([], tmp_path / "logs", env=env)
    try:
        predict_one(server, models)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing file", "model file not found"),
        ("bad sha256", "sha256 mismatch"),
        ("not onnx", "onnxruntime cannot load"),
        ("http 404", "HTTP 404"),
        ("outside volume", "outside its volume"),
        ("unknown scheme", "unsupported model URI scheme"),
    ],
)
def test_load_failure_exits_nonzero_with_reason(
    models: Models,
    tmp_path: Path,
    file_server: tuple[str, type[_Files]],
    case: str,
    message: str,
) -> None:
    url, _ = file_server
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model")
    args = {
        "missing file": ["--model-uri", str(tmp_path / "nope.onnx")],
        "bad sha256": ["--model-uri", str(models.iris.model_path), "--model-sha256", "0" * 64],
        "not onnx": ["--model-uri", garbage.as_uri()],
        "http 404": ["--model-uri", f"{url}/missing/model.onnx"],
        "outside volume": ["--model-uri", "pvc://claim/../../etc/passwd"],
        "unknown scheme": ["--model-uri", "ftp://host/model.onnx"],
    }[case]
    termination = tmp_path / "termination-log"
    env = {**NO_PROXY, "CANARIUM_TERMINATION_LOG": str(termination)}
    server = start_server(args, tmp_path / "logs", env=env, wait_ready=False)
    assert server.proc.wait(30) == 1
    log = server.log()
    assert "model not loaded" in log
    assert message in log
    assert message in termination.read_text()


def test_load_failure_without_exit_keeps_serving_not_ready(tmp_path: Path) -> None:
    server = start_server(
        ["--model-uri", str(tmp_path / "nope.onnx"), "--no-exit-on-load-failure"],
        tmp_path,
        wait_ready=False,
    )
    try:
        with server.client() as c:
            # 503 "still loading" comes first: wait for the failure itself
            deadline = time.monotonic() + 30
            while "failed to load" not in c.get("/v2/models/nope").text:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            assert c.get("/v2/health/live").status_code == 200
            ready = c.get("/v2/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {"ready": False}
            assert c.get("/v2/models/nope/ready").json() == {"name": "nope", "ready": False}
            r = c.post("/v2/models/nope/infer", content=b"{}")
            assert r.status_code == 503
            assert "failed to load" in r.json()["error"]
            assert "model file not found" in r.json()["error"]
            metrics = c.get("/metrics").text
            assert f'{mc.MODEL_READY.name}{{deployment=""' in metrics
            assert "} 0.0" in metrics.split(f"{mc.MODEL_READY.name}{{", 1)[1].split("\n", 1)[0]
    finally:
        assert server.stop() == 0


def test_not_ready_while_the_model_loads(
    models: Models, file_server: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    url, handler = file_server
    handler.files["/models/iris.onnx"] = models.iris.model_path.read_bytes()
    handler.gate = threading.Event()  # the download hangs until the test opens the gate
    server = start_server(
        ["--model-uri", f"{url}/models/iris.onnx"], tmp_path, env=NO_PROXY, wait_ready=False
    )
    try:
        deadline = time.monotonic() + 30
        while not handler.requests:  # the server is fetching the model
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        with server.client() as c:
            assert c.get("/v2/health/live").status_code == 200
            ready = c.get("/v2/health/ready")
            assert (ready.status_code, ready.json()) == (503, {"ready": False})
            model_ready = c.get("/v2/models/iris/ready")
            assert model_ready.status_code == 503
            assert model_ready.json() == {"name": "iris", "ready": False}
            meta = c.get("/v2/models/iris")
            assert meta.status_code == 503
            assert meta.json() == {"error": "model 'iris' is still loading"}
            r = c.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(models.iris_x[:1])))
            assert (r.status_code, r.json()) == (503, {"error": "model 'iris' is still loading"})
            _assert_grpc_unavailable_while_loading(server, models)
            assert "\ncanarium_model_ready{" in c.get("/metrics").text
            assert "} 0.0" in c.get("/metrics").text.split("\ncanarium_model_ready{", 1)[1][:300]
        # the helper the other tests use waits for 200: it does not return while loading
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wait_until_ok, server, "/v2/health/ready")
            time.sleep(1.0)
            assert not waiting.done()
            handler.gate.set()
            waiting.result(timeout=30)
        predict_one(server, models)
    finally:
        handler.gate.set()
        assert server.stop() == 0, server.log()


def _assert_grpc_unavailable_while_loading(server: Server, models: Models) -> None:
    """gRPC says the same as REST: live, not ready, UNAVAILABLE for what needs the model."""
    import grpc
    from canarium_serving.proto import inference_pb2 as pb

    target = server.grpc_target
    assert grpc_call(target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    ready = grpc_call(target, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)
    assert ready.ready is False
    model_ready = grpc_call(
        target, "ModelReady", pb.ModelReadyRequest(name="iris"), pb.ModelReadyResponse
    )
    assert model_ready.ready is False
    infer = pb.ModelInferRequest(model_name="iris")
    tensor = infer.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(models.iris_x[0].tolist())
    for method, request, response_type in [
        ("ModelMetadata", pb.ModelMetadataRequest(name="iris"), pb.ModelMetadataResponse),
        ("ModelInfer", infer, pb.ModelInferResponse),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            grpc_call(target, method, request, response_type)
        error: Any = info.value
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "model 'iris' is still loading",
        ), method


def test_a_bad_request_inside_a_batch_fails_alone(lookup_model: Path, tmp_path: Path) -> None:
    # A lookup model: value = TABLE[index]; an index outside the table passes the protocol's
    # checks (an INT64 in an INT64 input) and only onnxruntime refuses it, inside the batch.
    server = start_server(
        [
            "--model-uri",
            str(lookup_model),
            "--model-name",
            "lookup",
            "--batch-max-size",
            "64",
            "--batch-max-wait-ms",
            "300",
            "--log-level",
            "debug",
        ],
        tmp_path,
    )
    bodies = [
        {"inputs": [{"name": "index", "shape": [2], "datatype": "INT64", "data": [i % 3, 2]}]}
        for i in range(12)
    ]
    bodies[5]["inputs"][0]["data"] = [1, 7]  # one row out of the table
    bodies[8] = {"inputs": [{"name": "index", "shape": [2], "datatype": "INT64", "data": [1]}]}
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            c.post("/v2/models/lookup/infer", content=orjson.dumps(bodies[0])).raise_for_status()

            def one(body: dict[str, Any]) -> httpx.Response:
                return c.post("/v2/models/lookup/infer", content=orjson.dumps(body))

            with ThreadPoolExecutor(len(bodies)) as pool:
                answers = list(pool.map(one, bodies))
        for i, r in enumerate(answers):
            if i == 5:
                assert r.status_code == 400, r.text
                assert r.json()["error"].startswith("the model rejected the input:")
                assert "out of data bounds" in r.json()["error"]
            elif i == 8:  # refused by the protocol before it could join the batch
                assert r.status_code == 400, r.text
                assert "needs 2 elements, got 1" in r.json()["error"]
            else:
                assert r.status_code == 200, r.text
                (out,) = r.json()["outputs"]
                assert out["data"] == [LOOKUP_TABLE[i % 3], LOOKUP_TABLE[2]]
        # the evidence that the bad request shared a batch with the good ones
        batch = re.search(r"batch of (\d+) failed; running its requests one by one", server.log())
        assert batch is not None, server.log()
        assert int(batch.group(1)) >= 2
    finally:
        assert server.stop() == 0, server.log()


def test_missing_uri_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "canarium_serving.cli"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 2
    assert "CANARIUM_MODEL_URI" in r.stderr


def test_help_documents_every_flag_and_env_var() -> None:
    from canarium_serving import contract
    from canarium_serving.cli import _FLAGS

    r = subprocess.run(
        [sys.executable, "-m", "canarium_serving.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    help_text = " ".join(r.stdout.split())
    for flag, env, *_ in _FLAGS:
        assert flag in help_text
        assert f"[env {env}]" in help_text
    for name in dir(contract):
        if name.startswith("ENV_"):
            assert getattr(contract, name) in help_text, name


def test_dynamic_batching_serves_correct_rows(models: Models, tmp_path: Path) -> None:
    server = start_server(
        [
            "--model-uri",
            str(models.iris.model_path),
            "--model-name",
            "iris",
            "--batch-max-size",
            "32",
            "--batch-max-wait-ms",
            "5",
        ],
        tmp_path,
    )
    x = models.iris_x
    expected = models.iris_estimator.predict(x)
    try:

        def one(i: int) -> int:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                body = infer_body(x[i : i + 1], outputs=[{"name": "label"}])
                r = c.post("/v2/models/iris/infer", content=orjson.dumps(body))
                assert r.status_code == 200, r.text
                return int(r.json()["outputs"][0]["data"][0])

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(one, range(150)))
        assert got == expected.tolist()
        with server.client() as c:
            # a bad request inside a batch fails alone
            r = c.post("/v2/models/iris/infer", content=b'{"inputs": 1}')
            assert r.status_code == 400
            text = c.get("/metrics").text
        count = sum_ = 0.0
        for line in text.splitlines():
            if line.startswith(f"{mc.INFERENCE_BATCH_SIZE.name}_count"):
                count = float(line.rsplit(" ", 1)[1])
            if line.startswith(f"{mc.INFERENCE_BATCH_SIZE.name}_sum"):
                sum_ = float(line.rsplit(" ", 1)[1])
        assert sum_ == 150
        assert count < 150  # some executions served several requests
    finally:
        server.stop()


def test_binds_to_the_configured_loopback_address(models: Models, tmp_path: Path) -> None:
    # The e2e tests run one server per simulated pod, each on its own 127.x address.
    server = start_server(
        ["--model-uri", str(models.iris.model_path), "--model-name", "iris"],
        tmp_path,
        host="127.64.0.5",
    )
    try:
        assert server.url.startswith("http://127.64.0.5:")
        predict_one(server, models)
        assert "process_cpu_seconds_total" in httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
