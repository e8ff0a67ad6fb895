"""Open Inference Protocol (V2) REST: pure request parsing and response building.

No HTTP and no model runtime here (the split KServe makes between its protocol and its
server): bytes in, numpy arrays out, and back. Every client mistake raises `ProtocolError`
with a message that says what is wrong and the HTTP status it deserves, never anything else.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

# V2 datatype -> numpy dtype. FP16/BF16 are left out: onnxruntime models from scikit-learn do
# not use them and JSON carries them badly.
DATATYPE_TO_NUMPY: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# ONNX tensor element type (as onnxruntime spells it) -> V2 datatype.
ONNX_TO_DATATYPE: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_INT_DATATYPES: Final = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)
_FLOAT_DATATYPES: Final = frozenset({"FP32", "FP64"})
MAX_RANK: Final = 16

# Binary tensor data extension (Triton's): the request or response body is this many bytes of
# JSON, then the raw bytes of the binary tensors in order.
BINARY_HEADER: Final = "Inference-Header-Content-Length"
BINARY_EXTENSION: Final = "binary_tensor_data"
_LENGTH_PREFIX: Final = struct.Struct("<I")


class ProtocolError(Exception):
    """A request the server will not serve; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model as V2 metadata describes it (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class InferenceRequest:
    """A parsed and validated V2 inference request."""

    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[str] | None = None  # None = every output of the model
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # Outputs asked for with an explicit `parameters.binary_data`, and the request's
    # `parameters.binary_data_output` for the others (binary tensor data extension).
    binary_outputs: dict[str, bool] | None = None
    binary_output_default: bool = False

    @property
    def batch_size(self) -> int:
        for arr in self.inputs.values():
            return int(arr.shape[0]) if arr.ndim else 1
        return 0

    def binary_output_names(self, names: Iterable[str]) -> frozenset[str]:
        """Those of `names` to answer with as binary data."""
        flags, default = self.binary_outputs, self.binary_output_default
        if not flags:
            return frozenset(names) if default else frozenset()
        return frozenset(n for n in names if flags.get(n, default))


@dataclass(slots=True)
class InferenceResponse:
    """A V2 inference response before serialisation (see `build_response`)."""

    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None


def _type_name(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    # bool before number: a bool is an int to isinstance.
    for json_type, json_name in (
        (bool, "boolean"),
        (int | float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ):
        if isinstance(value, json_type):
            return json_name
    return type(value).__name__


def parse_shape(name: str, shape: object) -> tuple[int, ...]:
    """An input's shape: a list of at most MAX_RANK non-negative integers."""
    if not isinstance(shape, list):
        raise ProtocolError(f"input '{name}': 'shape' must be an array of integers")
    if len(shape) > MAX_RANK:
        raise ProtocolError(
            f"input '{name}': shape has {len(shape)} dimensions, at most {MAX_RANK}"
        )
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise ProtocolError(
                f"input '{name}': shape {shape} must contain non-negative integers only"
            )
    return tuple(shape)


def _to_array(
    name: str, datatype: str, data: object, shape: tuple[int, ...], check_bools: bool
) -> np.ndarray[Any, Any]:
    """Turn the JSON `data` of one input into a numpy array of `datatype` and `shape`.

    `check_bools=False` when the request holds no JSON true/false at all (a fast path).
    """
    if isinstance(data, dict) or data is None:
        raise ProtocolError(f"input '{name}': 'data' must be an array, got {_type_name(data)}")
    if not isinstance(data, list):
        # A single scalar is allowed for a tensor of one element.
        data = [data]
    if datatype == "BYTES":
        return _bytes_array(name, data, shape)
    raw = _rectangular_array(name, datatype, data, shape)
    if raw.ndim > 1:
        _check_nesting(name, raw.shape, shape)
    if datatype == "BOOL":
        if raw.dtype.kind != "b":
            raise ProtocolError(f"input '{name}': datatype BOOL needs true/false values")
        return raw.reshape(shape)
    kind = raw.dtype.kind
    if check_bools and kind in "iuf" and _has_bools(data, raw.ndim):
        # numpy takes true and false next to numbers for 1 and 0: a client's mistake, no cast
        kind = "b"
    if datatype in _FLOAT_DATATYPES:
        return _float_array(name, datatype, raw, kind).reshape(shape)
    if datatype in _INT_DATATYPES:
        return _int_array(name, datatype, data, raw, kind).reshape(shape)
    raise ProtocolError(f"input '{name}': datatype {datatype} is not supported")  # pragma: no cover


def _check_size(name: str, shape: tuple[int, ...], size: int) -> None:
    expected = math.prod(shape)
    if size != expected:
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} needs {expected} elements, got {size}"
        )


def _check_nesting(name: str, nested: tuple[int, ...], shape: tuple[int, ...]) -> None:
    """Data given as nested arrays must be nested as the shape: a silent reshape would hide a
    client's mistake (rows of 2 for a shape [2, 3], a transposed matrix)."""
    if nested != shape:
        raise ProtocolError(
            f"input '{name}': 'data' is nested as {list(nested)}, not as its shape "
            f"{list(shape)}: give it flat (row-major) or nested as the shape"
        )


def _nesting(data: list[Any]) -> tuple[int, ...]:
    """The lengths of `data`'s nested lists along their first elements."""
    dims = []
    item: Any = data
    while isinstance(item, list):
        dims.append(len(item))
        item = item[0] if item else None
    return tuple(dims)


def _bytes_array(name: str, data: list[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """The strings of `data`, flat or nested as `shape`, as an object array of `shape`."""
    flat = _flatten_bytes(name, data)
    _check_size(name, shape, len(flat))
    if data and isinstance(data[0], list):
        _check_nesting(name, _nesting(data), shape)
    arr: np.ndarray[Any, Any] = np.empty(len(flat), dtype=np.object_)
    arr[:] = flat
    return arr.reshape(shape)


def _rectangular_array(
    name: str, datatype: str, data: list[Any], shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    """`data` as numpy reads it (whatever dtype), refused unless rectangular of `shape`'s size."""
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(
            f"input '{name}': 'data' must be a rectangular array of {datatype} values"
        ) from None
    _check_size(name, shape, raw.size)
    return raw


def _float_array(
    name: str, datatype: str, raw: np.ndarray[Any, Any], kind: str
) -> np.ndarray[Any, Any]:
    if kind not in "iuf":
        raise ProtocolError(
            f"input '{name}': datatype {datatype} needs numbers, got {_kind_name(kind)}"
        )
    return raw.astype(DATATYPE_TO_NUMPY[datatype], copy=False)


def _int_array(
    name: str, datatype: str, data: list[Any], raw: np.ndarray[Any, Any], kind: str
) -> np.ndarray[Any, Any]:
    if kind in "fO":
        # numpy makes float64 of integers that no one numpy integer type holds (values
        # >= 2**63 next to smaller ones): look at them as Python ints (a slow path).
        exact = _exact_integers(data)
        if exact is not None:
            raw, kind = exact, "i"
    if kind not in "iu":
        raise ProtocolError(
            f"input '{name}': datatype {datatype} needs integers, got {_kind_name(kind)}"
        )
    target = DATATYPE_TO_NUMPY[datatype]
    info = np.iinfo(target)
    if int(raw.min()) < info.min or int(raw.max()) > info.max:
        raise ProtocolError(
            f"input '{name}': a value is out of range for {datatype} [{info.min}, {info.max}]"
        )
    return raw.astype(target, copy=False)


def _has_bools(data: list[Any], depth: int) -> bool:
    items: Iterable[Any] = data
    for _ in range(depth - 1):
        items = itertools.chain.from_iterable(items)
    return bool in set(map(type, items))


def _exact_integers(data: list[Any]) -> np.ndarray[Any, Any] | None:
    """`data` (already known to be rectangular) as an array of Python ints, or None."""
    values = np.asarray(data, dtype=np.object_).ravel().tolist()
    if not all(type(v) is int for v in values):
        return None
    return np.asarray(values, dtype=np.object_)


def _kind_name(kind: str) -> str:
    return {
        "b": "booleans",
        "f": "floating-point numbers",
        "U": "strings",
        "O": "mixed or nested values",
    }.get(kind, "unsupported values")


def _flatten_bytes(name: str, data: list[Any]) -> list[str]:
    out: list[str] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise ProtocolError(
                    f"input '{name}': datatype BYTES needs strings, got {_type_name(item)}"
                )
            out.append(item)
        else:
            stack.pop()
    return out


def parse_request(body: bytes, model_inputs: Sequence[TensorSpec]) -> InferenceRequest:
    """Parse a V2 inference request body and check it against the model's inputs.

    Datatypes must match the model's exactly (as Triton and KServe require): a silent cast
    would hide a client's mistake. Fixed dimensions of the model's shapes must match; -1 is any.
    """
    doc = _load_json(body, "request body")
    # Without a JSON true or false anywhere in the body, no numbers array can hide a boolean.
    check_bools = b"true" in body or b"false" in body
    return parse_request_object(doc, model_inputs, check_bools=check_bools)


def _load_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            # orjson's own message for this names neither the byte nor UTF-8 ("str is not
            # valid UTF-8: surrogates not allowed", at char 0).
            raise ProtocolError(
                f"{what} is not valid JSON: it is not UTF-8 text (byte {bad.start}: "
                f"{body[bad.start : bad.start + 1]!r})"
            ) from None
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {_type_name(doc)}")
    return doc


class _BinaryData:
    """The binary part of a request body, handed out to the binary inputs in order."""

    __slots__ = ("body", "pos")

    def __init__(self, body: bytes, pos: int) -> None:
        self.body = body
        self.pos = pos

    def take(self, name: str, size: int) -> memoryview:
        left = len(self.body) - self.pos
        if size > left:
            raise ProtocolError(
                f"input '{name}': binary_data_size {size} overruns the request body "
                f"({left} bytes of binary data left)"
            )
        start = self.pos
        self.pos += size
        return memoryview(self.body)[start : self.pos]


def parse_binary_request(
    body: bytes, json_length: int, model_inputs: Sequence[TensorSpec]
) -> InferenceRequest:
    """Parse a request of the binary tensor data extension: `json_length` (the
    Inference-Header-Content-Length header) bytes of JSON, then the raw little-endian bytes
    of the inputs with a `parameters.binary_data_size`, in input order, and nothing else."""
    if json_length < 0:
        raise ProtocolError(f"{BINARY_HEADER} must not be negative, got {json_length}")
    if json_length > len(body):
        raise ProtocolError(
            f"{BINARY_HEADER} is {json_length} but the request body has only {len(body)} bytes"
        )
    header = body[:json_length]
    doc = _load_json(header, f"the first {json_length} bytes of the request body ({BINARY_HEADER})")
    check_bools = b"true" in header or b"false" in header
    binary = _BinaryData(body, json_length)
    request = parse_request_object(doc, model_inputs, check_bools=check_bools, binary=binary)
    left = len(body) - binary.pos
    if left:
        raise ProtocolError(
            f"{left} bytes of binary data after the binary inputs' binary_data_size are left over"
        )
    return request


def parse_request_object(
    doc: Mapping[str, Any],
    model_inputs: Sequence[TensorSpec],
    *,
    check_bools: bool = True,
    binary: _BinaryData | None = None,
) -> InferenceRequest:
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = doc.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        # [], "", 0 and false too: not "no parameters"
        raise ProtocolError("'parameters' must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty array of tensors")
    arrays = _parse_inputs(inputs, model_inputs, check_bools, binary)
    check_batch(arrays)
    outputs, binary_outputs = _parse_outputs(doc.get("outputs"))
    binary_default = parameters.get("binary_data_output", False) if parameters else False
    if binary_default is not False and binary_default is not True:
        raise ProtocolError("parameters 'binary_data_output' must be true or false")
    return InferenceRequest(
        inputs=arrays,
        outputs=outputs,
        id=request_id,
        parameters=parameters,
        binary_outputs=binary_outputs,
        binary_output_default=binary_default,
    )


def _parse_inputs(
    inputs: list[Any],
    model_inputs: Sequence[TensorSpec],
    check_bools: bool,
    binary: _BinaryData | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """Every one of the model's inputs, each given once, as an array by name."""
    specs = {spec.name: spec for spec in model_inputs}
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for i, item in enumerate(inputs):
        name, spec = _input_spec(i, item, specs)
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given more than once")
        arrays[name] = _input_array(name, item, spec, check_bools, binary)
    missing = [name for name in specs if name not in arrays]
    if missing:
        raise ProtocolError(f"missing model input(s): {missing}")
    return arrays


def _input_spec(i: int, item: object, specs: Mapping[str, TensorSpec]) -> tuple[str, TensorSpec]:
    """The name of `inputs[i]` and the model input of that name."""
    if not isinstance(item, dict):
        raise ProtocolError(f"inputs[{i}] must be an object, got {_type_name(item)}")
    name = item.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{i}]: 'name' must be a string")
    return name, model_input(name, specs)


def model_input(name: str, specs: Mapping[str, TensorSpec]) -> TensorSpec:
    """The model's input called `name`."""
    spec = specs.get(name)
    if spec is None:
        raise ProtocolError(
            f"input '{name}' is not an input of this model; expected {sorted(specs)}"
        )
    return spec


def check_datatype(name: str, datatype: str, spec: TensorSpec) -> None:
    """A known V2 datatype, and the model input's own (no silent casts)."""
    if datatype not in DATATYPE_TO_NUMPY:
        raise ProtocolError(
            f"input '{name}': unknown datatype {datatype!r}; known: {sorted(DATATYPE_TO_NUMPY)}"
        )
    if datatype != spec.datatype:
        raise ProtocolError(
            f"input '{name}': datatype is {datatype} but the model expects {spec.datatype}"
        )


def _input_array(
    name: str,
    item: Mapping[str, Any],
    spec: TensorSpec,
    check_bools: bool,
    binary: _BinaryData | None = None,
) -> np.ndarray[Any, Any]:
    """One input tensor (already known to be an object naming `spec`) as an array."""
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(f"input '{name}': 'datatype' must be a string")
    check_datatype(name, datatype, spec)
    shape = parse_shape(name, item.get("shape"))
    check_shape(name, shape, spec.shape)
    params = item.get("parameters")
    if params is not None:
        size = _binary_data_size(name, params)
        if size is not None:
            if binary is None:
                raise ProtocolError(
                    f"input '{name}': parameters 'binary_data_size' needs the {BINARY_HEADER} "
                    "header (binary tensor data extension)"
                )
            if "data" in item:
                raise ProtocolError(
                    f"input '{name}': both 'data' and parameters 'binary_data_size' are given"
                )
            return array_from_bytes(name, datatype, shape, binary.take(name, size))
    if "data" not in item:
        raise ProtocolError(
            f"input '{name}': 'data' is missing (or parameters 'binary_data_size' with the "
            f"{BINARY_HEADER} header)"
        )
    return _to_array(name, datatype, item["data"], shape, check_bools)


def _binary_data_size(name: str, params: object) -> int | None:
    if not isinstance(params, dict):
        raise ProtocolError(f"input '{name}': 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(
            f"input '{name}': parameters 'binary_data_size' must be a non-negative integer"
        )
    return size


def array_from_bytes(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    chunk: memoryview,
    source: str = "binary_data_size",
) -> np.ndarray[Any, Any]:
    """The raw little-endian bytes of one input (binary tensor data, gRPC raw_input_contents)
    as an array of `datatype` and `shape`; `source` names where its length came from."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _binary_bytes_array(name, chunk, count, source).reshape(shape)
    dtype = DATATYPE_TO_NUMPY[datatype]
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            f"input '{name}': {source} is {len(chunk)} bytes but shape {list(shape)} "
            f"of {datatype} needs {expected}"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if int(raw.max()) > 1:
            raise ProtocolError(f"input '{name}': BOOL binary data must be bytes 0 or 1")
        return raw.astype(np.bool_).reshape(shape)
    # A copy in native byte order: the body's buffer is read-only.
    return np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _binary_bytes_array(
    name: str, chunk: memoryview, count: int, source: str
) -> np.ndarray[Any, Any]:
    """BYTES binary data: each element a 4-byte little-endian length, then that many bytes."""
    out: list[str] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if end - pos < _LENGTH_PREFIX.size:
            raise ProtocolError(
                f"input '{name}': BYTES binary data ends inside the length of element {len(out)}"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, pos)
        pos += _LENGTH_PREFIX.size
        if length > end - pos:
            raise ProtocolError(
                f"input '{name}': BYTES element {len(out)} of {length} bytes overruns "
                f"{source} ({end - pos} bytes left)"
            )
        try:
            out.append(str(chunk[pos : pos + length], "utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(f"input '{name}': BYTES element {len(out)} is not UTF-8") from None
        pos += length
        if len(out) > count:
            break
    if len(out) != count:
        held = f"more than {count}" if len(out) > count else str(len(out))
        raise ProtocolError(
            f"input '{name}': BYTES binary data holds {held} elements, the shape needs {count}"
        )
    arr: np.ndarray[Any, Any] = np.empty(count, dtype=np.object_)
    arr[:] = out
    return arr


def check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """`shape` fits the model input's `expected` (-1: any size) and has elements."""
    if len(shape) != len(expected):
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} has {len(shape)} dimension(s), "
            f"the model expects {len(expected)} like {list(expected)}"
        )
    for got, want in zip(shape, expected, strict=True):
        if want >= 0 and got != want:
            raise ProtocolError(
                f"input '{name}': shape {list(shape)} does not match the model's {list(expected)}"
            )
    if math.prod(shape) == 0:
        raise ProtocolError(f"input '{name}': shape {list(shape)} has no elements")


def check_batch(arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Every input of a rank above 0 has the same first dimension."""
    sizes = {name: arr.shape[0] for name, arr in arrays.items() if arr.ndim}
    if len(set(sizes.values())) > 1:
        raise ProtocolError(f"inputs disagree on the batch size (first dimension): {sizes}")


def _parse_outputs(outputs: object) -> tuple[list[str] | None, dict[str, bool] | None]:
    """The names of the requested outputs (None: all), and their explicit `binary_data`."""
    if outputs is None:
        return None, None
    binary: dict[str, bool] = {}
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be an array of {\"name\": ...} objects")
    names: list[str] = []
    for i, item in enumerate(outputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{i}] must be an object with a string 'name'")
        name = item["name"]
        names.append(name)
        params = item.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                raise ProtocolError(f"outputs[{i}]: 'parameters' must be an object")
            flag = params.get("binary_data")
            if flag is not None:
                if not isinstance(flag, bool):
                    raise ProtocolError(
                        f"outputs[{i}]: parameters 'binary_data' must be true or false"
                    )
                binary[name] = flag
    return names or None, binary or None


def select_outputs(requested: list[str] | None, available: Sequence[str]) -> list[str]:
    """The output names to compute: the requested ones (checked) or all of the model's."""
    if requested is None:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ProtocolError(
            f"requested output(s) {unknown} are not outputs of this model; "
            f"available: {list(available)}"
        )
    return list(dict.fromkeys(requested))


_NUMPY_TO_DATATYPE: Final = {dtype: name for name, dtype in DATATYPE_TO_NUMPY.items()}


def datatype_of(arr: np.ndarray[Any, Any]) -> str:
    datatype = _NUMPY_TO_DATATYPE.get(arr.dtype)
    if datatype is not None:
        return datatype
    if arr.dtype.kind in "US":
        return "BYTES"
    raise ValueError(f"no V2 datatype for numpy dtype {arr.dtype}")


def _output_data(arr: np.ndarray[Any, Any]) -> Any:
    flat = arr.reshape(-1)
    if flat.dtype.kind in "OUS":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat


def build_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    request_id: str | None = None,
) -> bytes:
    """Serialise a V2 inference response (row-major, flattened `data`)."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = [
        {
            "name": name,
            "datatype": datatype_of(arr),
            "shape": list(arr.shape),
            "data": _output_data(arr),
        }
        for name, arr in outputs.items()
    ]
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def array_to_bytes(arr: np.ndarray[Any, Any], datatype: str) -> bytes:
    """One output tensor as raw little-endian bytes, row-major (binary tensor data, gRPC
    raw_output_contents); BYTES elements each after a 4-byte little-endian length."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for x in arr.reshape(-1):
            raw = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(_LENGTH_PREFIX.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    if datatype == "BOOL":
        return np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def build_binary_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    request_id: str | None,
    binary: Collection[str],
) -> tuple[bytes, int]:
    """Serialise a V2 inference response with the outputs in `binary` as binary data: the
    body, and the length of its JSON part (the Inference-Header-Content-Length header)."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    chunks: list[bytes] = []
    tensors: list[dict[str, Any]] = []
    for name, arr in outputs.items():
        datatype = datatype_of(arr)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary:
            raw = array_to_bytes(arr, datatype)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = _output_data(arr)
        tensors.append(tensor)
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([header, *chunks]), len(header)


def error_body(message: str) -> bytes:
    """The V2 error object."""
    return orjson.dumps({"error": message})
