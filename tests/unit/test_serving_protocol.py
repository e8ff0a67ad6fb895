"""The V2 request parser and response builder, property-based: client mistakes are only ever
ProtocolError (a 4xx), and valid requests round-trip exactly."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import orjson
import pytest
from canarium_serving.fetch import s3_request, sigv4_headers
from canarium_serving.metrics import Labels, ServingMetrics
from canarium_serving.protocol import (
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    ProtocolError,
    TensorSpec,
    build_response,
    parse_request,
    select_outputs,
)
from canarium_serving.stats import bucket_counts, fractions, psi, quantile_edges
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_document_is_a_request_or_a_4xx(doc: Any) -> None:
    _parse(doc)
    _parse(doc, MULTI)


@settings(max_examples=300)
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


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=200)
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


@settings(max_examples=200)
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
    reference = {
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
    metrics = ServingMetrics(Labels("m", "1"))
    metrics.configure_model(platform="p", sha256="s", uri="u", outputs=[], reference=reference)
    # the same values arrive as single-row requests: the live counts equal the reference counts
    for v in x:
        metrics.observe_execution({"input": np.asarray([[v]], dtype=np.float32)}, {}, 1)
    text = metrics.exposition().decode()
    live = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("canarium_input_feature_value_bucket{")
    ]
    assert live == np.cumsum(ref).astype(float).tolist()


def test_psi() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.9, 0.1], [0.1, 0.9]) > 1.0
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))


# --- S3 signing --------------------------------------------------------------------------


def test_sigv4_matches_the_aws_documentation_example() -> None:
    # "Example: GET Object" from the Amazon S3 Signature Version 4 documentation.
    headers = sigv4_headers(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        region="us-east-1",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        extra_headers={"Range": "bytes=0-9"},
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_s3_request_addressing() -> None:
    aws = s3_request("bucket", "a b/model.onnx", {"AWS_REGION": "eu-west-1"})
    assert aws.full_url == "https://bucket.s3.eu-west-1.amazonaws.com/a%20b/model.onnx"
    assert "Authorization" not in aws.headers  # anonymous without credentials
    minio = s3_request(
        "bucket",
        "m.onnx",
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_SESSION_TOKEN": "t",
        },
    )
    assert minio.full_url == "http://127.0.0.1:9000/bucket/m.onnx"
    assert minio.get_header("Authorization", "").startswith("AWS4-HMAC-SHA256 Credential=k/")
    assert minio.get_header("X-amz-security-token") == "t"
