"""The binary tensor data extension (Triton's) in the pure V2 parser and response builder:
binary inputs, binary outputs, and every malformed body a ProtocolError (a 400) that says why."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from canarium_serving.protocol import (
    InferenceRequest,
    ProtocolError,
    TensorSpec,
    build_binary_response,
    build_response,
    parse_binary_request,
    parse_request,
)

MIXED = (
    TensorSpec("x", "FP64", (-1, 2)),
    TensorSpec("ids", "INT64", (-1,)),
    TensorSpec("flags", "BOOL", (-1, 1)),
    TensorSpec("text", "BYTES", (-1,)),
)
IRIS = (TensorSpec("input", "FP32", (-1, 4)),)
ROWS = np.asarray([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]], dtype=np.float32)


def bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def binary_body(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, int]:
    header = orjson.dumps(doc)
    return header + b"".join(chunks), len(header)


def binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


def iris_body(raw: bytes | None = None, size: int | None = None, **extra: Any) -> tuple[bytes, int]:
    raw = ROWS.tobytes() if raw is None else raw
    item = binary_input("input", "FP32", [2, 4], len(raw) if size is None else size)
    return binary_body({"inputs": [item], **extra}, raw)


def test_binary_fp32_input_equals_its_json_twin() -> None:
    body, n = iris_body(id="r1")
    request = parse_binary_request(body, n, IRIS)
    arr = request.inputs["input"]
    assert arr.dtype == np.float32
    assert arr.flags.writeable
    np.testing.assert_array_equal(arr, ROWS)
    assert request.id == "r1"
    json_request = parse_request(
        orjson.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": ROWS}]},
            option=orjson.OPT_SERIALIZE_NUMPY,
        ),
        IRIS,
    )
    np.testing.assert_array_equal(json_request.inputs["input"], arr)


def test_mixed_json_and_binary_inputs_take_the_bytes_in_input_order() -> None:
    x = np.asarray([[1.5, -2.0], [3.25, 1e300]], dtype=np.float64)
    ids = np.asarray([7, -(2**62)], dtype=np.int64)
    text = bytes_tensor([b"caf\xc3\xa9", b""])
    doc = {
        "inputs": [
            binary_input("ids", "INT64", [2], 16),
            {"name": "flags", "datatype": "BOOL", "shape": [2, 1], "data": [True, False]},
            binary_input("text", "BYTES", [2], len(text)),
            binary_input("x", "FP64", [2, 2], 32),
        ]
    }
    body, n = binary_body(doc, ids.astype("<i8").tobytes(), text, x.astype("<f8").tobytes())
    request = parse_binary_request(body, n, MIXED)
    np.testing.assert_array_equal(request.inputs["ids"], ids)
    np.testing.assert_array_equal(request.inputs["x"], x)
    assert request.inputs["flags"].tolist() == [[True], [False]]
    assert request.inputs["text"].tolist() == ["café", ""]
    assert request.inputs["text"].dtype == np.object_


def test_binary_bool_input() -> None:
    spec = (TensorSpec("flags", "BOOL", (-1, 1)),)
    body, n = binary_body({"inputs": [binary_input("flags", "BOOL", [3, 1], 3)]}, b"\x01\x00\x01")
    assert parse_binary_request(body, n, spec).inputs["flags"].tolist() == [[True], [False], [True]]


def test_a_json_only_body_with_the_header_is_served() -> None:
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    body = orjson.dumps(doc)
    request = parse_binary_request(body, len(body), IRIS)
    assert request.inputs["input"].tolist() == [[1, 2, 3, 4]]


def _error(body: bytes, n: int, spec: tuple[TensorSpec, ...] = IRIS) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_binary_request(body, n, spec)
    assert info.value.status == 400
    return info.value.message


def test_header_length_larger_than_the_body() -> None:
    body, _ = iris_body()
    assert _error(body, len(body) + 1) == (
        f"Inference-Header-Content-Length is {len(body) + 1} but the request body has only "
        f"{len(body)} bytes"
    )


def test_negative_header_length() -> None:
    body, _ = iris_body()
    assert "must not be negative" in _error(body, -1)


def test_header_length_cutting_the_json() -> None:
    body, n = iris_body()
    assert _error(body, n - 1).startswith(
        f"the first {n - 1} bytes of the request body (Inference-Header-Content-Length) "
        "is not valid JSON"
    )
    assert "must be a JSON object, got array" in _error(b"[1]", 3)


def test_binary_data_size_overrunning_the_body() -> None:
    body, n = iris_body(size=33)
    assert _error(body, n) == (
        "input 'input': binary_data_size 33 overruns the request body "
        "(32 bytes of binary data left)"
    )


def test_truncated_tensor() -> None:
    body, n = iris_body(ROWS.tobytes()[:-4], size=32)
    assert "binary_data_size 32 overruns the request body (28 bytes" in _error(body, n)


def test_leftover_bytes() -> None:
    body, n = iris_body()
    assert _error(body + b"xyz", n) == (
        "3 bytes of binary data after the binary inputs' binary_data_size are left over"
    )


def test_size_not_matching_shape_and_datatype() -> None:
    body, n = iris_body(ROWS.tobytes()[:28])
    assert _error(body, n) == (
        "input 'input': binary_data_size is 28 bytes but shape [2, 4] of FP32 needs 32"
    )
    # FP64 bytes sent as FP32 of the same shape: twice too many
    body, n = iris_body(ROWS.astype(np.float64).tobytes())
    assert "binary_data_size is 64 bytes but shape [2, 4] of FP32 needs 32" in _error(body, n)


def test_wrong_datatype_is_refused_before_the_bytes() -> None:
    raw = ROWS.astype(np.float64).tobytes()
    body, n = binary_body({"inputs": [binary_input("input", "FP64", [2, 4], len(raw))]}, raw)
    assert _error(body, n) == "input 'input': datatype is FP64 but the model expects FP32"


@pytest.mark.parametrize("size", [-1, 1.5, "32", True, None])
def test_bad_binary_data_size(size: object) -> None:
    item = binary_input("input", "FP32", [2, 4], 0)
    item["parameters"]["binary_data_size"] = size
    body, n = binary_body({"inputs": [item]}, ROWS.tobytes())
    if size is None:  # no binary_data_size: the input needs `data`
        assert "'data' is missing" in _error(body, n)
    else:
        assert _error(body, n) == (
            "input 'input': parameters 'binary_data_size' must be a non-negative integer"
        )


def test_input_parameters_must_be_an_object() -> None:
    item = {**binary_input("input", "FP32", [2, 4], 32), "parameters": [32]}
    body, n = binary_body({"inputs": [item]}, ROWS.tobytes())
    assert _error(body, n) == "input 'input': 'parameters' must be an object"


def test_data_and_binary_data_size_together() -> None:
    item = {**binary_input("input", "FP32", [2, 4], 32), "data": ROWS.ravel().tolist()}
    body, n = binary_body({"inputs": [item]}, ROWS.tobytes())
    assert _error(body, n) == (
        "input 'input': both 'data' and parameters 'binary_data_size' are given"
    )


def test_binary_data_size_without_the_header() -> None:
    body, _ = iris_body()
    with pytest.raises(ProtocolError) as info:
        parse_request(body[: body.index(b"}]}") + 3], IRIS)
    assert info.value.message == (
        "input 'input': parameters 'binary_data_size' needs the Inference-Header-Content-Length "
        "header (binary tensor data extension)"
    )


def test_bool_bytes_other_than_0_and_1() -> None:
    spec = (TensorSpec("flags", "BOOL", (-1, 1)),)
    body, n = binary_body({"inputs": [binary_input("flags", "BOOL", [2, 1], 2)]}, b"\x01\x02")
    assert _error(body, n, spec) == "input 'flags': BOOL binary data must be bytes 0 or 1"


TEXT = (TensorSpec("text", "BYTES", (-1,)),)


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x03\x00", 1, "BYTES binary data ends inside the length of element 0"),
        (
            bytes_tensor([b"ab"]) + b"\x01",
            2,
            "BYTES binary data ends inside the length of element 1",
        ),
        (
            struct.pack("<I", 5) + b"abc",
            1,
            "BYTES element 0 of 5 bytes overruns binary_data_size (3 bytes left)",
        ),
        (bytes_tensor([b"a", b"b"]), 3, "BYTES binary data holds 2 elements, the shape needs 3"),
        (
            bytes_tensor([b"a", b"b", b"c"]),
            2,
            "BYTES binary data holds more than 2 elements, the shape needs 2",
        ),
        (bytes_tensor([b"ok", b"\xff\xfe"]), 2, "BYTES element 1 is not UTF-8"),
        (b"", 1, "BYTES binary data holds 0 elements, the shape needs 1"),
    ],
)
def test_malformed_bytes_tensors(raw: bytes, count: int, message: str) -> None:
    body, n = binary_body({"inputs": [binary_input("text", "BYTES", [count], len(raw))]}, raw)
    assert _error(body, n, TEXT) == f"input 'text': {message}"


# --- outputs ----------------------------------------------------------------------------


def _request(doc: dict[str, Any]) -> InferenceRequest:
    body = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}], **doc}
    )
    return parse_request(body, IRIS)


def test_which_outputs_are_binary() -> None:
    names = ["label", "probabilities"]
    assert _request({}).binary_output_names(names) == frozenset()
    assert _request({"parameters": {"binary_data_output": True}}).binary_output_names(
        names
    ) == frozenset(names)
    per_output = {"outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    assert _request(per_output).binary_output_names(names) == {"label"}
    # an output's own binary_data wins over the request's binary_data_output
    both = {
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "label", "parameters": {"binary_data": False}},
            {"name": "probabilities"},
        ],
    }
    assert _request(both).binary_output_names(names) == {"probabilities"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"parameters": {"binary_data_output": 1}}, "'binary_data_output' must be true or false"),
        (
            {"outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]},
            "outputs[0]: parameters 'binary_data' must be true or false",
        ),
        (
            {"outputs": [{"name": "label", "parameters": 3}]},
            "outputs[0]: 'parameters' must be an object",
        ),
    ],
)
def test_bad_output_parameters(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        _request(doc)
    assert message in info.value.message


def _split(body: bytes, n: int) -> tuple[dict[str, Any], bytes]:
    doc = orjson.loads(body[:n])
    assert isinstance(doc, dict)
    return doc, body[n:]


def test_binary_response_layout() -> None:
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "label": np.asarray([2, 0, 1], dtype=np.int64),
        "probabilities": np.asarray([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32),
        "flag": np.asarray([True, False, True]),
        "text": np.asarray(["é", "", "abc"], dtype=np.object_),
    }
    body, n = build_binary_response("iris", "2", outputs, "r9", {"label", "flag", "text"})
    doc, rest = _split(body, n)
    assert doc["model_name"] == "iris"
    assert doc["model_version"] == "2"
    assert doc["id"] == "r9"
    out = {o["name"]: o for o in doc["outputs"]}
    assert out["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [3],
        "parameters": {"binary_data_size": 24},
    }
    assert out["probabilities"]["data"] == [0.25, 0.75, 1.0, 0.0, 0.5, 0.5]
    assert "parameters" not in out["probabilities"]
    text = bytes_tensor(["é".encode(), b"", b"abc"])
    assert out["flag"]["parameters"] == {"binary_data_size": 3}
    assert out["flag"]["datatype"] == "BOOL"
    assert out["text"]["parameters"] == {"binary_data_size": len(text)}
    assert out["text"]["datatype"] == "BYTES"
    # the bytes in output order
    assert rest == outputs["label"].astype("<i8").tobytes() + b"\x01\x00\x01" + text


def test_binary_response_with_no_binary_output_is_the_json_response() -> None:
    outputs = {"label": np.asarray([2, 0], dtype=np.int64)}
    body, n = build_binary_response("iris", "2", outputs, None, set())
    assert n == len(body)
    assert body == build_response("iris", "2", outputs)


def test_binary_output_of_a_non_contiguous_array_is_row_major() -> None:
    arr = np.arange(6, dtype=np.float64).reshape(2, 3).T  # Fortran-ordered view
    body, n = build_binary_response("m", "1", {"y": arr}, None, {"y"})
    doc, rest = _split(body, n)
    assert doc["outputs"][0]["shape"] == [3, 2]
    np.testing.assert_array_equal(np.frombuffer(rest, dtype="<f8").reshape(3, 2), arr)
