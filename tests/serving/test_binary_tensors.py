"""Triton's binary tensor data extension against a real canarium-serve process: the real
Triton client (`tritonclient.http`, binary by default) gets the scikit-learn estimator's
predictions, and lying lengths or truncated tensors are 4xx JSON errors, never a 500."""

from __future__ import annotations

import struct
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .conftest import Models, Server

INFER = "/v2/models/iris/infer"


def triton_client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_client_gets_the_estimators_predictions(
    any_iris_server: Server, models: Models, binary: bool
) -> None:
    x = models.iris_x
    client = triton_client(any_iris_server)
    try:
        assert client.is_server_ready()
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        # no outputs named: the client asks for all of them, binary (binary_data_output)
        result = client.infer("iris", [tensor], request_id="t-1")
        assert result.get_response()["id"] == "t-1"
        np.testing.assert_array_equal(result.as_numpy("label"), models.iris_estimator.predict(x))
        proba = result.as_numpy("probabilities")
        assert proba is not None
        assert proba.dtype == np.float32
        np.testing.assert_allclose(proba, models.iris_estimator.predict_proba(x), atol=1e-5)
        # outputs named, each binary or JSON as asked
        outputs = [
            triton.InferRequestedOutput("label", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=not binary),
        ]
        result = client.infer("iris", [tensor], outputs=outputs, model_version="2")
        by_name = {o["name"]: o for o in result.get_response()["outputs"]}
        assert ("data" in by_name["label"]) is not binary
        assert ("data" in by_name["probabilities"]) is binary
        np.testing.assert_array_equal(result.as_numpy("label"), models.iris_estimator.predict(x))
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), models.iris_estimator.predict_proba(x), atol=1e-5
        )
    finally:
        client.close()


def test_triton_client_gets_a_400_for_a_wrong_datatype(iris_server: Server) -> None:
    client = triton_client(iris_server)
    try:
        tensor = triton.InferInput("input", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float64))
        with pytest.raises(InferenceServerException) as info:
            client.infer("iris", [tensor])
        assert "datatype is FP64 but the model expects FP32" in str(info.value)
        assert client.is_server_ready()
    finally:
        client.close()


def _binary_request(
    raw: bytes, *, size: int | None = None, datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, int]:
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "datatype": datatype,
                "shape": [2, 4] if shape is None else shape,
                "parameters": {"binary_data_size": len(raw) if size is None else size},
            }
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    header = orjson.dumps(doc)
    return header + raw, len(header)


def _post(c: httpx.Client, body: bytes, json_length: int | str) -> httpx.Response:
    return c.post(
        INFER, content=body, headers={"Inference-Header-Content-Length": str(json_length)}
    )


def test_raw_binary_request_and_response(iris_server: Server, models: Models) -> None:
    x = models.iris_x[:2]
    with iris_server.client() as c:
        body, n = _binary_request(x.tobytes())
        r = _post(c, body, n)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        json_length = int(r.headers["inference-header-content-length"])
        doc = orjson.loads(r.content[:json_length])
        assert doc["outputs"] == [
            {
                "name": "label",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            }
        ]
        labels = np.frombuffer(r.content[json_length:], dtype="<i8")
        np.testing.assert_array_equal(labels, models.iris_estimator.predict(x))
        # a plain JSON request may ask for binary outputs too
        plain = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": x.tolist()}],
            "parameters": {"binary_data_output": True},
        }
        r = c.post(INFER, content=orjson.dumps(plain))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert "inference-header-content-length" in r.headers
        # and without asking, the answer is plain JSON
        del plain["parameters"]
        r = c.post(INFER, content=orjson.dumps(plain))
        assert r.headers["content-type"] == "application/json"
        assert "inference-header-content-length" not in r.headers


ROWS = np.ones((2, 4), dtype=np.float32).tobytes()


def _bad_requests() -> list[tuple[str, bytes, int | str, str]]:
    body, n = _binary_request(ROWS)
    overrun, n_overrun = _binary_request(ROWS, size=33)
    truncated, n_truncated = _binary_request(ROWS[:-4], size=32)
    short, n_short = _binary_request(ROWS[:-4])
    fp64 = np.ones((2, 4), dtype=np.float64).tobytes()
    wrong_type, n_wrong_type = _binary_request(fp64, datatype="FP64")
    as_fp32, n_as_fp32 = _binary_request(fp64)
    text = struct.pack("<I", 1) + b"a"
    as_bytes, n_as_bytes = _binary_request(text, datatype="BYTES", shape=[1, 1])
    return [
        ("header larger than the body", body, len(body) + 10, "but the request body has only"),
        ("header not a number", body, "abc", "invalid Inference-Header-Content-Length"),
        ("header negative", body, -5, "must not be negative"),
        ("header cuts the JSON", body, n - 3, "is not valid JSON"),
        ("size overruns the body", overrun, n_overrun, "overruns the request body"),
        ("truncated tensor", truncated, n_truncated, "overruns the request body"),
        ("leftover bytes", body + b"\x00" * 8, n, "8 bytes of binary data"),
        ("size not shape x datatype", short, n_short, "needs 32"),
        ("FP64 bytes called FP32", as_fp32, n_as_fp32, "binary_data_size is 64 bytes"),
        ("wrong datatype", wrong_type, n_wrong_type, "datatype is FP64 but the model expects"),
        ("BYTES for FP32", as_bytes, n_as_bytes, "datatype is BYTES but the model expects"),
    ]


BAD = _bad_requests()


@pytest.mark.parametrize(("case", "body", "json_length", "message"), BAD, ids=[b[0] for b in BAD])
def test_lying_binary_requests_get_4xx_json(
    any_iris_server: Server,
    models: Models,
    case: str,
    body: bytes,
    json_length: int | str,
    message: str,
) -> None:
    with any_iris_server.client() as c:
        r = _post(c, body, json_length)
        assert r.status_code == 400, (case, r.text)
        assert r.headers["content-type"] == "application/json"
        assert message in r.json()["error"], r.text
        # the server keeps serving, binary requests too
        good, n = _binary_request(models.iris_x[:2].tobytes())
        r = _post(c, good, n)
        assert r.status_code == 200, r.text
