"""The gRPC conversions (canarium_serving.grpc_protocol) and the status codes, without a
server: typed contents and raw bytes in, the same checks as REST, the response in the form
the request used; and the committed generated code matches inference.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from canarium_serving.grpc_app import status_code
from canarium_serving.grpc_protocol import (
    CONTENTS_FIELD,
    build_infer_response,
    decode,
    model_metadata_response,
    server_metadata_response,
    to_inference_request,
)
from canarium_serving.proto import inference_pb2 as pb
from canarium_serving.protocol import (
    DATATYPE_TO_NUMPY,
    InferenceResponse,
    ProtocolError,
    TensorSpec,
)
from google.protobuf import descriptor_pb2

PROTO_DIR = Path(pb.__file__).resolve().parent  # inference.proto sits beside its generated code
# protoc comes with grpcio-tools, a dev tool: the dev venv's, also when hack/min-versions.sh
# runs the tests at the dependency floors.
DEV_PYTHON = os.environ.get("CANARIUM_DEV_PYTHON", sys.executable)


def _request(
    datatype: str, shape: list[int], *, name: str = "x", raw: bytes | None = None, **contents: Any
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def _parse(request: pb.ModelInferRequest, *specs: TensorSpec) -> dict[str, np.ndarray[Any, Any]]:
    return to_inference_request(request, specs).inputs


def _error(request: pb.ModelInferRequest, *specs: TensorSpec) -> str:
    with pytest.raises(ProtocolError) as info:
        to_inference_request(request, specs)
    assert info.value.status == 400
    return info.value.message


SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True],
    "INT8": [-128, 0, 5, 127],
    "INT16": [-32768, 1, 2, 32767],
    "INT32": [-(2**31), 0, 7, 2**31 - 1],
    "INT64": [-(2**63), 0, 9, 2**63 - 1],
    "UINT8": [0, 1, 200, 255],
    "UINT16": [0, 1, 2, 65535],
    "UINT32": [0, 1, 2, 2**32 - 1],
    "UINT64": [0, 1, 2, 2**64 - 1],
    "FP32": [0.5, -1.25, 3.0, 1e30],
    "FP64": [0.1, -2.5, 3.0, 1e300],
    "BYTES": ["a", "", "héllo", "x" * 10],
}


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_typed_contents_of_every_datatype(datatype: str) -> None:
    values = SAMPLES[datatype]
    spec = TensorSpec("x", datatype, (-1, 2))
    given = [v.encode() for v in values] if datatype == "BYTES" else values
    contents: dict[str, Any] = {CONTENTS_FIELD[datatype]: given}
    arr = _parse(_request(datatype, [2, 2], **contents), spec)["x"]
    assert arr.shape == (2, 2)
    assert arr.dtype == DATATYPE_TO_NUMPY[datatype]
    assert arr.reshape(-1).tolist() == (
        values if datatype != "FP32" else np.asarray(values, np.float32).tolist()
    )


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_contents_of_every_datatype_round_trip(datatype: str) -> None:
    """What a response carries as raw_output_contents is what a request's raw input means."""
    values = SAMPLES[datatype]
    dtype = DATATYPE_TO_NUMPY[datatype]
    arr: np.ndarray[Any, Any] = (
        np.empty(4, dtype=dtype) if datatype == "BYTES" else np.asarray(values, dtype)
    )
    if datatype == "BYTES":
        arr[:] = values
    arr = arr.reshape(2, 2)
    response = pb.ModelInferResponse.FromString(
        build_infer_response(InferenceResponse("m", "1", {"y": arr}, "r-1"), raw=True)
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("y", datatype, [2, 2])
    ]
    assert not response.outputs[0].HasField("contents")
    request = _request(datatype, [2, 2], raw=response.raw_output_contents[0])
    back = _parse(request, TensorSpec("x", datatype, (2, 2)))["x"]
    assert back.dtype == dtype
    assert back.tolist() == arr.tolist()


def test_typed_response_puts_each_datatype_in_its_field() -> None:
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "label": np.asarray([1, 0], np.int64),
        "proba": np.asarray([[0.25, 0.75], [1.0, 0.0]], np.float32),
        "name": np.asarray(["cat", "dog"], dtype=np.object_),
        "flag": np.asarray([True, False]),
        "small": np.asarray([3, 4], np.uint8),
    }
    response = pb.ModelInferResponse.FromString(
        build_infer_response(InferenceResponse("m", "7", outputs, None), raw=False)
    )
    assert (response.model_name, response.model_version, response.id) == ("m", "7", "")
    assert not response.raw_output_contents
    got = {t.name: (t.datatype, list(t.shape), t.contents) for t in response.outputs}
    assert got["label"][:2] == ("INT64", [2])
    assert list(got["label"][2].int64_contents) == [1, 0]
    assert got["proba"][:2] == ("FP32", [2, 2])
    assert list(got["proba"][2].fp32_contents) == [0.25, 0.75, 1.0, 0.0]
    assert list(got["name"][2].bytes_contents) == [b"cat", b"dog"]
    assert list(got["flag"][2].bool_contents) == [True, False]
    assert (got["small"][0], list(got["small"][2].uint_contents)) == ("UINT8", [3, 4])


def test_the_response_keeps_the_request_id_in_either_form() -> None:
    outputs = {"y": np.asarray([1.5, 2.5], np.float64)}
    for raw in (True, False):
        response = pb.ModelInferResponse.FromString(
            build_infer_response(InferenceResponse("m", "3", outputs, "req-42"), raw=raw)
        )
        assert (response.model_name, response.model_version, response.id) == ("m", "3", "req-42")
        assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
            ("y", "FP64", [2])
        ]


def test_typed_bytes_output_sends_every_element_as_bytes_row_major() -> None:
    """Bytes go as they are, text as UTF-8 and anything else as its text, over all the
    tensor's dimensions."""
    text = np.empty((2, 2), dtype=np.object_)
    text[0, 0], text[0, 1], text[1, 0], text[1, 1] = "é", b"\xff\x00", 7, "d"
    response = pb.ModelInferResponse.FromString(
        build_infer_response(InferenceResponse("m", "1", {"text": text}, None), raw=False)
    )
    (tensor,) = response.outputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("text", "BYTES", [2, 2])
    assert list(tensor.contents.bytes_contents) == [b"\xc3\xa9", b"\xff\x00", b"7", b"d"]


def test_model_metadata_carries_every_field() -> None:
    metadata = {
        "name": "iris",
        "versions": ["1.2.0"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    message = pb.ModelMetadataResponse.FromString(model_metadata_response(metadata))
    assert (message.name, list(message.versions), message.platform) == (
        "iris",
        ["1.2.0"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("features", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in message.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]


def test_server_metadata_carries_every_field() -> None:
    metadata = {"name": "canarium", "version": "0.4.0", "extensions": ["binary_tensor_data"]}
    message = pb.ServerMetadataResponse.FromString(server_metadata_response(metadata))
    assert (message.name, message.version, list(message.extensions)) == (
        "canarium",
        "0.4.0",
        ["binary_tensor_data"],
    )


def test_request_fields_reach_the_inference_request() -> None:
    request = _request("FP32", [1, 2], fp32_contents=[1.0, 2.0])
    request.id = "abc"
    request.outputs.add(name="proba")
    request.parameters["priority"].int64_param = 3
    request.parameters["tag"].string_param = "t"
    request.parameters.get_or_create("unset")  # a parameter without a value
    parsed = to_inference_request(request, [TensorSpec("x", "FP32", (-1, 2))])
    assert (parsed.id, parsed.outputs) == ("abc", ["proba"])
    assert parsed.parameters == {"priority": 3, "tag": "t", "unset": None}
    bare = to_inference_request(
        _request("FP32", [1, 2], fp32_contents=[1.0, 2.0]), [TensorSpec("x", "FP32", (-1, 2))]
    )
    assert (bare.id, bare.outputs, bare.parameters) == (None, None, {})


FP32x2 = TensorSpec("x", "FP32", (-1, 2))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            _request("FP32", [1, 2], int_contents=[1, 2]),
            "input 'x': FP32 elements go in contents.fp32_contents, got contents.int_contents",
        ),
        (
            _request("FP32", [2, 2], fp32_contents=[1.0, 2.0]),
            "input 'x': shape [2, 2] needs 4 elements, contents.fp32_contents holds 2",
        ),
        (
            _request("FP32", [1, 2]),
            "input 'x': shape [1, 2] needs 2 elements, contents.fp32_contents holds 0",
        ),
        # too few in the right field: the count is what is wrong, whatever else is there
        (
            _request("FP32", [1, 2], fp32_contents=[1.0], int_contents=[1, 2]),
            "input 'x': shape [1, 2] needs 2 elements, contents.fp32_contents holds 1",
        ),
        (
            _request("FP64", [1, 2], fp64_contents=[1.0, 2.0]),
            "input 'x': datatype is FP64 but the model expects FP32",
        ),
        (
            _request("FP16", [1, 2]),
            f"input 'x': unknown datatype 'FP16'; known: {sorted(DATATYPE_TO_NUMPY)}",
        ),
        (
            _request("FP32", [1, 3], fp32_contents=[1.0, 2.0, 3.0]),
            "input 'x': shape [1, 3] does not match the model's [-1, 2]",
        ),
        (
            _request("FP32", [2], fp32_contents=[1.0, 2.0]),
            "input 'x': shape [2] has 1 dimension(s), the model expects 2 like [-1, 2]",
        ),
        (
            _request("FP32", [-1, 2], fp32_contents=[1.0, 2.0]),
            "input 'x': shape [-1, 2] must contain non-negative integers only",
        ),
        (_request("FP32", [0, 2]), "input 'x': shape [0, 2] has no elements"),
        (
            _request("FP32", [1, 2], name="y", fp32_contents=[1.0, 2.0]),
            "input 'y' is not an input of this model; expected ['x']",
        ),
        (
            _request("FP32", [1, 2], raw=b"\0" * 4),
            "input 'x': raw_input_contents[0] is 4 bytes but shape [1, 2] of FP32 needs 8",
        ),
        (
            _request("FP32", [1, 2], raw=b"\0" * 12),
            "input 'x': raw_input_contents[0] is 12 bytes but shape [1, 2] of FP32 needs 8",
        ),
        (
            _request("FP32", [1, 2], raw=b"\0" * 8, fp32_contents=[1.0, 2.0]),
            "input 'x': 'contents' must be empty when the request carries raw_input_contents",
        ),
        (pb.ModelInferRequest(model_name="m"), "'inputs' must hold at least one tensor"),
    ],
)
def test_client_mistakes_are_400_with_what_is_wrong(
    request_: pb.ModelInferRequest, message: str
) -> None:
    assert _error(request_, FP32x2) == message


def test_small_integers_out_of_range_are_refused_not_wrapped() -> None:
    spec = TensorSpec("x", "INT8", (2,))
    assert "out of range for INT8 [-128, 127]" in _error(
        _request("INT8", [2], int_contents=[1, 128]), spec
    )
    spec = TensorSpec("x", "UINT16", (2,))
    assert "out of range for UINT16 [0, 65535]" in _error(
        _request("UINT16", [2], uint_contents=[1, 65536]), spec
    )


def test_bytes_must_be_utf8_and_raw_bytes_well_framed() -> None:
    spec = TensorSpec("x", "BYTES", (2,))
    assert "BYTES element 1 is not UTF-8" in _error(
        _request("BYTES", [2], bytes_contents=[b"ok", b"\xff"]), spec
    )
    framed = (3).to_bytes(4, "little") + b"abc" + (9).to_bytes(4, "little") + b"de"
    assert "BYTES element 1 of 9 bytes overruns raw_input_contents[0] (2 bytes left)" in _error(
        _request("BYTES", [2], raw=framed), spec
    )


def test_several_inputs_raw_or_not_all_of_them() -> None:
    specs = (TensorSpec("a", "FP32", (-1,)), TensorSpec("b", "INT64", (-1,)))
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="FP32", shape=[2])
    request.inputs.add(name="b", datatype="INT64", shape=[2])
    request.raw_input_contents.append(np.asarray([1, 2], "<f4").tobytes())
    assert _error(request, *specs) == (
        "raw_input_contents holds 1 entries for 2 inputs: either every input is in "
        "raw_input_contents, in input order, or none is"
    )
    request.raw_input_contents.append(np.asarray([3, 4], "<i8").tobytes())
    arrays = _parse(request, *specs)
    assert arrays["a"].tolist() == [1.0, 2.0]
    assert arrays["b"].tolist() == [3, 4]
    # missing, duplicated, disagreeing batch sizes
    one = _request("FP32", [2], name="a", fp32_contents=[1.0, 2.0])
    assert _error(one, *specs) == "missing model input(s): ['b']"
    twice = _request("FP32", [2], name="a", fp32_contents=[1.0, 2.0])
    twice.inputs.add().CopyFrom(twice.inputs[0])
    assert _error(twice, *specs) == "input 'a' is given more than once"
    disagree = _request("FP32", [2], name="a", fp32_contents=[1.0, 2.0])
    disagree.inputs.add(name="b", datatype="INT64", shape=[3]).contents.int64_contents.extend(
        [1, 2, 3]
    )
    assert "disagree on the batch size" in _error(disagree, *specs)


def test_bytes_that_are_no_message_are_the_clients_mistake() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(pb.ModelInferRequest, b"\xff\xff\xff")
    assert info.value.status == 400
    assert "not a valid ModelInferRequest" in info.value.message


def test_status_codes_of_each_failure() -> None:
    assert status_code(400) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code(404) == grpc.StatusCode.NOT_FOUND
    assert status_code(413) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code(503) == grpc.StatusCode.UNAVAILABLE
    assert status_code(500) == grpc.StatusCode.INTERNAL


def test_the_generated_code_matches_inference_proto(tmp_path: Path) -> None:
    """inference_pb2.py is protoc's output for inference.proto (`make proto` after a change):
    compared as descriptors, which do not depend on the protoc version."""
    out = tmp_path / "inference.pb"
    subprocess.run(
        [
            DEV_PYTHON,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--descriptor_set_out={out}",
            "inference.proto",
        ],
        check=True,
        timeout=60,
    )
    (fresh,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    _drop_json_names(fresh)  # derived from the field names; the Python plugin leaves them out
    assert committed == fresh


def _drop_json_names(message: Any) -> None:
    for field in getattr(message, "field", ()):
        field.ClearField("json_name")
    for nested in [*getattr(message, "message_type", ()), *getattr(message, "nested_type", ())]:
        _drop_json_names(nested)


def test_the_service_is_kserves_and_tritons_on_the_wire() -> None:
    """Package, service, methods and the field numbers clients rely on."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    ]  # fmt: skip
    numbers = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert numbers == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5,
        "outputs": 6, "raw_input_contents": 7,
    }  # fmt: skip
    numbers = {f.name: f.number for f in pb.ModelInferResponse.DESCRIPTOR.fields}
    assert numbers == {
        "model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "outputs": 5,
        "raw_output_contents": 6,
    }  # fmt: skip
    numbers = {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}
    assert numbers == {
        "bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4,
        "uint64_contents": 5, "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8,
    }  # fmt: skip
