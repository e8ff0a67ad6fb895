"""The V2 request parser and response builder, property-based: client mistakes are only ever
ProtocolError (a 4xx), and valid requests round-trip exactly."""

from __future__ import annotations

import math
import re
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from canarium_serving import metrics_contract as mc
from canarium_serving.fetch import (
    AZURE_ENV,
    GCS_ENV,
    S3_ENV,
    SECRET_ENV,
    mask_secrets,
    store_reason,
    store_spec,
)
from canarium_serving.metrics import Labels, ServingMetrics
from canarium_serving.metrics_contract import ReferenceStatistics, psi
from canarium_serving.model import ModelLoadError
from canarium_serving.protocol import (
    DATATYPE_TO_NUMPY,
    ONNX_TO_DATATYPE,
    InferenceRequest,
    ProtocolError,
    TensorSpec,
    array_to_bytes,
    build_binary_response,
    build_response,
    datatype_of,
    error_body,
    parse_binary_request,
    parse_request,
    parse_request_object,
    select_outputs,
)
from canarium_serving.stats import bucket_counts, fractions, quantile_edges
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The same examples every run (no example database either): what these tests cover, and so the
# mutation score, does not change from one run to the next.
SEEDED = settings(derandomize=True, database=None, deadline=None)

IRIS = (TensorSpec("input", "FP32", (-1, 4)),)
MULTI = (
    TensorSpec("x", "FP64", (-1, 2)),
    TensorSpec("ids", "INT64", (-1,)),
    TensorSpec("flags", "BOOL", (-1, 1)),
    TensorSpec("text", "BYTES", (-1,)),
)
INT_RANGES = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, dtype in DATATYPE_TO_NUMPY.items()
    if dtype.kind in "iu"
}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _parse(doc: Any, specs: tuple[TensorSpec, ...] = IRIS) -> InferenceRequest | None:
    try:
        body = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        return None  # hypothesis made something JSON cannot carry (e.g. a huge int)
    try:
        return parse_request(body, specs)
    except ProtocolError as exc:
        error = exc
    assert 400 <= error.status < 500
    assert error.message
    return None


@settings(SEEDED, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_document_is_a_request_or_a_4xx(doc: Any) -> None:
    _parse(doc)
    _parse(doc, MULTI)


@settings(SEEDED, max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_request_or_a_4xx(body: bytes) -> None:
    status = 0
    try:
        parse_request(body, IRIS)
    except ProtocolError as exc:
        status = exc.status
    assert status in (0, 400)


tensor_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", "ids", "flags", "text"]) | json_values,
        "shape": st.lists(st.integers(-2, 6), max_size=4) | json_values,
        "datatype": st.sampled_from(sorted(DATATYPE_TO_NUMPY)) | json_values,
        "data": st.lists(json_scalars, max_size=12)
        | st.lists(st.lists(st.floats(allow_nan=False), max_size=4), max_size=4)
        | json_values,
        "parameters": json_values,
    },
)


@settings(SEEDED, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(tensor_fields, max_size=5),
    st.none() | st.lists(st.fixed_dictionaries({"name": st.text(max_size=10)}), max_size=3),
    st.none() | st.text(max_size=5) | st.integers(),
)
def test_near_valid_requests_are_a_request_or_a_4xx(
    inputs: list[dict[str, Any]], outputs: Any, request_id: Any
) -> None:
    doc: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    if request_id is not None:
        doc["id"] = request_id
    for specs in (IRIS, MULTI):
        request = _parse(doc, specs)
        if request is not None:
            assert set(request.inputs) == {s.name for s in specs}
            for spec in specs:
                arr = request.inputs[spec.name]
                assert arr.dtype == DATATYPE_TO_NUMPY[spec.datatype]
                assert arr.ndim == len(spec.shape)


@settings(SEEDED, max_examples=200)
@given(
    st.integers(1, 20).flatmap(
        lambda n: st.lists(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            min_size=4 * n,
            max_size=4 * n,
        )
    ),
    st.booleans(),
)
def test_valid_fp32_requests_round_trip(values: list[float], nested: bool) -> None:
    n = len(values) // 4
    data: Any = [values[i * 4 : i * 4 + 4] for i in range(n)] if nested else values
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32", "data": data}],
        }
    )
    request = parse_request(body, IRIS)
    assert request.id == "r1"
    assert request.batch_size == n
    np.testing.assert_array_equal(
        request.inputs["input"], np.asarray(values, dtype=np.float32).reshape(n, 4)
    )


@settings(SEEDED, max_examples=200)
@given(st.sampled_from(sorted(INT_RANGES)), st.data())
def test_integer_datatypes_check_their_range(datatype: str, data: st.DataObject) -> None:
    lo, hi = INT_RANGES[datatype]
    spec = (TensorSpec("v", datatype, (-1,)),)
    inside = data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=8))
    body = orjson.dumps(
        {"inputs": [{"name": "v", "shape": [len(inside)], "datatype": datatype, "data": inside}]}
    )
    arr = parse_request(body, spec).inputs["v"]
    assert arr.tolist() == inside
    # one step past either end (orjson carries up to 2**64 - 1 and down to -2**63)
    candidates = [v for v in (lo - 1, hi + 1) if -(2**63) <= v <= 2**64 - 1]
    outside = data.draw(st.sampled_from(candidates))
    body = orjson.dumps(
        {"inputs": [{"name": "v", "shape": [1], "datatype": datatype, "data": [outside]}]}
    )
    with pytest.raises(ProtocolError, match=r"out of range|integers"):
        parse_request(body, spec)


def test_multi_input_request() -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2.5, 3, 4]},
                {"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -8]},
                {"name": "flags", "shape": [2, 1], "datatype": "BOOL", "data": [[True], [False]]},
                {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "é"]},
            ],
            "outputs": [{"name": "y"}],
        }
    )
    request = parse_request(body, MULTI)
    assert request.inputs["x"].dtype == np.float64
    assert request.inputs["ids"].tolist() == [7, -8]
    assert request.inputs["flags"].tolist() == [[True], [False]]
    assert request.inputs["text"].tolist() == ["a", "é"]
    assert request.outputs == ["y"]
    bad = orjson.loads(body)
    bad["inputs"][1]["shape"] = [3]
    bad["inputs"][1]["data"] = [1, 2, 3]
    with pytest.raises(ProtocolError, match="batch size"):
        parse_request(orjson.dumps(bad), MULTI)


def test_select_outputs() -> None:
    assert select_outputs(None, ["a", "b"]) == ["a", "b"]
    assert select_outputs(["b", "b"], ["a", "b"]) == ["b"]
    with pytest.raises(ProtocolError, match="not outputs"):
        select_outputs(["c"], ["a", "b"])


@settings(SEEDED)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
)
def test_response_round_trip(floats: list[float], ints: list[int]) -> None:
    out: dict[str, np.ndarray[Any, Any]] = {
        "probabilities": np.asarray(floats, dtype=np.float32).reshape(len(floats), 1),
        "label": np.asarray(ints, dtype=np.int64),
        "names": np.asarray([str(i) for i in ints], dtype=object),
    }
    doc = orjson.loads(build_response("m", "3", out, "id-1"))
    assert doc["model_name"] == "m"
    assert doc["model_version"] == "3"
    assert doc["id"] == "id-1"
    got = {o["name"]: o for o in doc["outputs"]}
    assert got["probabilities"]["datatype"] == "FP32"
    assert got["probabilities"]["shape"] == [len(floats), 1]
    np.testing.assert_array_equal(
        np.asarray(got["probabilities"]["data"], dtype=np.float32), floats
    )
    assert got["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [len(ints)],
        "data": ints,
    }
    assert got["names"]["datatype"] == "BYTES"
    assert got["names"]["data"] == [str(i) for i in ints]


# --- reference statistics and live histograms agree -------------------------------------


@settings(SEEDED)
@given(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=2, max_size=200),
    st.integers(2, 12),
)
def test_live_histograms_match_reference_binning(values: list[float], bins: int) -> None:
    x = np.asarray(values, dtype=np.float32)
    edges = quantile_edges(x, bins)
    assert edges == sorted(set(edges))
    assert len(edges) <= bins - 1 or len(edges) == 1
    ref = bucket_counts(x, edges)
    assert ref.sum() == len(values)
    reference = ReferenceStatistics.model_validate(
        {
            "samples": len(values),
            "features": [
                {
                    "name": "f",
                    "input": "input",
                    "column": 0,
                    "edges": edges,
                    "fractions": fractions(ref),
                }
            ],
            "outputs": [],
        }
    )
    metrics = ServingMetrics(Labels("m", "1"))
    metrics.configure_model(platform="p", sha256="s", uri="u", outputs=[], reference=reference)
    # the same values arrive as single-row requests: the live counts equal the reference counts
    for v in x:
        metrics.observe_execution({"input": np.asarray([[v]], dtype=np.float32)}, {}, 1)
    text = metrics.exposition().decode()
    live = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{mc.INPUT_FEATURE_VALUE.series}{{")
    ]
    assert live == np.cumsum(ref).astype(float).tolist()


def test_psi() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.9, 0.1], [0.1, 0.9]) > 1.0
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))


# --- object stores: URI and environment -> obstore config (no network) -------------------


def test_s3_env_maps_to_the_store_config() -> None:
    spec = store_spec(
        "s3://models-bucket/iris/v%201/model.onnx",
        {
            "AWS_ENDPOINT_URL": "https://ignored.example.org",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_REGION": "eu-west-3",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_SESSION_TOKEN": "t",
            "AWS_PROFILE": "ignored: no profiles in pods",
            "HOME": "/root",
        },
    )
    assert (spec.kind, spec.bucket, spec.path) == ("s3", "models-bucket", "iris/v 1/model.onnx")
    assert spec.config == {
        "endpoint": "http://127.0.0.1:9000",  # the S3-specific endpoint wins
        "region": "eu-west-3",  # AWS_REGION wins over AWS_DEFAULT_REGION
        "access_key_id": "k",
        "secret_access_key": "s",
        "session_token": "t",
    }
    assert spec.allow_http  # a plain-http endpoint must be allowed explicitly


def test_s3_web_identity_is_a_credential_source_and_anonymous_is_the_fallback() -> None:
    irsa = store_spec(
        "s3://b/k.onnx",
        {
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/models",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/token",
        },
    )
    assert irsa.config == {
        "role_arn": "arn:aws:iam::123456789012:role/models",
        "web_identity_token_file": "/var/run/secrets/eks.amazonaws.com/token",
        "region": "us-east-1",
    }
    assert not irsa.allow_http
    pod_identity = store_spec(
        "s3://b/k.onnx", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1"}
    )
    assert "skip_signature" not in pod_identity.config
    # no credential source at all: anonymous, as public buckets want
    assert store_spec("s3://b/k.onnx", {}).config == {
        "skip_signature": "true",
        "region": "us-east-1",
    }
    # ... unless asked to look further (the node's instance metadata)
    explicit = store_spec("s3://b/k.onnx", {"AWS_SKIP_SIGNATURE": "false"})
    assert explicit.config["skip_signature"] == "false"


def test_gcs_and_azure_env_map_to_their_stores() -> None:
    gcs = store_spec(
        "gs://bucket/m.onnx", {"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/sa.json"}
    )
    assert (gcs.kind, gcs.bucket, gcs.path) == ("gcs", "bucket", "m.onnx")
    assert gcs.config == {"application_credentials": "/var/secrets/sa.json"}
    azure_env = {
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
        "AZURE_CLIENT_ID": "cid",
        "AZURE_TENANT_ID": "tid",
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
    }
    for scheme in ("az", "azure"):
        az = store_spec(f"{scheme}://models/iris/m.onnx", azure_env)
        assert (az.kind, az.bucket, az.path) == ("azure", "models", "iris/m.onnx")
        assert az.config == {
            "account_name": "acct",
            "client_id": "cid",
            "tenant_id": "tid",
            "federated_token_file": "/var/run/secrets/azure/tokens/azure-identity-token",
        }


@pytest.mark.parametrize(
    ("uri", "env", "message"),
    [
        ("s3://bucket", {}, "must look like s3://<bucket or container>/<key>"),
        ("s3://bucket/", {}, "must look like"),
        ("s3://bucket/k?X-Amz-Signature=abc", {}, "must look like"),
        ("s3://b/k", {"AWS_ENDPOINT_URL": "minio:9000"}, "must be an http(s) URL"),
        ("s3://b/k", {"AWS_ACCESS_KEY_ID": "k"}, "AWS_SECRET_ACCESS_KEY is not"),
        ("az://container/blob", {}, "set AZURE_STORAGE_ACCOUNT_NAME"),
    ],
)
def test_object_store_uri_and_env_mistakes(uri: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ModelLoadError, match=re.escape(message)) as info:
        store_spec(uri, env)
    assert "abc" not in str(info.value)  # a presigned query string is never echoed


def test_store_reason_keeps_the_store_s_answer_and_drops_the_request_dump() -> None:
    class PermissionDeniedError(Exception):
        pass

    raw = (
        "The operation lacked the necessary privileges to complete for path k: Error performing "
        "GET http://127.0.0.1:1/b/k in 2ms - Server returned non-2xx status code: 403 "
        'Forbidden: <?xml version="1.0"?> <Error><Code>SignatureDoesNotMatch</Code><Message>'
        "The signature does not match &#34;here&#34;.</Message><StringToSign>AWS4</StringToSign>"
        "</Error>\n\nDebug source:\nPermissionDenied { headers: x-amz-security-token: t }"
    )
    assert store_reason(PermissionDeniedError(raw)) == (
        'HTTP 403 Forbidden: SignatureDoesNotMatch: The signature does not match "here".'
    )
    refused = "Generic S3 error: Error performing GET http://h/b/k - HTTP error: refused"
    assert store_reason(Exception(refused + "\n\nDebug source:\nGeneric {}")) == refused
    assert store_reason(Exception("x" * 500)).endswith("...")
    assert store_reason(Exception("")) == "Exception"


def test_mask_secrets_hides_every_credential_value() -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t/value",
        "AWS_SESSION_TOKEN": "tok3n",
        "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=abcd",
        "AWS_ACCESS_KEY_ID": "AKIAPUBLIC",  # an identifier, not a secret
        "AZURE_CLIENT_SECRET": "abc",  # too short to mask without garbling the text
    }
    text = "a s3cr3t/value b tok3n c sv=2024&sig=abcd d AKIAPUBLIC e abc"
    assert mask_secrets(text, env) == "a *** b *** c *** d AKIAPUBLIC e abc"
    assert {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET"} <= SECRET_ENV


# --- what each client mistake is told (the messages a user reads) ------------------------


def _body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def _tensor(data: Any, shape: list[Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 4] if shape is None else shape,
        "data": data,
        **fields,
    }


ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "request body must be a JSON object, got array"),
        (b'"x"', "request body must be a JSON object, got string"),
        (b"3", "request body must be a JSON object, got number"),
        (b"1.5", "request body must be a JSON object, got number"),
        (b"true", "request body must be a JSON object, got boolean"),
        (b"null", "request body must be a JSON object, got null"),
        (b"{}", "'inputs' must be a non-empty array of tensors"),
        (_body(), "'inputs' must be a non-empty array of tensors"),
        (b'{"inputs": {}}', "'inputs' must be a non-empty array of tensors"),
        (_body(_tensor(ROW), 3), "inputs[1] must be an object, got number"),
        (_body("x"), "inputs[0] must be an object, got string"),
        (_body([]), "inputs[0] must be an object, got array"),
        (_body(_tensor(ROW, name=1)), "inputs[0]: 'name' must be a string"),
        (
            _body(_tensor(ROW, name="x")),
            "input 'x' is not an input of this model; expected ['input']",
        ),
        (_body(_tensor(ROW), _tensor(ROW)), "input 'input' is given more than once"),
        (_body(_tensor(ROW, datatype=None)), "input 'input': 'datatype' must be a string"),
        (
            _body(_tensor(ROW, datatype="FLOAT")),
            "input 'input': unknown datatype 'FLOAT'; known: ['BOOL', 'BYTES', 'FP32', 'FP64', "
            "'INT16', 'INT32', 'INT64', 'INT8', 'UINT16', 'UINT32', 'UINT64', 'UINT8']",
        ),
        (
            _body(_tensor(ROW, datatype="FP64")),
            "input 'input': datatype is FP64 but the model expects FP32",
        ),
        (_body(_tensor(ROW, shape="1,4")), "input 'input': 'shape' must be an array of integers"),
        (
            _body({k: v for k, v in _tensor(ROW).items() if k != "shape"}),
            "input 'input': 'shape' must be an array of integers",
        ),
        (
            _body(_tensor(ROW, shape=[1, -4])),
            "input 'input': shape [1, -4] must contain non-negative integers only",
        ),
        (
            _body(_tensor(ROW, shape=[True, 4])),
            "input 'input': shape [True, 4] must contain non-negative integers only",
        ),
        (
            _body(_tensor(ROW, shape=[1.0, 4])),
            "input 'input': shape [1.0, 4] must contain non-negative integers only",
        ),
        (_body(_tensor([], shape=[0, 4])), "input 'input': shape [0, 4] has no elements"),
        (
            _body(_tensor(ROW, shape=[4])),
            "input 'input': shape [4] has 1 dimension(s), the model expects 2 like [-1, 4]",
        ),
        (
            _body(_tensor(ROW[:3], shape=[1, 3])),
            "input 'input': shape [1, 3] does not match the model's [-1, 4]",
        ),
        (
            _body({k: v for k, v in _tensor(ROW).items() if k != "data"}),
            "input 'input': 'data' is missing (or parameters 'binary_data_size' with the "
            "Inference-Header-Content-Length header)",
        ),
        (_body(_tensor({"a": 1})), "input 'input': 'data' must be an array, got object"),
        (_body(_tensor(None)), "input 'input': 'data' must be an array, got null"),
        (_body(_tensor(ROW, shape=[2, 4])), "input 'input': shape [2, 4] needs 8 elements, got 4"),
        (_body(_tensor(1.0)), "input 'input': shape [1, 4] needs 4 elements, got 1"),
        (
            _body(_tensor([[1.0, 2.0], [3.0]])),
            "input 'input': 'data' must be a rectangular array of FP32 values",
        ),
        (
            _body(_tensor(["a", "b", "c", "d"])),
            "input 'input': datatype FP32 needs numbers, got strings",
        ),
        (
            _body(_tensor([True, False, True, True])),
            "input 'input': datatype FP32 needs numbers, got booleans",
        ),
        (
            _body(_tensor([1.0, None, 1.0, 1.0])),
            "input 'input': datatype FP32 needs numbers, got mixed or nested values",
        ),
        (_body(_tensor(ROW), id=7), "'id' must be a string"),
        (_body(_tensor(ROW), parameters=[1]), "'parameters' must be an object"),
        (
            _body(_tensor(ROW), outputs="label"),
            "'outputs' must be an array of {\"name\": ...} objects",
        ),
        (
            _body(_tensor(ROW), outputs=[{"name": "label"}, {"name": 3}]),
            "outputs[1] must be an object with a string 'name'",
        ),
        (
            _body(_tensor(ROW), outputs=[{"name": "label"}, "probabilities"]),
            "outputs[1] must be an object with a string 'name'",
        ),
    ],
)
def test_client_mistakes_are_400_with_a_message_that_says_what_is_wrong(
    body: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(body, IRIS)
    assert caught.value.status == 400
    assert caught.value.message == message
    assert str(caught.value) == message


def test_invalid_json_says_so() -> None:
    with pytest.raises(ProtocolError, match=r"^request body is not valid JSON: .+") as caught:
        parse_request(b'{"inputs": [', IRIS)
    assert caught.value.status == 400


def test_a_python_caller_is_told_the_type_it_passed() -> None:
    with pytest.raises(ProtocolError, match=r"^inputs\[0\] must be an object, got tuple$"):
        parse_request_object({"inputs": [("input", "FP32")]}, IRIS)


def test_missing_inputs_are_named_in_the_models_order() -> None:
    body = _body({"name": "ids", "shape": [1], "datatype": "INT64", "data": [3]})
    with pytest.raises(ProtocolError) as caught:
        parse_request(body, MULTI)
    assert caught.value.message == "missing model input(s): ['x', 'flags', 'text']"


# --- datatypes: every V2 datatype reaches the model as the numpy dtype it names -----------

DATATYPE_EXAMPLES: list[tuple[str, list[Any], np.dtype[Any]]] = [
    ("BOOL", [True, False], np.dtype(np.bool_)),
    ("UINT8", [0, 255], np.dtype(np.uint8)),
    ("UINT16", [0, 65535], np.dtype(np.uint16)),
    ("UINT32", [0, 4294967295], np.dtype(np.uint32)),
    ("UINT64", [0, 18446744073709551615], np.dtype(np.uint64)),
    ("INT8", [-128, 127], np.dtype(np.int8)),
    ("INT16", [-32768, 32767], np.dtype(np.int16)),
    ("INT32", [-2147483648, 2147483647], np.dtype(np.int32)),
    ("INT64", [-9223372036854775808, 9223372036854775807], np.dtype(np.int64)),
    ("FP32", [1.5, -2], np.dtype(np.float32)),
    ("FP64", [0.1, 3], np.dtype(np.float64)),
    ("BYTES", ["a", "é"], np.dtype(np.object_)),
]


@pytest.mark.parametrize(("datatype", "data", "dtype"), DATATYPE_EXAMPLES)
def test_every_v2_datatype_arrives_as_its_numpy_dtype(
    datatype: str, data: list[Any], dtype: np.dtype[Any]
) -> None:
    spec = (TensorSpec("v", datatype, (-1,)),)
    body = _body({"name": "v", "shape": [2], "datatype": datatype, "data": data})
    arr = parse_request(body, spec).inputs["v"]
    assert arr.dtype == dtype
    assert arr.tolist() == data
    # and back out: a model output of that dtype is answered with the same datatype
    out = orjson.loads(build_response("m", "1", {"y": arr}))["outputs"][0]
    assert out == {"name": "y", "datatype": datatype, "shape": [2], "data": data}


def test_onnx_tensor_types_map_to_v2_datatypes() -> None:
    # What the model metadata endpoint shows for onnxruntime's types (model.py uses this table).
    assert ONNX_TO_DATATYPE == {
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


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("BOOL", [1, 0], "input 'v': datatype BOOL needs true/false values"),
        ("INT64", [1.5, 2], "input 'v': datatype INT64 needs integers, got floating-point numbers"),
        (
            "INT64",
            [1.0, 2.0],
            "input 'v': datatype INT64 needs integers, got floating-point numbers",
        ),
        ("INT32", [True, False], "input 'v': datatype INT32 needs integers, got booleans"),
        ("UINT8", ["1", "2"], "input 'v': datatype UINT8 needs integers, got strings"),
        (
            "UINT64",
            [1, None],
            "input 'v': datatype UINT64 needs integers, got mixed or nested values",
        ),
        ("UINT64", [True, 2**63], "input 'v': datatype UINT64 needs integers, got booleans"),
        ("INT64", [2, False], "input 'v': datatype INT64 needs integers, got booleans"),
        ("FP64", [2.5, True], "input 'v': datatype FP64 needs numbers, got booleans"),
        ("FP32", [1, False], "input 'v': datatype FP32 needs numbers, got booleans"),
        ("INT8", [1, 128], "input 'v': a value is out of range for INT8 [-128, 127]"),
        ("INT8", [-129, 1], "input 'v': a value is out of range for INT8 [-128, 127]"),
        ("UINT16", [-1, 1], "input 'v': a value is out of range for UINT16 [0, 65535]"),
        (
            "INT64",
            [1, 2**63],
            "input 'v': a value is out of range for INT64 "
            "[-9223372036854775808, 9223372036854775807]",
        ),
        (
            "INT32",
            [2**63, 1],
            "input 'v': a value is out of range for INT32 [-2147483648, 2147483647]",
        ),
        (
            "UINT64",
            [-1, 2**63],
            "input 'v': a value is out of range for UINT64 [0, 18446744073709551615]",
        ),
        ("BYTES", ["a", 1], "input 'v': datatype BYTES needs strings, got number"),
        ("BYTES", [["a"], [True]], "input 'v': datatype BYTES needs strings, got boolean"),
        ("BYTES", [None, "a"], "input 'v': datatype BYTES needs strings, got null"),
        ("BYTES", [{"a": "b"}, "a"], "input 'v': datatype BYTES needs strings, got object"),
        ("BYTES", ["a", "b", "c"], "input 'v': shape [2] needs 2 elements, got 3"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_400(
    datatype: str, data: list[Any], message: str
) -> None:
    spec = (TensorSpec("v", datatype, (-1,)),)
    with pytest.raises(ProtocolError) as caught:
        parse_request(_body({"name": "v", "shape": [2], "datatype": datatype, "data": data}), spec)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_true_and_false_next_to_numbers_are_not_taken_for_1_and_0() -> None:
    nested = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, True, 8.0]]
    with pytest.raises(ProtocolError) as caught:
        parse_request(_body(_tensor(nested, shape=[2, 4])), IRIS)
    assert caught.value.message == "input 'input': datatype FP32 needs numbers, got booleans"
    item = {"name": "v", "shape": [2], "datatype": "INT8", "data": [1, False]}
    with pytest.raises(ProtocolError, match=r"^input 'v': datatype INT8 needs integers, got bool"):
        parse_request_object({"inputs": [item]}, (TensorSpec("v", "INT8", (-1,)),))
    # "true" and "false" elsewhere in the request (an id, a parameter) are no booleans in data
    body = _body(_tensor(ROW), id="true", parameters={"false": True})
    assert parse_request(body, IRIS).inputs["input"].tolist() == [pytest.approx(ROW)]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("FP64", [1j, 2.0], "input 'v': datatype FP64 needs numbers, got unsupported values"),
        ("INT64", [b"a", b"b"], "input 'v': datatype INT64 needs integers, got unsupported values"),
    ],
)
def test_values_no_json_can_hold_are_unsupported_for_a_python_caller(
    datatype: str, data: list[Any], message: str
) -> None:
    spec = (TensorSpec("v", datatype, (-1,)),)
    item = {"name": "v", "shape": [2], "datatype": datatype, "data": data}
    with pytest.raises(ProtocolError) as caught:
        parse_request_object({"inputs": [item]}, spec)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_integers_beyond_any_json_parser_are_out_of_range_for_a_python_caller() -> None:
    spec = (TensorSpec("v", "UINT64", (-1,)),)
    item = {"name": "v", "shape": [2], "datatype": "UINT64", "data": [1, 2**64]}
    with pytest.raises(ProtocolError, match=r"out of range for UINT64"):
        parse_request_object({"inputs": [item]}, spec)


def test_uint64_values_above_int64_keep_their_exact_value() -> None:
    spec = (TensorSpec("v", "UINT64", (-1, 2)),)
    data = [[1, 2**63 + 1], [0, 2**64 - 1]]
    body = _body({"name": "v", "shape": [2, 2], "datatype": "UINT64", "data": data})
    arr = parse_request(body, spec).inputs["v"]
    assert arr.dtype == np.uint64
    assert arr.tolist() == data


def test_ints_are_accepted_for_float_inputs() -> None:
    arr = parse_request(_body(_tensor([1, 2, 3, 4])), IRIS).inputs["input"]
    assert arr.dtype == np.float32
    assert arr.tolist() == [[1.0, 2.0, 3.0, 4.0]]


@pytest.mark.parametrize(
    ("datatype", "flat"),
    [
        ("BOOL", [True, False, False, True]),
        ("INT16", [1, -2, 3, -4]),
        ("UINT64", [1, 2**63, 3, 2**64 - 1]),
        ("FP64", [0.5, 1, 2, 3]),
        ("BYTES", ["a", "b", "c", "d"]),
    ],
)
def test_flat_data_takes_the_shape_of_the_request(datatype: str, flat: list[Any]) -> None:
    # V2 `data` may be flat, row-major, whatever the shape.
    spec = (TensorSpec("v", datatype, (-1, 2)),)
    body = _body({"name": "v", "shape": [2, 2], "datatype": datatype, "data": flat})
    arr = parse_request(body, spec).inputs["v"]
    assert arr.shape == (2, 2)
    assert arr.tolist() == [flat[:2], flat[2:]]


def test_a_single_scalar_is_a_one_element_tensor() -> None:
    arr = parse_request(_body(_tensor(2.5, shape=[1, 1])), (TensorSpec("input", "FP32", (-1, 1)),))
    assert arr.inputs["input"].tolist() == [[2.5]]
    text = (TensorSpec("t", "BYTES", (1,)),)
    body = _body({"name": "t", "shape": [1], "datatype": "BYTES", "data": "hello"})
    assert parse_request(body, text).inputs["t"].tolist() == ["hello"]


def test_nested_bytes_data_takes_the_requested_shape() -> None:
    spec = (TensorSpec("t", "BYTES", (-1, 2)),)
    data = [["a", "b"], ["c", "d"], ["e", "f"]]
    body = _body({"name": "t", "shape": [3, 2], "datatype": "BYTES", "data": data})
    arr = parse_request(body, spec).inputs["t"]
    assert arr.shape == (3, 2)
    assert arr.tolist() == data


# --- shapes ------------------------------------------------------------------------------


def test_a_shape_has_at_most_16_dimensions() -> None:
    for rank, ok in ((16, True), (17, False)):
        spec = (TensorSpec("v", "FP64", (-1,) * rank),)
        body = _body({"name": "v", "shape": [1] * rank, "datatype": "FP64", "data": [1.0]})
        if ok:
            assert parse_request(body, spec).inputs["v"].shape == (1,) * rank
        else:
            with pytest.raises(ProtocolError) as caught:
                parse_request(body, spec)
            assert caught.value.message == "input 'v': shape has 17 dimensions, at most 16"


def test_a_fixed_dimension_of_the_model_must_match_even_when_zero() -> None:
    spec = (TensorSpec("v", "FP64", (-1, 0)),)
    body = _body({"name": "v", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]})
    with pytest.raises(ProtocolError, match=r"shape \[1, 2\] does not match the model's \[-1, 0\]"):
        parse_request(body, spec)


def test_fixed_dimensions_equal_to_the_models_are_accepted() -> None:
    spec = (TensorSpec("v", "FP64", (2, 3)),)
    body = _body({"name": "v", "shape": [2, 3], "datatype": "FP64", "data": list(range(6))})
    assert parse_request(body, spec).inputs["v"].shape == (2, 3)


def test_scalar_inputs_take_no_part_in_the_batch_size() -> None:
    specs = (TensorSpec("t", "FP32", ()), TensorSpec("x", "FP32", (-1, 2)))
    body = _body(
        {"name": "t", "shape": [], "datatype": "FP32", "data": 0.5},
        {"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
    )
    request = parse_request(body, specs)
    assert request.inputs["t"].shape == ()
    assert request.batch_size == 1  # the first input is a scalar: one row
    body = _body(
        {"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
        {"name": "t", "shape": [], "datatype": "FP32", "data": 0.5},
    )
    assert parse_request(body, specs).batch_size == 3


def test_a_request_without_inputs_has_no_rows() -> None:
    assert InferenceRequest(inputs={}).batch_size == 0


# --- the rest of a request: id, parameters, outputs ---------------------------------------


def test_id_and_parameters_are_carried_and_default_to_none_and_empty() -> None:
    request = parse_request(_body(_tensor(ROW), id="req-1", parameters={"a": 1}), IRIS)
    assert (request.id, request.parameters, request.outputs) == ("req-1", {"a": 1}, None)
    request = parse_request(_body(_tensor(ROW), parameters=None), IRIS)
    assert (request.id, request.parameters, request.outputs) == (None, {}, None)
    assert InferenceRequest(inputs={}).parameters == {}
    assert InferenceRequest(inputs={}).id is None
    assert InferenceRequest(inputs={}).outputs is None


def test_an_empty_outputs_list_means_every_output() -> None:
    request = parse_request(_body(_tensor(ROW), outputs=[]), IRIS)
    assert request.outputs is None
    assert select_outputs(request.outputs, ["label", "probabilities"]) == ["label", "probabilities"]


def test_requested_outputs_keep_their_order_without_repeats() -> None:
    request = parse_request(
        _body(_tensor(ROW), outputs=[{"name": "b"}, {"name": "a"}, {"name": "b"}]), IRIS
    )
    assert request.outputs == ["b", "a", "b"]
    assert select_outputs(request.outputs, ["a", "b"]) == ["b", "a"]


def test_unknown_outputs_are_named_with_the_available_ones() -> None:
    with pytest.raises(ProtocolError) as caught:
        select_outputs(["a", "c", "d"], ("a", "b"))
    assert caught.value.status == 400
    assert caught.value.message == (
        "requested output(s) ['c', 'd'] are not outputs of this model; available: ['a', 'b']"
    )


# --- responses ---------------------------------------------------------------------------


def test_tensor_spec_json_is_v2_metadata() -> None:
    spec = TensorSpec("input", "FP32", (-1, 4))
    assert orjson.dumps(spec.to_json()) == b'{"name":"input","datatype":"FP32","shape":[-1,4]}'


def test_response_has_an_id_only_when_the_request_had_one() -> None:
    out = {"y": np.asarray([1.5], dtype=np.float64)}
    assert orjson.loads(build_response("m", "7", out)) == {
        "model_name": "m",
        "model_version": "7",
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [1], "data": [1.5]}],
    }
    assert orjson.loads(build_response("m", "7", out, ""))["id"] == ""


def test_text_outputs_are_strings_in_the_response() -> None:
    outputs = {
        "objects": np.asarray([b"caf\xc3\xa9", b"\xff", "plain", 3], dtype=object),
        "unicode": np.asarray([["a", "bc"]]),
        "bytes": np.asarray([b"x", b"yz"]),
    }
    doc = orjson.loads(build_response("m", "1", outputs))
    got = {o["name"]: o for o in doc["outputs"]}
    assert got["objects"] == {
        "name": "objects",
        "datatype": "BYTES",
        "shape": [4],
        "data": ["café", "\ufffd", "plain", "3"],
    }
    assert got["unicode"] == {
        "name": "unicode",
        "datatype": "BYTES",
        "shape": [1, 2],
        "data": ["a", "bc"],
    }
    assert got["bytes"] == {"name": "bytes", "datatype": "BYTES", "shape": [2], "data": ["x", "yz"]}


def test_a_scalar_output_is_a_one_element_tensor_of_shape_empty() -> None:
    doc = orjson.loads(build_response("m", "1", {"s": np.asarray(2, dtype=np.int32)}))
    assert doc["outputs"] == [{"name": "s", "datatype": "INT32", "shape": [], "data": [2]}]


def test_an_output_dtype_without_a_v2_datatype_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^no V2 datatype for numpy dtype float16$"):
        datatype_of(np.zeros(2, dtype=np.float16))


def test_error_body_is_the_v2_error_object() -> None:
    assert error_body("input 'x' is wrong") == b'{"error":"input \'x\' is wrong"}'


def test_protocol_error_defaults_to_400() -> None:
    exc = ProtocolError("nope")
    assert (exc.status, exc.message, str(exc)) == (400, "nope", "nope")
    assert ProtocolError("gone", 404).status == 404


def test_every_property_test_here_is_seeded() -> None:
    tests = [f for f in globals().values() if getattr(f, "is_hypothesis_test", False)]
    assert len(tests) >= 7
    for test in tests:
        chosen = test._hypothesis_internal_use_settings
        assert chosen.derandomize, test.__name__
        assert chosen.database is None, test.__name__


# --- nested data, bodies that are not UTF-8, and the binary extension's edges --------------


@pytest.mark.parametrize(
    ("datatype", "data", "shape", "nested"),
    [
        ("FP64", [[1, 2], [3, 4], [5, 6]], [2, 3], [3, 2]),  # a transposed matrix
        ("INT64", [[1, 2, 3, 4, 5, 6]], [2, 3], [1, 6]),  # one row of six for two of three
        ("BOOL", [[True], [False], [True], [False], [True], [False]], [2, 3], [6, 1]),
        ("FP32", [[[1, 2, 3]], [[4, 5, 6]]], [2, 3, 1], [2, 1, 3]),
        ("BYTES", [["a", "b"], ["c", "d"], ["e", "f"]], [2, 3], [3, 2]),
        # ragged nesting: the lengths along the first elements, the first one an empty row
        ("BYTES", [[], ["a", "b", "c", "d", "e", "f"]], [2, 3], [2, 0]),
    ],
)
def test_data_nested_otherwise_than_its_shape_is_refused_not_reshaped(
    datatype: str, data: list[Any], shape: list[int], nested: list[int]
) -> None:
    spec = (TensorSpec("v", datatype, (-1,) * len(shape)),)
    body = _body({"name": "v", "shape": shape, "datatype": datatype, "data": data})
    with pytest.raises(ProtocolError) as caught:
        parse_request(body, spec)
    assert (caught.value.status, caught.value.message) == (
        400,
        f"input 'v': 'data' is nested as {nested}, not as its shape {shape}: "
        "give it flat (row-major) or nested as the shape",
    )


def test_a_column_of_strings_nested_as_its_shape_is_accepted() -> None:
    spec = (TensorSpec("t", "BYTES", (-1, 1)),)
    for data in ([["a"], ["b"]], [["only"]]):
        shape = [len(data), 1]
        body = _body({"name": "t", "shape": shape, "datatype": "BYTES", "data": data})
        arr = parse_request(body, spec).inputs["t"]
        assert arr.shape == tuple(shape)
        assert arr.tolist() == data


def test_a_body_that_is_not_utf8_names_the_first_bad_byte() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(b'{"inputs": [\xff\xfe]}', IRIS)
    assert (caught.value.status, caught.value.message) == (
        400,
        "request body is not valid JSON: it is not UTF-8 text (byte 12: b'\\xff')",
    )


def _binary_mixed(ids: list[Any]) -> tuple[bytes, int]:
    """x as 2 x 2 FP64 binary data, ids as JSON data (only its values may hold true/false)."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 32},
                },
                {"name": "ids", "datatype": "INT64", "shape": [2], "data": ids},
            ]
        }
    )
    return header + struct.pack("<4d", 0.5, 1.5, 2.5, 3.5), len(header)


def test_a_binary_request_takes_no_json_true_or_false_for_1_or_0() -> None:
    specs = (TensorSpec("x", "FP64", (-1, 2)), TensorSpec("ids", "INT64", (-1,)))
    request = parse_binary_request(*_binary_mixed([7, 8]), specs)
    assert request.inputs["x"].tolist() == [[0.5, 1.5], [2.5, 3.5]]
    assert request.inputs["ids"].tolist() == [7, 8]
    for ids in ([1, True], [2, False]):  # a true alone in the JSON part, a false alone
        with pytest.raises(ProtocolError) as caught:
            parse_binary_request(*_binary_mixed(ids), specs)
        assert (caught.value.status, caught.value.message) == (
            400,
            "input 'ids': datatype INT64 needs integers, got booleans",
        )


def test_a_zero_header_length_is_an_empty_json_part_not_a_negative_one() -> None:
    body = _body(_tensor(ROW))
    with pytest.raises(ProtocolError) as caught:
        parse_binary_request(body, 0, IRIS)
    assert caught.value.status == 400
    assert caught.value.message.startswith(
        "the first 0 bytes of the request body (Inference-Header-Content-Length) "
        "is not valid JSON: "
    )
    with pytest.raises(ProtocolError) as caught:
        parse_binary_request(body, -1, IRIS)
    assert (caught.value.status, caught.value.message) == (
        400,
        "Inference-Header-Content-Length must not be negative, got -1",
    )


def test_other_request_parameters_leave_every_output_json() -> None:
    request = parse_request(_body(_tensor(ROW), parameters={"priority": 1}), IRIS)
    assert request.binary_output_default is False
    assert request.binary_output_names(["label", "probabilities"]) == frozenset()
    with pytest.raises(ProtocolError) as caught:
        parse_request(_body(_tensor(ROW), parameters={"binary_data_output": 1}), IRIS)
    assert (caught.value.status, caught.value.message) == (
        400,
        "parameters 'binary_data_output' must be true or false",
    )


def test_binary_bytes_outputs_carry_bytes_elements_unchanged() -> None:
    # JSON data replaces what is not UTF-8 (test_text_outputs_are_strings_in_the_response);
    # binary data has no need to: each element is its 4-byte little-endian length, then it.
    text = np.asarray([b"\xff\x00", b"ab", "é"], dtype=np.object_)
    body, n = build_binary_response("m", "1", {"t": text}, None, {"t"})
    assert (
        body[n:]
        == b"\x02\x00\x00\x00\xff\x00" + b"\x02\x00\x00\x00ab" + b"\x02\x00\x00\x00\xc3\xa9"
    )
    assert orjson.loads(body[:n])["outputs"] == [
        {"name": "t", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 18}}
    ]


def test_binary_bool_outputs_are_bytes_0_and_1_whatever_numpy_holds_true_in() -> None:
    # numpy takes any non-zero byte of a bool array for True (a view of a model's buffer)
    flags = np.frombuffer(b"\x02\x00\xff\x01", dtype=np.bool_)
    assert flags.tolist() == [True, False, True, True]
    body, n = build_binary_response("m", "1", {"f": flags}, None, {"f"})
    assert body[n:] == b"\x01\x00\x01\x01"
    # which the binary extension's parser (ours, Triton's) reads back
    spec = (TensorSpec("f", "BOOL", (-1,)),)
    item = {"name": "f", "datatype": "BOOL", "shape": [4], "parameters": {"binary_data_size": 4}}
    header = orjson.dumps({"inputs": [item]})
    request = parse_binary_request(header + body[n:], len(header), spec)
    assert request.inputs["f"].tolist() == [True, False, True, True]


@pytest.mark.parametrize(
    ("arr", "datatype", "raw"),
    [
        (np.asarray([1.5, -2.0], dtype=">f8"), "FP64", struct.pack("<2d", 1.5, -2.0)),
        (np.asarray([[1, -2]], dtype=">i4"), "INT32", struct.pack("<2i", 1, -2)),
        (np.asarray([0.25], dtype="<f4"), "FP32", struct.pack("<f", 0.25)),
    ],
)
def test_raw_tensor_bytes_are_little_endian_whatever_the_arrays_byte_order(
    arr: np.ndarray[Any, Any], datatype: str, raw: bytes
) -> None:
    assert array_to_bytes(arr, datatype) == raw


def _plausible(key: str) -> str:
    if key in {"skip_signature", "virtual_hosted_style_request", "imdsv1_fallback"}:
        return "false"
    if key in {"use_emulator", "request_payer"}:
        return "false"
    if any(part in key for part in ("endpoint", "uri", "url", "host")):
        return "http://127.0.0.1:1"
    return "x"


@pytest.mark.parametrize(
    ("store", "table", "base"),
    [
        ("S3Store", S3_ENV, {"access_key_id": "k", "secret_access_key": "s"}),
        ("AzureStore", AZURE_ENV, {"account_name": "acct"}),
        ("GCSStore", GCS_ENV, {}),
    ],
)
def test_obstore_knows_every_mapped_config_key(
    store: str, table: dict[str, str], base: dict[str, str]
) -> None:
    # An unknown key makes obstore refuse the whole config: each mapped one must be real.
    import obstore.store
    from obstore.exceptions import UnknownConfigurationKeyError

    cls = getattr(obstore.store, store)
    for key in set(table.values()):
        try:
            cls("bucket", config={**base, key: _plausible(key)})
        except UnknownConfigurationKeyError:
            pytest.fail(f"{store} does not know {key!r}")
        except Exception:  # a value obstore checks further (e.g. a credential file): known key
            pass
    with pytest.raises(UnknownConfigurationKeyError):
        cls("bucket", config={**base, "no_such_key": "x"})
