"""V2 gRPC (inference.GRPCInferenceService) against a real canarium-serve process.

The clients people use, unchanged (tritonclient.grpc, KServe's InferenceGRPCClient and
InferenceRESTClient; each in a process of its own, see v2_clients.py) get the scikit-learn
estimator's predictions; plain grpcio calls check every method, both tensor forms, the error
codes, that lying or malformed requests are INVALID_ARGUMENT and the server keeps serving, and
that gRPC traffic lands in the same metrics as REST (one DataPlane under both transports).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from canarium_serving.proto import inference_pb2 as pb

from . import v2_clients
from .conftest import CLIENT_PYTHON, Models, Server, grpc_call, iris_env, start_server

REPO = Path(__file__).resolve().parents[2]


def _run_client(client: str, target: str, x: np.ndarray[Any, Any], *flags: str) -> dict[str, Any]:
    return v2_clients.run(client, target, "iris", x, *flags, python=CLIENT_PYTHON)


def _assert_estimators(out: dict[str, Any], models: Models, x: np.ndarray[Any, Any]) -> None:
    assert "error" not in out, out
    assert out["outputs"]["label"] == models.iris_estimator.predict(x).tolist()
    np.testing.assert_allclose(
        np.asarray(out["outputs"]["probabilities"]),
        models.iris_estimator.predict_proba(x),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("client", "flags"),
    [
        ("triton-grpc", ()),
        ("kserve-grpc", ()),
        ("kserve-grpc", ("--contents",)),
        ("kserve-rest", ()),
        ("kserve-rest", ("--contents",)),
    ],
    ids=[
        "triton-grpc",
        "kserve-grpc-raw",
        "kserve-grpc-contents",
        "kserve-rest-binary",
        "kserve-rest-json",
    ],
)
def test_real_clients_get_the_estimators_predictions(
    iris_server: Server, models: Models, client: str, flags: tuple[str, ...]
) -> None:
    x = models.iris_x[::7]
    target = (
        iris_server.url.removeprefix("http://")
        if client == "kserve-rest"
        else iris_server.grpc_target
    )
    out = _run_client(client, target, x, *flags)
    assert (out["live"], out["ready"], out["model_ready"]) == (True, True, True)
    _assert_estimators(out, models, x)
    assert out["id"] in ("triton-1", "kserve-1", "kserve-2")
    if client == "triton-grpc":
        assert out["raw"] is True  # raw inputs are answered with raw outputs
        assert out["server"]["extensions"] == ["binary_tensor_data"]
        meta = out["model"]
        assert (meta["name"], meta["versions"], meta["platform"]) == (
            "iris",
            ["2"],
            "onnxruntime_onnx",
        )
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("client", ["triton-grpc", "kserve-grpc"])
def test_real_clients_read_a_client_mistake_as_invalid_argument(
    iris_server: Server, models: Models, client: str
) -> None:
    x = models.iris_x[:2, :3]  # three features where the model takes four
    out = _run_client(client, iris_server.grpc_target, x)
    assert "INVALID_ARGUMENT" in out["error"]["code"]
    assert "shape [2, 3] does not match the model's [-1, 4]" in out["error"]["message"]


def _infer_request(x: np.ndarray[Any, Any], *, raw: bool, **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris", **fields)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    if raw:
        request.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    return request


def _outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray[Any, Any]]:
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i, tensor in enumerate(response.outputs):
        dtype = {"INT64": "<i8", "FP32": "<f4"}[tensor.datatype]
        if response.raw_output_contents:
            arr = np.frombuffer(response.raw_output_contents[i], dtype=dtype)
        else:
            field = {"INT64": "int64_contents", "FP32": "fp32_contents"}[tensor.datatype]
            arr = np.asarray(getattr(tensor.contents, field), dtype=dtype)
        out[tensor.name] = arr.reshape(tuple(tensor.shape))
    return out


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "contents"])
def test_every_method_over_grpcio(any_iris_server: Server, models: Models, raw: bool) -> None:
    target = any_iris_server.grpc_target
    assert grpc_call(target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert grpc_call(target, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    ready = grpc_call(
        target, "ModelReady", pb.ModelReadyRequest(name="iris", version="2"), pb.ModelReadyResponse
    )
    assert ready.ready
    meta = grpc_call(
        target, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse
    )
    assert (meta.name, list(meta.extensions)) == ("canarium-serving", ["binary_tensor_data"])
    model = grpc_call(
        target, "ModelMetadata", pb.ModelMetadataRequest(name="iris"), pb.ModelMetadataResponse
    )
    assert (model.name, list(model.versions), model.platform) == ("iris", ["2"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("input", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]

    x = models.iris_x[::5]
    request = _infer_request(x, raw=raw, id="g-1", model_version="2")
    response = grpc_call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert (response.model_name, response.model_version, response.id) == ("iris", "2", "g-1")
    assert bool(response.raw_output_contents) is raw  # answered in the form asked
    outputs = _outputs(response)
    np.testing.assert_array_equal(outputs["label"], models.iris_estimator.predict(x))
    np.testing.assert_allclose(
        outputs["probabilities"], models.iris_estimator.predict_proba(x), atol=1e-5
    )

    # a gzip-compressed request (grpc-encoding), as clients may send
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        zipped = call(request, timeout=10, compression=grpc.Compression.Gzip)
    np.testing.assert_array_equal(_outputs(zipped)["label"], models.iris_estimator.predict(x))

    # only the output asked for
    request.outputs.add(name="probabilities")
    response = grpc_call(target, "ModelInfer", request, pb.ModelInferResponse)
    assert [t.name for t in response.outputs] == ["probabilities"]


def _code(
    target: str, method: str, request: Any, response_type: Any
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        grpc_call(target, method, request, response_type)
    error: Any = info.value
    return error.code(), error.details()


def test_unknown_models_and_versions_are_not_found(iris_server: Server) -> None:
    target = iris_server.grpc_target
    x = np.zeros((1, 4), dtype=np.float32)
    cases = [
        ("ModelReady", pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse),
        (
            "ModelMetadata",
            pb.ModelMetadataRequest(name="iris", version="9"),
            pb.ModelMetadataResponse,
        ),
        ("ModelInfer", _infer_request(x, raw=True, model_version="9"), pb.ModelInferResponse),
    ]
    for method, request, response_type in cases:
        code, message = _code(target, method, request, response_type)
        assert code == grpc.StatusCode.NOT_FOUND, (method, message)
    req = _infer_request(x, raw=True)
    req.model_name = "nope"
    assert _code(target, "ModelInfer", req, pb.ModelInferResponse) == (
        grpc.StatusCode.NOT_FOUND,
        "model 'nope' not found; this server serves 'iris'",
    )


def _malformed() -> list[tuple[str, bytes, str]]:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    cases: list[tuple[str, bytes, str]] = []

    def add(name: str, request: pb.ModelInferRequest, message: str) -> None:
        cases.append((name, request.SerializeToString(), message))

    cases.append(("not a message", b"\xff\xff\xff\xff", "not a valid ModelInferRequest"))
    short = _infer_request(x, raw=True)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    add(
        "truncated raw tensor",
        short,
        "raw_input_contents[0] is 28 bytes but shape [2, 4] of FP32 needs 32",
    )
    lying = _infer_request(x, raw=True)
    lying.inputs[0].shape[:] = [4, 4]
    add(
        "shape that lies",
        lying,
        "raw_input_contents[0] is 32 bytes but shape [4, 4] of FP32 needs 64",
    )
    fp64 = _infer_request(x.astype(np.float64), raw=True)
    fp64.inputs[0].datatype = "FP64"
    add("wrong datatype", fp64, "datatype is FP64 but the model expects FP32")
    unknown = _infer_request(x, raw=True)
    unknown.inputs[0].datatype = "FP8"
    add("unknown datatype", unknown, "unknown datatype 'FP8'")
    wrong_field = pb.ModelInferRequest(model_name="iris")
    t = wrong_field.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    t.contents.int_contents.extend(range(8))
    add(
        "elements in the wrong field",
        wrong_field,
        "FP32 elements go in contents.fp32_contents, got contents.int_contents",
    )
    few = _infer_request(x, raw=False)
    del few.inputs[0].contents.fp32_contents[-1]
    add("too few elements", few, "shape [2, 4] needs 8 elements, contents.fp32_contents holds 7")
    both = _infer_request(x, raw=True)
    both.inputs[0].contents.fp32_contents.extend(x.reshape(-1).tolist())
    add(
        "contents and raw",
        both,
        "'contents' must be empty when the request carries raw_input_contents",
    )
    extra_raw = _infer_request(x, raw=True)
    extra_raw.raw_input_contents.append(b"\0" * 4)
    add(
        "raw entries that do not match the inputs",
        extra_raw,
        "raw_input_contents holds 2 entries for 1 inputs",
    )
    negative = _infer_request(x, raw=False)
    negative.inputs[0].shape[:] = [-2, 4]
    add("negative dimension", negative, "must contain non-negative integers only")
    add(
        "no inputs",
        pb.ModelInferRequest(model_name="iris"),
        "'inputs' must hold at least one tensor",
    )
    stranger = _infer_request(x, raw=True)
    stranger.inputs[0].name = "pixels"
    add("unknown input", stranger, "input 'pixels' is not an input of this model")
    unknown_output = _infer_request(x, raw=True)
    unknown_output.outputs.add(name="logits")
    add(
        "unknown output",
        unknown_output,
        "requested output(s) ['logits'] are not outputs of this model",
    )
    return cases


def _requests_total(server: Server, code: int) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    m = re.search(rf'^canarium_requests_total\{{code="{code}",[^}}]*\}} (\S+)$', text, re.M)
    assert m is not None, text[:2000]
    return float(m.group(1))


def test_malformed_requests_are_invalid_argument_and_the_server_keeps_serving(
    iris_server: Server, models: Models
) -> None:
    target = iris_server.grpc_target
    before = _requests_total(iris_server, 400)
    cases = _malformed()
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for name, body, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                infer(body, timeout=10)
            error: Any = info.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
            assert message in error.details(), (name, error.details())
    # each was counted as a client error (400), as REST counts its own
    assert _requests_total(iris_server, 400) - before == len(cases)
    assert iris_server.proc.poll() is None
    x = models.iris_x[:3]
    response = grpc_call(target, "ModelInfer", _infer_request(x, raw=True), pb.ModelInferResponse)
    np.testing.assert_array_equal(_outputs(response)["label"], models.iris_estimator.predict(x))


def test_grpc_traffic_lands_in_the_same_metrics_as_rest(
    iris_server: Server, models: Models
) -> None:
    """One DataPlane: request counts, latency and the prediction statistics the drift
    analysis reads move with gRPC traffic exactly as with REST."""

    def class_counts() -> dict[str, float]:
        text = httpx.get(iris_server.url + "/metrics", timeout=5).text
        return {
            m.group(1): float(m.group(2))
            for m in re.finditer(
                r'^canarium_prediction_class_total\{class="(\w+)",[^}]*\} (\S+)$', text, re.M
            )
        }

    ok_before, classes_before = _requests_total(iris_server, 200), class_counts()
    x = models.iris_x
    for rows in (x[:50], x[50:100], x[100:]):
        grpc_call(
            iris_server.grpc_target,
            "ModelInfer",
            _infer_request(rows, raw=True),
            pb.ModelInferResponse,
        )
    assert _requests_total(iris_server, 200) - ok_before == 3
    after = class_counts()
    predicted = np.bincount(models.iris_estimator.predict(x), minlength=3)
    assert {c: after[c] - classes_before.get(c, 0.0) for c in after} == {
        str(i): float(n) for i, n in enumerate(predicted)
    }


def test_a_grpc_port_in_use_is_a_clear_exit(models: Models, tmp_path: Path) -> None:
    """Not a server that answers REST while its gRPC clients get connection refused."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(
            ["--grpc-port", str(port)], tmp_path, env=iris_env(models), wait_ready=False
        )
        try:
            assert server.proc.wait(30) == 1, server.log()
        finally:
            server.stop()
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in server.log()
