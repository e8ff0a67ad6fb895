"""Fuzzing the REST API of real canarium-serve processes serving real onnxruntime models.

Two fuzzers, each bounded in examples (the whole module takes 20-40 s on a 2-core machine):
- schemathesis' CLI (from the dev venv: CLIENT_PYTHON), from the OpenAPI description each server
  serves (GET /v2/openapi.json: package data canarium_serving/openapi.json completed with the
  model), the three servers at once: every operation, with requests that fit the description
  and requests that break it, its coverage phase (boundary values, missing and wrong-typed
  fields, methods a path does not take) and its fuzzing phase. Checked: no 5xx; the status code,
  content type, headers and body of every answer are the ones the description gives; a request
  that breaks the description is refused with a 4xx; a method a path does not take is a 405
  with `Allow`.
- Hypothesis strategies of inference requests near the valid ones, which a schema-driven
  generator rarely reaches: valid requests (JSON, flat or nested, or binary tensor data) with
  up to two mutations each (shapes wrong, huge, negative or of the wrong type; data ragged, deep,
  nested otherwise than its shape, out of range or of the wrong kind; binary data of the wrong
  size; a lying Inference-Header-Content-Length; bad outputs, id and parameters), and raw bytes.
  A valid request must be a 200 with outputs of the right shapes; a request with one sure
  mistake a 400/413 `{"error": ...}` with a message; any other never a 5xx.

Against three models: iris (FP32 input, dynamic batching), a lookup table (INT64 input;
onnxruntime refuses an index outside the table) and a text model (BYTES and BOOL inputs, two of
them: a string label encoder and a logical not). After fuzzing, each server must still be
serving, must have logged no traceback and must have answered no 5xx (its own request
counters say so). What the fuzzers found is pinned at the end of the file.
"""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from canarium_serving import openapi
from canarium_serving.contract import OPENAPI_PATH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import CLIENT_PYTHON, LOOKUP_TABLE, Models, Server, iris_env, start_server

pytestmark = pytest.mark.serving

SCHEMATHESIS_EXAMPLES = 20  # per operation and generation mode
NEAR_VALID_EXAMPLES = 150  # per model
TEXT_KEYS = ["cat", "dog", "émeu"]


# --- the models and servers ----------------------------------------------------------------
def _text_model(path: Path) -> Path:
    """code = LabelEncoder(text) (unknown: -1), negated = Not(flag); both inputs [N]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["code"],
                domain="ai.onnx.ml",
                keys_strings=TEXT_KEYS,
                values_int64s=list(range(len(TEXT_KEYS))),
                default_int64=-1,
            ),
            helper.make_node("Not", ["flag"], ["negated"]),
        ],
        "text",
        [
            helper.make_tensor_value_info("text", TensorProto.STRING, ["N"]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N"]),
        ],
        [
            helper.make_tensor_value_info("code", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("negated", TensorProto.BOOL, ["N"]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 2)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def iris(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server([], tmp_path_factory.mktemp("fuzz-iris"), env=iris_env(models))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def lookup(lookup_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--model-uri", str(lookup_model), "--model-name", "lookup", "--max-body-bytes", "65536"]
    server = start_server(args, tmp_path_factory.mktemp("fuzz-lookup"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz-text")
    args = ["--model-uri", str(_text_model(root / "text.onnx")), "--model-name", "text"]
    server = start_server([*args, "--max-body-bytes", "65536"], root)
    yield server
    assert server.stop() == 0, server.log()


def _no_crash(server: Server) -> None:
    """Still serving; no traceback in its log; no 5xx in its request counters."""
    assert server.proc.poll() is None, server.log()
    r = httpx.get(server.url + "/metrics", timeout=10)
    assert r.status_code == 200
    codes = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'canarium_requests_total\{[^}]*code="(\d+)"[^}]*\} (\S+)', r.text)
    }
    assert not {c: n for c, n in codes.items() if c.startswith("5") and n}, codes
    log = server.log()
    assert "Traceback" not in log, log
    assert "internal error" not in log, log


# --- schemathesis, from the served OpenAPI description ---------------------------------------
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
]


def _parses_query_method(server: Server) -> bool:
    """Whether the server's HTTP parser knows the QUERY method (httptools 0.9 does; 0.6.0, the
    floor `make test-min` runs, refuses the request before the application sees it, "Invalid
    HTTP request received." 400, so it cannot be a 405 there)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"QUERY /v2 HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 0\r\n\r\n")
        answer = sock.recv(65536)
    return not answer.startswith(b"HTTP/1.1 400 ")


def _schemathesis(server: Server, cwd: Path, checks: list[str]) -> subprocess.Popen[str]:
    """schemathesis' CLI on the server's OpenAPI description, started. From the dev venv
    (CLIENT_PYTHON): its pytest plugin does not work with this pytest, and the lower-bounds
    venv has no schemathesis."""
    return subprocess.Popen(
        [
            *(CLIENT_PYTHON, "-m", "schemathesis.cli", "--no-color", "run"),
            server.url + OPENAPI_PATH,
            *("--checks", ",".join(checks)),
            *("--phases", "examples,coverage,fuzzing"),  # stateful: this API holds no state
            *("--mode", "all", "--max-examples", str(SCHEMATHESIS_EXAMPLES)),
            *("--workers", "1", "--request-timeout", "10"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,  # where it keeps its cache (.schemathesis/)
    )


def test_openapi_fuzzing(iris: Server, lookup: Server, text: Server, tmp_path: Path) -> None:
    # the three at once: their servers and fuzzers share the machine's cores
    servers = {"iris": iris, "lookup": lookup, "text": text}
    checks = CHECKS
    if not _parses_query_method(iris):  # schemathesis tries QUERY among the methods a path lacks
        checks = [c for c in CHECKS if c != "unsupported_method"]
    runs = {model: _schemathesis(server, tmp_path, checks) for model, server in servers.items()}
    outputs = {model: run.communicate(timeout=180)[0] for model, run in runs.items()}
    for model, run in runs.items():
        out = outputs[model]
        assert run.returncode == 0, f"{model}:\n{out[-8000:]}"
        # it ran: every operation (schemathesis leaves out the document's own), many cases, in
        # every phase asked for
        assert re.search(r"Operations:\s+10 selected / 10 total", out), out
        for phase in ("Examples", "Coverage", "Fuzzing"):
            assert re.search(rf"✅\s+{phase}", out), out
        generated = re.search(r"(\d+) generated, \1 passed", out)
        assert generated, out
        assert int(generated.group(1)) >= 10 * SCHEMATHESIS_EXAMPLES, out
        _no_crash(servers[model])


def test_the_description_is_valid_openapi_3_and_covers_every_endpoint(iris: Server) -> None:
    # the package data and the served document, against OpenAPI 3.0's own JSON Schema (the
    # one schemathesis ships)
    validate = (
        "import json, sys\n"
        "from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR\n"
        "for doc in json.load(sys.stdin): OPENAPI_30_VALIDATOR.validate(doc)\n"
    )
    served = httpx.get(iris.url + OPENAPI_PATH, timeout=10)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    doc = served.json()
    checked = subprocess.run(
        [CLIENT_PYTHON, "-c", validate],
        input=json.dumps([openapi.document(), doc]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    operations = {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert operations == {
        "GET /v2/health/live",
        "GET /v2/health/ready",
        "GET /v2",
        "GET /v2/openapi.json",
        "GET /metrics",
        "GET /v2/models/{model_name}",
        "GET /v2/models/{model_name}/versions/{model_version}",
        "GET /v2/models/{model_name}/ready",
        "GET /v2/models/{model_name}/versions/{model_version}/ready",
        "POST /v2/models/{model_name}/infer",
        "POST /v2/models/{model_name}/versions/{model_version}/infer",
    }
    # completed for the model: its name and version, its tensors, an example that works
    params = doc["components"]["parameters"]
    assert params["ModelName"]["schema"]["enum"] == ["iris"]
    assert params["ModelVersion"]["schema"]["enum"] == ["2"]
    tensor = doc["components"]["schemas"]["RequestInput"]["properties"]
    assert tensor["name"]["enum"] == ["input"]
    assert tensor["datatype"]["enum"] == ["FP32"]
    assert doc["components"]["schemas"]["RequestOutput"]["properties"]["name"]["enum"] == [
        "label",
        "probabilities",
    ]
    body = doc["components"]["requestBodies"]["Inference"]["content"]["application/json"]
    example = body["example"]
    assert example == {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}]
    }
    # the package's document is the same but for what the server completed
    assert openapi.document()["paths"] == doc["paths"]
    # every path of the document answers on the server (none is described but missing)
    for path in doc["paths"]:
        url = iris.url + path.replace("{model_name}", "iris").replace("{model_version}", "2")
        if path.endswith("/infer"):
            r = httpx.post(url, json=example, timeout=10)
        else:
            r = httpx.get(url, timeout=10)
        assert r.status_code == 200, (path, r.text)


# --- Hypothesis: inference requests near the valid ones --------------------------------------
@dataclass(frozen=True)
class Tensor:
    """A model input as the fuzzer sees it: `width` for [N, width], None for [N]."""

    name: str
    datatype: str
    width: int | None


@dataclass(frozen=True)
class Target:
    model: str
    inputs: tuple[Tensor, ...]
    outputs: dict[str, int | None]  # name: width (None: [N])


IRIS = Target("iris", (Tensor("input", "FP32", 4),), {"label": None, "probabilities": 3})
LOOKUP = Target("lookup", (Tensor("index", "INT64", None),), {"value": None})
TEXT = Target(
    "text",
    (Tensor("text", "BYTES", None), Tensor("flag", "BOOL", None)),
    {"code": None, "negated": None},
)

_PACK = {"FP32": "<f", "INT64": "<q"}


def _values(datatype: str) -> st.SearchStrategy[Any]:
    """Valid values of the datatype, extremes included (float32's, float64's that overflow
    float32, any text)."""
    return {
        "FP32": st.floats(allow_nan=False, allow_infinity=False, width=32)
        | st.floats(-1e38, 1e38)
        | st.integers(-(2**24), 2**24),
        "INT64": st.integers(-len(LOOKUP_TABLE), len(LOOKUP_TABLE) - 1),  # in the table
        "BYTES": st.sampled_from(TEXT_KEYS) | st.text(max_size=6),
        "BOOL": st.booleans(),
    }[datatype]


def _wrong_values(datatype: str) -> st.SearchStrategy[Any]:
    """Values that are never valid for the datatype (or, for the lookup model's INT64 index,
    outside its table)."""
    never: st.SearchStrategy[Any] = st.none() | st.just({}) | st.just([])
    wrong: dict[str, st.SearchStrategy[Any]] = {
        "FP32": st.text(max_size=3) | st.booleans(),
        "INT64": st.text(max_size=3)
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x))
        | st.integers(len(LOOKUP_TABLE), 2**70)
        | st.integers(-(2**70), -len(LOOKUP_TABLE) - 1),
        "BYTES": st.booleans() | st.integers() | st.floats(allow_nan=False),
        "BOOL": st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    }
    return never | wrong.get(datatype, never)


_WRONG_DIMS = st.one_of(
    st.just(0),  # no elements
    st.integers(-(2**63), -1),
    st.integers(2**31, 2**64 - 1),  # more elements than the data holds
    st.sampled_from([1.0, 2.5, True, "4", None, [4], {}]),
)


def _nest(flat: list[Any], shape: list[int]) -> Any:
    for dim in reversed(shape[1:]):
        flat = [flat[i : i + dim] for i in range(0, len(flat), dim)]
    return flat


def _raw(datatype: str, flat: list[Any]) -> bytes:
    """The binary tensor data of `flat`."""
    if datatype == "BYTES":
        encoded = [v.encode() for v in flat]
        return b"".join(struct.pack("<I", len(v)) + v for v in encoded)
    if datatype == "BOOL":
        return bytes(int(v) for v in flat)
    return b"".join(struct.pack(_PACK[datatype], v) for v in flat)


@st.composite
def _valid(draw: st.DrawFn, target: Target) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A valid request (JSON, or binary tensor data for some inputs): its JSON document and the
    raw bytes of its binary inputs."""
    batch = draw(st.integers(1, 4))
    tensors, raw = [], {}
    for spec in target.inputs:
        shape = [batch] if spec.width is None else [batch, spec.width]
        flat = draw(st.lists(_values(spec.datatype), min_size=math.prod(shape), max_size=64))
        flat = flat[: math.prod(shape)]
        tensor: dict[str, Any] = {"name": spec.name, "shape": shape, "datatype": spec.datatype}
        if draw(st.integers(0, 3)) == 0:
            raw[spec.name] = _raw(spec.datatype, flat)
            tensor["parameters"] = {"binary_data_size": len(raw[spec.name])}
        else:
            tensor["data"] = _nest(flat, shape) if draw(st.booleans()) else flat
        tensors.append(tensor)
    doc: dict[str, Any] = {"inputs": draw(st.permutations(tensors))}
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(sorted(target.outputs)), min_size=1, unique=True))
        binary = st.sampled_from([{}, {"parameters": {"binary_data": True}}])
        doc["outputs"] = [{"name": n, **draw(binary)} for n in names]
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    return doc, raw


# Each mutation makes one thing of a valid request wrong, in place, and says whether the
# request is now surely invalid (a mutation may not apply: an earlier one changed its target).
Mutation = Callable[[st.DrawFn, dict[str, Any]], bool]


def _flat_data(tensor: dict[str, Any]) -> list[Any] | None:
    """The innermost first list of the tensor's data (the data itself when flat)."""
    data = tensor.get("data")
    while isinstance(data, list) and data and isinstance(data[0], list):
        data = data[0]
    return data if isinstance(data, list) else None


def _wrong_dim(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape:
        return False
    shape[draw(st.integers(0, len(shape) - 1))] = draw(_WRONG_DIMS)
    return True


def _wrong_rank(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    shape = tensor.get("shape")
    rank = len(shape) if isinstance(shape, list) else -1
    tensor["shape"] = draw(
        st.lists(st.integers(1, 4), max_size=18).filter(lambda s: len(s) != rank)
    )
    return True


def _wrong_shape(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    tensor["shape"] = draw(st.sampled_from([None, 4, "1,4", {"0": 1}, [[1, 4]]]))
    return True


def _wrong_value(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    flat = _flat_data(tensor)
    if not flat or not isinstance(tensor.get("datatype"), str):
        return False
    flat[draw(st.integers(0, len(flat) - 1))] = draw(_wrong_values(tensor["datatype"]))
    return True


def _wrong_count(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    flat = _flat_data(tensor)
    if flat is None:
        return False
    if flat and draw(st.booleans()):
        flat.pop()
    else:
        flat.append(flat[-1] if flat else 0)
    return True


def _misnested(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    """The right values, nested otherwise than the shape (one more level, or transposed)."""
    flat = _flat_data(tensor)
    shape = tensor.get("shape")
    if flat is None or not isinstance(shape, list) or len(flat) != math.prod(shape):
        return False
    if len(shape) == 2 and shape[0] != shape[1] and draw(st.booleans()):
        tensor["data"] = _nest(flat, shape[::-1])
    else:
        tensor["data"] = [[v] for v in flat]
    return True


def _deep(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    datatype = tensor.get("datatype")
    wrong: st.SearchStrategy[Any] = (
        _wrong_values(datatype) if isinstance(datatype, str) else st.none()
    )
    data: Any = draw(st.lists(wrong, min_size=1, max_size=3))
    for _ in range(draw(st.sampled_from([1, 2, 40, 300]))):
        data = [data]
    tensor["data"] = data
    return True


def _wrong_datatype(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    datatypes = ["FP16", "fp32", "BYTES", "FP64", "INT8", "UINT64", "BOOL", "", 3]
    current = tensor.get("datatype")
    tensor["datatype"] = draw(st.sampled_from([d for d in datatypes if d != current]))
    return True


def _wrong_name(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    tensor["name"] = draw(st.sampled_from(["nope", "", 3, None]))
    return True


def _missing_field(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    field = draw(st.sampled_from(["name", "shape", "datatype", "data"]))
    return tensor.pop(field, None) is not None


def _wrong_parameters(draw: st.DrawFn, tensor: dict[str, Any]) -> bool:
    params = tensor.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    tensor["parameters"] = draw(
        st.sampled_from([[], "x", 3, {"binary_data_size": -1}, {"binary_data_size": 2**63}])
        | st.integers(0, 64).filter(lambda n: n != size).map(lambda n: {"binary_data_size": n})
    )
    return True


_TENSOR_MUTATIONS: list[Callable[[st.DrawFn, dict[str, Any]], bool]] = [
    _wrong_dim, _wrong_rank, _wrong_shape, _wrong_value, _wrong_count, _misnested, _deep,
    _wrong_datatype, _wrong_name, _missing_field, _wrong_parameters,
]  # fmt: skip


def _tensor_in(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any] | None:
    inputs = doc.get("inputs")
    tensors = [t for t in inputs if isinstance(t, dict)] if isinstance(inputs, list) else []
    return draw(st.sampled_from(tensors)) if tensors else None


def _drop_or_repeat(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    inputs, tensor = doc.get("inputs"), _tensor_in(draw, doc)
    if tensor is None or not isinstance(inputs, list):
        return False
    if len(inputs) > 1 and draw(st.booleans()):
        inputs.remove(tensor)  # missing
    else:
        inputs.append(tensor)  # given twice
    return True


def _other_batch(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    inputs, tensor = doc.get("inputs"), _tensor_in(draw, doc)
    if tensor is None or not isinstance(inputs, list) or len(inputs) < 2:
        return False
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or type(shape[0]) is not int:
        return False
    shape[0] += 1  # the inputs disagree on the batch size
    return True


def _wrong_outputs(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    wrong: list[Any] = [
        [{"name": "nope"}],
        [{}],
        [{"name": 1}],
        "label",
        {"name": "label"},
        [{"name": "label", "parameters": {"binary_data": "yes"}}],
        [{"name": "label", "parameters": []}],
    ]
    doc["outputs"] = draw(st.sampled_from(wrong))
    return True


def _wrong_field(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    key = draw(st.sampled_from(["id", "parameters", "inputs"]))
    wrong: list[Any] = [3, [], {"binary_data_output": 1}, [1], False, 0]
    doc[key] = draw(st.sampled_from([*wrong, *(["x", ""] if key != "id" else [])]))
    return True


def _wrong_raw(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    if not raw:
        return False
    name = draw(st.sampled_from(sorted(raw)))
    raw[name] = raw[name][:-1] if draw(st.booleans()) else raw[name] + b"\0"
    return True


_REQUEST_MUTATIONS: list[Callable[[st.DrawFn, dict[str, Any], dict[str, bytes]], bool]] = [
    _drop_or_repeat, _other_batch, _wrong_outputs, _wrong_field, _wrong_raw,
]  # fmt: skip


def _mutate(draw: st.DrawFn, doc: dict[str, Any], raw: dict[str, bytes]) -> bool:
    """Make one thing of a request wrong, in place; whether it is now surely invalid."""
    tensor = _tensor_in(draw, doc)
    if tensor is not None and draw(st.booleans()):
        return draw(st.sampled_from(_TENSOR_MUTATIONS))(draw, tensor)
    return draw(st.sampled_from(_REQUEST_MUTATIONS))(draw, doc, raw)


@st.composite
def _request(draw: st.DrawFn, target: Target) -> tuple[bytes, dict[str, str], str]:
    """A request body, its headers, and what it is: "valid", "invalid" (surely), or
    "mutated" (perhaps still valid)."""
    doc, raw = draw(_valid(target))
    mutations = draw(st.sampled_from([0, 1, 1, 2]))
    surely = [_mutate(draw, doc, raw) for _ in range(mutations)]
    # two mutations may undo each other (an element dropped, then one added)
    kind = "valid" if not mutations else "invalid" if surely == [True] else "mutated"
    header = json.dumps(doc).encode()
    inputs = doc["inputs"] if isinstance(doc["inputs"], list) else []
    names = [t.get("name") for t in inputs if isinstance(t, dict)]
    tail = b"".join(raw[n] for n in names if isinstance(n, str) and n in raw)
    if not raw and draw(st.integers(0, 4)) != 0:
        return header, {}, kind
    declared: Any = len(header)
    if draw(st.integers(0, 4)) == 0:
        declared = draw(st.sampled_from([-1, 0, len(header) - 1, len(header) + 1, 10**30, "x"]))
        kind = "invalid"
    return header + tail, {"inference-header-content-length": str(declared)}, kind


def _answer_json(r: httpx.Response) -> Any:
    if r.headers["content-type"] == "application/octet-stream":
        return json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    return r.json()


def _assert_answer(r: httpx.Response, target: Target, kind: str) -> None:
    sent = r.request.content[:2000], dict(r.request.headers)
    assert r.status_code < 500, (r.text, sent)
    if kind == "valid":
        # served, with outputs of the request's batch size and of the model's shapes
        assert r.status_code == 200, (r.text, sent)
    elif kind == "invalid":
        assert r.status_code in (400, 413), (r.text, sent)
    if r.status_code != 200:
        assert r.status_code in (400, 413), (r.text, sent)
        error = r.json()["error"]
        assert isinstance(error, str)
        assert len(error) > 10, error
        return
    doc = _answer_json(r)
    assert len({o["shape"][0] for o in doc["outputs"]}) == 1, doc
    for output in doc["outputs"]:
        width = target.outputs[output["name"]]
        assert output["shape"][1:] == ([] if width is None else [width]), output


def _fuzz_infer(server: Server, target: Target) -> dict[str, int]:
    """The answers' statuses by kind of request, counted."""
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=10) as client:

        @settings(
            max_examples=NEAR_VALID_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(request=_request(target))
        def fuzz(request: tuple[bytes, dict[str, str], str]) -> None:
            body, headers, kind = request
            r = client.post(f"/v2/models/{target.model}/infer", content=body, headers=headers)
            key = f"{r.status_code} {kind}"
            statuses[key] = statuses.get(key, 0) + 1
            _assert_answer(r, target, kind)

        fuzz()
    _no_crash(server)
    # every kind was sent, and the valid ones reached the model (a floor, not a share:
    # hypothesis draws unevenly, about 1 in 5 valid on average, 8% seen at the lowest)
    assert statuses.get("200 valid", 0) >= NEAR_VALID_EXAMPLES // 30, statuses
    assert statuses.get("400 invalid", 0) >= NEAR_VALID_EXAMPLES // 6, statuses
    return statuses


def test_near_valid_requests_to_a_float_model(iris: Server) -> None:
    _fuzz_infer(iris, IRIS)


def test_near_valid_requests_to_an_integer_model(lookup: Server) -> None:
    _fuzz_infer(lookup, LOOKUP)


def test_near_valid_requests_to_a_text_and_bool_model(text: Server) -> None:
    _fuzz_infer(text, TEXT)


@pytest.fixture(scope="module")
def text_client(text: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=text.url, timeout=10) as client:
        yield client


@settings(max_examples=NEAR_VALID_EXAMPLES, deadline=None, database=None)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=64).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    binary_length=st.none() | st.integers(-5, 80).map(str),
)
def test_arbitrary_bytes_are_a_400(
    text_client: httpx.Client, body: bytes, binary_length: str | None
) -> None:
    headers = {} if binary_length is None else {"inference-header-content-length": binary_length}
    r = text_client.post("/v2/models/text/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


def test_binary_bytes_elements_are_checked(text: Server) -> None:
    """BYTES binary data: each element a 4-byte little-endian length, then its bytes."""

    def call(raw: bytes, count: int = 2) -> httpx.Response:
        doc = {
            "inputs": [
                {
                    "name": "text",
                    "shape": [count],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)},
                },
                {"name": "flag", "shape": [count], "datatype": "BOOL", "data": [True] * count},
            ]
        }
        header = json.dumps(doc).encode()
        headers = {"inference-header-content-length": str(len(header))}
        return httpx.post(text.url + "/v2/models/text/infer", content=header + raw, headers=headers)

    def element(s: bytes) -> bytes:
        return struct.pack("<I", len(s)) + s

    ok = call(element(b"cat") + element("émeu".encode()))
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == [0, 2]
    for raw in (
        element(b"cat"),  # one element short
        element(b"cat") + b"\x05\x00",  # a cut length
        element(b"cat") + struct.pack("<I", 2**32 - 1) + b"x",  # a length past the end
        element(b"cat") + element(b"\xff\xfe"),  # not UTF-8
        element(b"a") * 3,  # one too many
    ):
        r = call(raw)
        assert r.status_code == 400, (raw, r.text)
        assert r.json()["error"].startswith("input 'text': BYTES"), r.text
    _no_crash(text)


# --- what the fuzzers found, pinned --------------------------------------------------------------
@pytest.mark.parametrize("parameters", [[], False, 0, ""])
def test_found_parameters_of_a_falsy_wrong_type_are_400(iris: Server, parameters: Any) -> None:
    # were taken for "no parameters" and served
    body = {"inputs": [IRIS_ROW], "parameters": parameters}
    r = httpx.post(iris.url + "/v2/models/iris/infer", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "'parameters' must be an object"}


@pytest.mark.parametrize(
    ("data", "shape", "nested"),
    [
        ([[1, 2, 3, 4]], [1, 4], None),  # nested as the shape: fine
        ([[[1, 2, 3, 4]]], [1, 4], [1, 1, 4]),  # a level too many
        ([[1, 2], [3, 4], [5, 6], [7, 8]], [2, 4], [4, 2]),  # rows of the wrong length
        ([[1], [2], [3], [4]], [1, 4], [4, 1]),  # a column
    ],
)
def test_found_data_nested_otherwise_than_its_shape_is_400(
    iris: Server, data: list[Any], shape: list[int], nested: list[int] | None
) -> None:
    # was reshaped silently: a client's rows of 2 for a shape [2, 4] were served as rows of 4
    tensor = {"name": "input", "shape": shape, "datatype": "FP32", "data": data}
    r = httpx.post(iris.url + "/v2/models/iris/infer", json={"inputs": [tensor]}, timeout=10)
    if nested is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    assert r.json()["error"] == (
        f"input 'input': 'data' is nested as {nested}, not as its shape {shape}: give it flat "
        "(row-major) or nested as the shape"
    )


def test_found_nested_bytes_are_checked_alike(text: Server) -> None:
    flag = {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]}
    for data, status in (([["cat"], ["dog"]], 400), (["cat", "dog"], 200)):
        tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": data}
        r = httpx.post(text.url + "/v2/models/text/infer", json={"inputs": [tensor, flag]})
        assert r.status_code == status, r.text
        if status == 400:
            assert "input 'text': 'data' is nested as [2, 1], not as its shape [2]" in r.text


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        (
            b'{"inputs": "\xff"}',
            {},
            "request body is not valid JSON: it is not UTF-8 text (byte 12: b'\\xff')",
        ),
        (
            b'{"inputs": []}\xe9',
            {"inference-header-content-length": "15"},
            "the first 15 bytes of the request body (Inference-Header-Content-Length) is not "
            "valid JSON: it is not UTF-8 text (byte 14: b'\\xe9')",
        ),
    ],
)
def test_found_a_body_that_is_not_utf8_is_named_so(
    iris: Server, body: bytes, headers: dict[str, str], error: str
) -> None:
    # orjson's message was "str is not valid UTF-8: surrogates not allowed", at char 0
    r = httpx.post(iris.url + "/v2/models/iris/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": error}


IRIS_ROW = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
