"""Open Inference Protocol (V2) gRPC: pure conversions between its messages and the server's.

The gRPC twin of protocol.py (which it reuses for every check, so both transports accept and
refuse the same tensors with the same messages): ModelInferRequest bytes in, an
InferenceRequest out, and an InferenceResponse back to ModelInferResponse bytes. Tensors come
either as typed `contents` (the field of their datatype) or, all of them, as
`raw_input_contents` (row-major little-endian bytes, as the binary tensor data extension);
the response answers in the same form, as KServe's server does (Triton's clients read both).
Every client mistake raises ProtocolError (400), never anything else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from .proto import inference_pb2 as pb
from .protocol import (
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    ProtocolError,
    TensorSpec,
    array_from_bytes,
    array_to_bytes,
    check_batch,
    check_datatype,
    check_shape,
    datatype_of,
    model_input,
    parse_shape,
)

# The InferTensorContents field that carries each datatype's elements.
CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS_FIELDS: Final = tuple(dict.fromkeys(CONTENTS_FIELD.values()))

M = TypeVar("M", bound=Message)


def decode(kind: type[M], message: bytes) -> M:
    """A serialized request as its message; bytes that are none are the client's mistake."""
    try:
        return kind.FromString(message)
    except DecodeError as exc:
        raise ProtocolError(f"the request is not a valid {kind.__name__}: {exc}") from None


def to_inference_request(
    request: pb.ModelInferRequest, model_inputs: Sequence[TensorSpec]
) -> InferenceRequest:
    """A ModelInferRequest checked against the model's inputs, as the DataPlane takes it."""
    if not request.inputs:
        raise ProtocolError("'inputs' must hold at least one tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: "
            "either every input is in raw_input_contents, in input order, or none is"
        )
    specs = {spec.name: spec for spec in model_inputs}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given more than once")
        spec = model_input(name, specs)
        check_datatype(name, tensor.datatype, spec)
        shape = parse_shape(name, list(tensor.shape))
        check_shape(name, shape, spec.shape)
        if raw:
            if tensor.HasField("contents"):
                raise ProtocolError(
                    f"input '{name}': 'contents' must be empty when the request carries "
                    "raw_input_contents"
                )
            arrays[name] = array_from_bytes(
                name, tensor.datatype, shape, memoryview(raw[i]), f"raw_input_contents[{i}]"
            )
        else:
            arrays[name] = _contents_array(name, tensor.datatype, shape, tensor.contents)
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise ProtocolError(f"missing model input(s): {missing}")
    check_batch(arrays)
    outputs = [o.name for o in request.outputs] or None
    return InferenceRequest(
        inputs=arrays,
        outputs=outputs,
        id=request.id or None,
        parameters=_parameters(request.parameters),
    )


def _contents_array(
    name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents
) -> np.ndarray[Any, Any]:
    """One input's typed contents as an array of `datatype` and `shape`."""
    field = CONTENTS_FIELD[datatype]
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        others = [f for f in _ALL_CONTENTS_FIELDS if f != field and len(getattr(contents, f))]
        if not values and others:
            raise ProtocolError(
                f"input '{name}': {datatype} elements go in contents.{field}, "
                f"got contents.{others[0]}"
            )
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} needs {count} elements, "
            f"contents.{field} holds {len(values)}"
        )
    if datatype == "BYTES":
        out: list[str] = []
        for j, item in enumerate(values):
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(f"input '{name}': BYTES element {j} is not UTF-8") from None
        arr: np.ndarray[Any, Any] = np.empty(count, dtype=np.object_)
        arr[:] = out
        return arr.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[datatype]
    if field in ("int_contents", "uint_contents") and dtype.itemsize < 4:
        # INT8/16 and UINT8/16 travel in 32-bit fields: a value may not fit.
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise ProtocolError(
                f"input '{name}': a value is out of range for {datatype} [{info.min}, {info.max}]"
            )
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def _parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(param, choice)
    return out


def build_infer_response(response: InferenceResponse, *, raw: bool) -> bytes:
    """A serialized ModelInferResponse: outputs in raw_output_contents when `raw` (the
    request's inputs came raw), else in typed contents."""
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    for name, arr in response.outputs.items():
        datatype = datatype_of(arr)
        tensor = message.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            message.raw_output_contents.append(array_to_bytes(arr, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                x if isinstance(x, bytes) else str(x).encode("utf-8") for x in arr.reshape(-1)
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(arr.reshape(-1).tolist())
    return message.SerializeToString()


def model_metadata_response(metadata: Mapping[str, Any]) -> bytes:
    """The DataPlane's model metadata (REST's JSON object) as a ModelMetadataResponse."""
    message = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for field in ("inputs", "outputs"):
        for tensor in metadata[field]:
            getattr(message, field).add(
                name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
            )
    return message.SerializeToString()


def server_metadata_response(metadata: Mapping[str, Any]) -> bytes:
    message = pb.ServerMetadataResponse(
        name=metadata["name"], version=metadata["version"], extensions=metadata["extensions"]
    )
    return message.SerializeToString()
