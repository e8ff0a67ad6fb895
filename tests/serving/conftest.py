"""Fixtures for the model server tests: real models (scikit-learn + skl2onnx), real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from canarium_serving.packaging import BuiltModel, build_model


@dataclass
class Models:
    iris: BuiltModel
    iris_estimator: Any
    iris_x: np.ndarray[Any, Any]
    regressor: BuiltModel
    regressor_estimator: Any
    regressor_x: np.ndarray[Any, Any]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    from sklearn.datasets import load_iris, make_regression
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("models")
    iris = load_iris()
    x = iris.data.astype(np.float32)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, iris.target)
    names = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    built_iris = build_model(clf, x, root / "iris", name="iris", feature_names=names)

    xr, yr = make_regression(n_samples=400, n_features=6, noise=5.0, random_state=0)
    xr = xr.astype(np.float32)
    reg = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(xr, yr)
    built_reg = build_model(reg, xr, root / "reg", name="reg")
    return Models(built_iris, clf, x, built_reg, reg, xr)


LOOKUP_TABLE = [0.5, 1.5, 2.5]


@pytest.fixture(scope="session")
def lookup_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """value = LOOKUP_TABLE[index] (ONNX Gather): onnxruntime refuses an index outside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(
        np.asarray(LOOKUP_TABLE, dtype=np.float32).reshape(-1, 1), "table"
    )
    flat = numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "index"], ["rows"], axis=0),
            helper.make_node("Reshape", ["rows", "flat"], ["value"]),
        ],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N"])],
        [table, flat],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("lookup") / "lookup.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# The Python that runs the V2 clients (tests/serving/v2_clients.py) in processes of their own:
# the test's, or the dev venv's when hack/min-versions.sh runs the tests at the dependency
# floors, where kserve cannot be installed.
CLIENT_PYTHON = os.environ.get("CANARIUM_DEV_PYTHON", sys.executable)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    args: list[str] = field(default_factory=list)
    grpc_target: str = ""  # host:port of its V2 gRPC service

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(
    args: list[str],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    host: str = "127.0.0.1",
) -> Server:
    """Start `canarium-serve` as a process on a free port, with gRPC on another; wait for it to
    be live (and ready)."""
    port = free_port(host)
    grpc_port = free_port(host)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIUM_")}
    full_env.update(env or {})
    full_env.setdefault("CANARIUM_TERMINATION_LOG", str(log_dir / f"termination-{port}.log"))
    full_env.setdefault("CANARIUM_MODEL_CACHE_DIR", str(log_dir / "cache"))
    cmd = [
        *(sys.executable, "-m", "canarium_serving.cli"),
        *("--host", host, "--port", str(port), "--grpc-port", str(grpc_port), *args),
    ]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = Server(proc, f"http://{host}:{port}", log_path, cmd, f"{host}:{grpc_port}")
    try:
        wait_until_ok(server, "/v2/health/ready" if wait_ready else "/v2/health/live")
    except ServerExited:
        if wait_ready:
            raise
    except BaseException:
        server.stop()
        raise
    return server


def grpc_call(target: str, method: str, request: Any, response_type: Any) -> Any:
    """One unary call of inference.GRPCInferenceService over a plain grpcio channel."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return call(request, timeout=10)


class ServerExited(AssertionError):
    pass


def wait_until_ok(server: Server, path: str, seconds: float = 30) -> None:
    """Poll `path` until it answers 200 (a 503 while the model loads keeps it waiting)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerExited(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} not 200 in {seconds:g} s:\n{server.log()}")


SERVING_ENV = {
    "CANARIUM_DEPLOYMENT": "iris",
    "CANARIUM_NAMESPACE": "ml",
    "CANARIUM_REVISION": "iris-5d8f7c",
    "CANARIUM_ROLE": "canary",
    "CANARIUM_MODEL_VERSION": "2",
}


def iris_env(models: Models) -> dict[str, str]:
    return {
        **SERVING_ENV,
        "CANARIUM_MODEL_URI": models.iris.model_path.as_uri(),
        "CANARIUM_MODEL_SHA256": models.iris.sha256,
        "CANARIUM_MODEL_NAME": "iris",
        "CANARIUM_MAX_BODY_BYTES": "65536",
        "CANARIUM_BODY_READ_TIMEOUT_S": "1",
    }


@pytest.fixture(scope="session")
def iris_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Dynamic batching on (the default: up to 32 rows, no added wait)."""
    server = start_server([], tmp_path_factory.mktemp("iris-server"), env=iris_env(models))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def iris_unbatched_server(
    models: Models, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The same model and settings with dynamic batching off: every request runs alone."""
    env = {**iris_env(models), "CANARIUM_BATCH_MAX_SIZE": "1"}
    server = start_server([], tmp_path_factory.mktemp("iris-unbatched"), env=env)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(params=["batched", "unbatched"])
def any_iris_server(request: pytest.FixtureRequest) -> Server:
    """The iris server with dynamic batching on, then off: both must answer alike."""
    name = "iris_server" if request.param == "batched" else "iris_unbatched_server"
    server: Server = request.getfixturevalue(name)
    return server


@pytest.fixture(scope="session")
def reg_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        ["--model-uri", str(models.regressor.model_path), "--model-name", "reg"],
        tmp_path_factory.mktemp("reg-server"),
    )
    yield server
    server.stop()


def infer_body(x: np.ndarray[Any, Any], name: str = "input", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ],
        **extra,
    }
