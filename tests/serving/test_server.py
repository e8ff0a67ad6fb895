"""The model server as a process: predictions, metadata, health, metrics, bad input."""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from canarium_serving import metrics_contract as mc

from .conftest import Models, Server, infer_body

pytestmark = pytest.mark.serving


def infer(client: httpx.Client, body: Any, path: str = "/v2/models/iris/infer") -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers={"content-type": "application/json"})


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels_text, value = line[len(name) + 1 :].rsplit("} ", 1)
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text))
            out.append((labels, float(value)))
    return out


# --- health and metadata ----------------------------------------------------------------


def test_health_and_server_metadata(any_iris_server: Server) -> None:
    with any_iris_server.client() as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get("/v2/health/ready").json() == {"ready": True}
        meta = c.get("/v2").json()
        assert meta["name"] == "canarium-serving"
        assert "version" in meta
        assert "extensions" in meta


@pytest.mark.parametrize("prefix", ["/v2/models/iris", "/v2/models/iris/versions/2"])
def test_model_metadata_and_ready(any_iris_server: Server, prefix: str) -> None:
    with any_iris_server.client() as c:
        meta = c.get(prefix).json()
        assert meta["name"] == "iris"
        assert meta["versions"] == ["2"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["label"]["datatype"] == "INT64"
        assert outputs["label"]["shape"] == [-1]
        assert outputs["probabilities"] == {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [-1, 3],
        }
        ready = c.get(prefix + "/ready")
        assert ready.status_code == 200
        assert ready.json() == {"name": "iris", "ready": True}


# --- predictions ------------------------------------------------------------------------


def test_predictions_equal_the_estimators(any_iris_server: Server, models: Models) -> None:
    x = models.iris_x
    expected_labels = models.iris_estimator.predict(x)
    expected_proba = models.iris_estimator.predict_proba(x)
    with any_iris_server.client() as c:
        r = infer(c, infer_body(x, id="batch-1"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model_name"] == "iris"
        assert doc["model_version"] == "2"
        assert doc["id"] == "batch-1"
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["label"]["datatype"] == "INT64"
        assert out["label"]["shape"] == [150]
        assert out["label"]["data"] == expected_labels.tolist()
        assert out["probabilities"]["shape"] == [150, 3]
        proba = np.asarray(out["probabilities"]["data"]).reshape(150, 3)
        np.testing.assert_allclose(proba, expected_proba, atol=1e-5)
        # one row at a time, through the versioned path, nested `data` accepted too
        for i in (0, 60, 120):
            body = {
                "inputs": [
                    {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [x[i].tolist()]}
                ]
            }
            r = infer(c, body, "/v2/models/iris/versions/2/infer")
            assert r.status_code == 200, r.text
            label = next(o for o in r.json()["outputs"] if o["name"] == "label")
            assert label["data"] == [int(expected_labels[i])]


def test_outputs_selection(any_iris_server: Server, models: Models) -> None:
    x = models.iris_x[:5]
    with any_iris_server.client() as c:
        r = infer(c, infer_body(x, outputs=[{"name": "probabilities"}]))
        assert r.status_code == 200, r.text
        outs = r.json()["outputs"]
        assert [o["name"] for o in outs] == ["probabilities"]
        r = infer(c, infer_body(x, outputs=[{"name": "label"}]))
        assert [o["name"] for o in r.json()["outputs"]] == ["label"]


def test_regressor_predictions(reg_server: Server, models: Models) -> None:
    x = models.regressor_x[:50]
    expected = models.regressor_estimator.predict(x)
    with reg_server.client() as c:
        r = infer(c, infer_body(x), "/v2/models/reg/infer")
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert out["name"] == "variable"
        assert out["datatype"] == "FP32"
        np.testing.assert_allclose(np.asarray(out["data"]), expected, rtol=1e-4, atol=1e-3)


def test_concurrent_requests(any_iris_server: Server, models: Models) -> None:
    x = models.iris_x
    expected = models.iris_estimator.predict(x)

    def one(i: int) -> int:
        with httpx.Client(base_url=any_iris_server.url) as c:
            r = infer(c, infer_body(x[i : i + 1], outputs=[{"name": "label"}]))
            assert r.status_code == 200
            return int(r.json()["outputs"][0]["data"][0])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(0, 150, 3)))
    assert got == expected[0:150:3].tolist()


# --- bad input: 4xx with a JSON error that says what is wrong ---------------------------

GOOD = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}

BAD_BODIES: list[tuple[str, bytes | dict[str, Any], int, str]] = [
    ("malformed json", b'{"inputs": [', 400, "not valid JSON"),
    ("empty body", b"", 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "must be a JSON object"),
    ("no inputs", {"id": "x"}, 400, "'inputs'"),
    ("inputs not a list", {"inputs": {"name": "input"}}, 400, "'inputs'"),
    ("input not object", {"inputs": [3]}, 400, "inputs[0] must be an object"),
    ("unknown input", {"inputs": [{**GOOD, "name": "x"}]}, 400, "not an input of this model"),
    ("duplicate input", {"inputs": [GOOD, GOOD]}, 400, "more than once"),
    ("wrong datatype", {"inputs": [{**GOOD, "datatype": "FP64"}]}, 400, "expects FP32"),
    ("unknown datatype", {"inputs": [{**GOOD, "datatype": "FLOAT"}]}, 400, "unknown datatype"),
    ("wrong rank", {"inputs": [{**GOOD, "shape": [4]}]}, 400, "dimension"),
    ("wrong width", {"inputs": [{**GOOD, "shape": [1, 3], "data": [1, 2, 3]}]}, 400, "match"),
    ("size mismatch", {"inputs": [{**GOOD, "shape": [2, 4]}]}, 400, "needs 8 elements, got 4"),
    ("negative dim", {"inputs": [{**GOOD, "shape": [-1, 4]}]}, 400, "non-negative"),
    ("empty batch", {"inputs": [{**GOOD, "shape": [0, 4], "data": []}]}, 400, "no elements"),
    ("strings as FP32", {"inputs": [{**GOOD, "data": ["a", "b", "c", "d"]}]}, 400, "numbers"),
    ("bools as FP32", {"inputs": [{**GOOD, "data": [True, False, True, True]}]}, 400, "numbers"),
    ("null in data", {"inputs": [{**GOOD, "data": [1.0, None, 1.0, 1.0]}]}, 400, "numbers"),
    ("ragged data", {"inputs": [{**GOOD, "data": [[1.0, 2.0], [3.0]]}]}, 400, "rectangular"),
    ("object data", {"inputs": [{**GOOD, "data": {"a": 1}}]}, 400, "must be an array"),
    ("no data", {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]}, 400, "'data'"),
    ("shape not list", {"inputs": [{**GOOD, "shape": "1,4"}]}, 400, "'shape'"),
    ("unknown output", {"inputs": [GOOD], "outputs": [{"name": "nope"}]}, 400, "not outputs"),
    ("outputs not list", {"inputs": [GOOD], "outputs": "label"}, 400, "'outputs'"),
    ("id not string", {"inputs": [GOOD], "id": 7}, 400, "'id'"),
    ("huge number", b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32",'
     b'"data":[1e999,1,1,1]}]}', 400, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_requests_get_4xx_json(
    any_iris_server: Server, case: str, body: bytes | dict[str, Any], status: int, message: str
) -> None:
    with any_iris_server.client() as c:
        r = infer(c, body)
        assert r.status_code == status, (case, r.text)
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert message in error, error
        assert c.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v2/models/nope/infer", 404, "model 'nope' not found"),
        ("GET", "/v2/models/nope", 404, "not found"),
        ("GET", "/v2/models/nope/ready", 404, "not found"),
        ("POST", "/v2/models/iris/versions/9/infer", 404, "no version '9'"),
        ("GET", "/v2/models/iris/versions/9", 404, "no version '9'"),
        ("GET", "/v2/models/iris/infer", 405, "POST only"),
        ("POST", "/v2/health/ready", 405, "GET and HEAD only"),
        ("DELETE", "/v2/models/iris", 405, "GET and HEAD only"),
        ("PUT", "/v2/openapi.json", 405, "GET and HEAD only"),
        ("DELETE", "/v2/no/such/path", 404, "no such endpoint"),
        ("PATCH", "/v2/models/nope/ready", 404, "not found"),
        ("GET", "/v3/whatever", 404, "no such endpoint"),
        ("GET", "/v2/models/iris/explain", 404, "no such endpoint"),
        ("POST", "/v2/models/iris/foo/infer", 404, "no such endpoint"),
        ("POST", "/v2/models/iris/versions/2/foo/infer", 404, "no such endpoint"),
    ],
)
def test_bad_paths(
    any_iris_server: Server, method: str, path: str, status: int, message: str
) -> None:
    with any_iris_server.client() as c:
        r = c.request(method, path, content=orjson.dumps({"inputs": [GOOD]}))
        assert r.status_code == status, r.text
        assert message in r.json()["error"]
        if status == 405:  # RFC 9110: a 405 says which methods the path takes
            assert r.headers["allow"] == ("POST" if path.endswith("/infer") else "GET, HEAD")
        else:
            assert "allow" not in r.headers


def test_oversized_body_is_413(any_iris_server: Server) -> None:
    # The fixture sets CANARIUM_MAX_BODY_BYTES=65536.
    n = 5000
    body = {
        "inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32", "data": [1.0] * 4 * n}]
    }
    content = orjson.dumps(body)
    assert len(content) > 65536
    with any_iris_server.client() as c:
        r = infer(c, content)
        assert r.status_code == 413
        assert "exceeds the limit of 65536 bytes" in r.json()["error"]

        # The same without Content-Length (chunked): the limit holds while reading.
        def chunks() -> Any:
            for i in range(0, len(content), 4096):
                yield content[i : i + 4096]

        r = c.post("/v2/models/iris/infer", content=chunks())
        assert r.status_code == 413
        assert "exceeds the limit" in r.json()["error"]
        assert c.get("/v2/health/live").status_code == 200


def test_integer_overflow_and_garbage_bytes(any_iris_server: Server) -> None:
    with any_iris_server.client() as c:
        r = infer(c, b"\xff\xfe\x00garbage")
        assert r.status_code == 400
        big = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,' + (
            b"9" * 400 + b"]}]}"
        )
        r = infer(c, big)
        assert r.status_code == 400, r.text


# --- Content-Length that does not match the body: a 4xx, never a 500 or a hang -----------


def raw_exchange(
    server: Server, *parts: bytes, half_close: bool = False, pause: float = 0.0
) -> bytes:
    """Send raw bytes on one connection (`pause` s before each part after the first); return
    what the server answers, up to the end of its first response or until it closes."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause)
            sock.sendall(part)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):  # socket.timeout (10 s) = the server hangs
            answer += chunk
            if b"\r\n\r\n" in answer and not half_close:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(rest) >= int(length.group(1)):
                    break
        return answer


def post_with_length(length: bytes, body: bytes) -> bytes:
    return (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: test\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n" + body
    )


GOOD_BODY = orjson.dumps({"inputs": [GOOD]})


@pytest.mark.parametrize("length", [b"abc", b"-5", b"12x", b"1e3", b"0x10", b""])
def test_malformed_content_length_is_400(any_iris_server: Server, length: bytes) -> None:
    answer = raw_exchange(any_iris_server, post_with_length(length, GOOD_BODY))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"connection: close" in answer.lower()
    with any_iris_server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200


def test_content_length_larger_than_the_body_is_408_not_a_hang(any_iris_server: Server) -> None:
    # The fixture sets CANARIUM_BODY_READ_TIMEOUT_S=1: the server gives up on the missing bytes.
    declared = len(GOOD_BODY) + 50
    started = time.monotonic()
    answer = raw_exchange(any_iris_server, post_with_length(str(declared).encode(), GOOD_BODY))
    assert 0.9 < time.monotonic() - started < 8
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert orjson.loads(body) == {
        "error": f"request body incomplete: {len(GOOD_BODY)} bytes of the {declared} declared "
        "by Content-Length received, then nothing for 1 s"
    }
    # a client that says it is done sending (half-close) gets the connection closed at once
    started = time.monotonic()
    answer = raw_exchange(
        any_iris_server, post_with_length(str(declared).encode(), GOOD_BODY), half_close=True
    )
    assert time.monotonic() - started < 0.9
    assert not answer.startswith(b"HTTP/1.1 5"), answer
    with any_iris_server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200


def test_content_length_smaller_than_the_body_is_400(any_iris_server: Server) -> None:
    # The server reads what Content-Length says: a truncated JSON document, then bytes that are
    # no HTTP request. Both are a 400, and the connection is closed.
    answer = raw_exchange(any_iris_server, post_with_length(b"20", GOOD_BODY))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b" 500 " not in answer
    with any_iris_server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200


def test_body_arriving_in_slow_chunks_is_served(any_iris_server: Server, models: Models) -> None:
    # The read timeout is the time without data, not for the whole body.
    content = orjson.dumps(infer_body(models.iris_x[:2]))
    third = len(content) // 3 + 1
    chunks = [content[i : i + third] for i in range(0, len(content), third)]
    started = time.monotonic()
    answer = raw_exchange(
        any_iris_server, post_with_length(str(len(content)).encode(), b""), *chunks, pause=0.6
    )
    assert time.monotonic() - started > 1.5  # longer than the 1 s timeout, in all
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    expected = models.iris_estimator.predict(models.iris_x[:2]).tolist()
    doc = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    assert next(o for o in doc["outputs"] if o["name"] == "label")["data"] == expected


# --- dynamic batching off and on ---------------------------------------------------------


def batch_size_metrics(server: Server) -> tuple[float, float]:
    """(model executions, rows) so far, from canarium_inference_batch_size."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    count = sum(v for _, v in metric_samples(text, f"{mc.INFERENCE_BATCH_SIZE.name}_count"))
    rows = sum(v for _, v in metric_samples(text, f"{mc.INFERENCE_BATCH_SIZE.name}_sum"))
    return count, rows


def concurrent_single_rows(server: Server, x: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    def one(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = infer(c, infer_body(x[i : i + 1]))
            assert r.status_code == 200, r.text
            return {o["name"]: o["data"] for o in r.json()["outputs"]}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(x))))


def test_unbatched_server_runs_every_request_alone(
    iris_unbatched_server: Server, models: Models
) -> None:
    x = models.iris_x[::3]
    before = batch_size_metrics(iris_unbatched_server)
    got = concurrent_single_rows(iris_unbatched_server, x)
    after = batch_size_metrics(iris_unbatched_server)
    assert (after[0] - before[0], after[1] - before[1]) == (len(x), len(x))
    assert [g["label"][0] for g in got] == models.iris_estimator.predict(x).tolist()
    np.testing.assert_allclose(
        [g["probabilities"] for g in got], models.iris_estimator.predict_proba(x), atol=1e-5
    )
    assert "dynamic batching is off" not in iris_unbatched_server.log()


def test_batched_and_unbatched_servers_answer_alike(
    iris_server: Server, iris_unbatched_server: Server, models: Models
) -> None:
    x = models.iris_x[1::3]
    batched = concurrent_single_rows(iris_server, x)
    unbatched = concurrent_single_rows(iris_unbatched_server, x)
    assert [b["label"] for b in batched] == [u["label"] for u in unbatched]
    np.testing.assert_allclose(
        [b["probabilities"] for b in batched],
        [u["probabilities"] for u in unbatched],
        rtol=0,
        atol=1e-6,
    )
    for _, body, _, _ in BAD_BODIES:
        with iris_server.client() as b, iris_unbatched_server.client() as u:
            one, other = infer(b, body), infer(u, body)
        assert (one.status_code, one.json()) == (other.status_code, other.json())


# --- metrics ----------------------------------------------------------------------------


def assert_petal_length_histograms(
    before: str, text: str, ref: dict[str, Any], sent: np.ndarray[Any, Any]
) -> None:
    """The petal_length input histogram in /metrics `text` against the model's reference `ref`:
    the same edges, and since the scrape `before` it counted the rows `sent`, bucket by bucket."""
    # input histograms use the reference edges, bucket by bucket
    feature = ref["features"][2]
    assert feature["name"] == "petal_length"
    live = metric_samples(text, mc.INPUT_FEATURE_VALUE.series)
    live_les = [lab["le"] for lab, _ in live if lab["feature"] == "petal_length"]
    ref_rows = metric_samples(text, mc.REFERENCE_INPUT_FEATURE_RATIO.name)
    ref_les = [lab["le"] for lab, _ in ref_rows if lab["feature"] == "petal_length"]
    assert live_les == ref_les
    assert len(live_les) == len(feature["edges"]) + 1
    assert [float(le) for le in live_les[:-1]] == feature["edges"]
    old = {
        lab["le"]: v
        for lab, v in metric_samples(before, mc.INPUT_FEATURE_VALUE.series)
        if lab["feature"] == "petal_length"
    }
    vals = sent[:, 2]
    for lab, v in live:
        if lab["feature"] != "petal_length":
            continue
        le = float(lab["le"])
        assert v - old.get(lab["le"], 0.0) == int((vals <= le).sum())
    # reference gauges are cumulative fractions ending at 1
    assert {lab["le"]: v for lab, v in ref_rows if lab["feature"] == "petal_length"}[
        "+Inf"
    ] == pytest.approx(1.0)


def test_metrics_content(iris_server: Server, models: Models) -> None:
    with iris_server.client() as c:
        before = c.get("/metrics").text
        x = models.iris_x
        r = infer(c, infer_body(x[:100]))
        assert r.status_code == 200
        for i in range(7):
            assert infer(c, infer_body(x[100 + i : 101 + i])).status_code == 200
        assert infer(c, b"{").status_code == 400
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    base = {
        "model": "iris",
        "version": "2",
        "deployment": "iris",
        "namespace": "ml",
        "revision": "iris-5d8f7c",
        "role": "canary",
    }

    def value(name: str, **labels: str) -> float:
        for got, v in metric_samples(text, name):
            if got == {**base, **labels}:
                return v
        raise AssertionError(f"no {name} {labels} in\n{text}")

    def old_value(name: str, **labels: str) -> float:
        for got, v in metric_samples(before, name):
            if got == {**base, **labels}:
                return v
        return 0.0

    assert value(mc.MODEL_READY.name) == 1.0
    info = metric_samples(text, mc.MODEL_INFO.name)
    assert len(info) == 1
    assert info[0][0]["sha256"] == models.iris.sha256
    assert info[0][0]["platform"] == "onnxruntime_onnx"
    assert value(mc.REQUESTS.series, code="200") - old_value(mc.REQUESTS.series, code="200") == 8
    assert value(mc.REQUESTS.series, code="400") - old_value(mc.REQUESTS.series, code="400") == 1
    assert value(f"{mc.REQUEST_DURATION.name}_count") >= 9
    les = [lab["le"] for lab, _ in metric_samples(text, mc.REQUEST_DURATION.series)]
    assert {"0.001", "0.005", "0.01", "0.1", "1.0", "+Inf"} <= set(les)
    assert (
        value(mc.INFERENCE_BATCH_SIZE.series, le="+Inf")
        - old_value(mc.INFERENCE_BATCH_SIZE.series, le="+Inf")
        == 8
    )
    assert (
        value(f"{mc.INFERENCE_BATCH_SIZE.name}_sum")
        - old_value(f"{mc.INFERENCE_BATCH_SIZE.name}_sum")
        == 107
    )

    # class counts = what the model predicted
    sent = np.concatenate([x[:100], x[100:107]])
    predicted = models.iris_estimator.predict(sent)
    for cls in ("0", "1", "2"):
        delta = value(mc.PREDICTION_CLASS.series, output="label", **{"class": cls}) - (
            old_value(mc.PREDICTION_CLASS.series, output="label", **{"class": cls})
        )
        assert delta == int((predicted == int(cls)).sum())

    assert_petal_length_histograms(before, text, models.iris.reference, sent)
    ref_cls = metric_samples(text, mc.REFERENCE_PREDICTION_CLASS_RATIO.name)
    assert sum(v for _, v in ref_cls) == pytest.approx(1.0)
    assert value(mc.REFERENCE_SAMPLES.name) == 150


def test_regressor_value_histogram_uses_reference_edges(reg_server: Server, models: Models) -> None:
    x = models.regressor_x[:64]
    with reg_server.client() as c:
        before = {
            lab["le"]: v
            for lab, v in metric_samples(c.get("/metrics").text, mc.PREDICTION_VALUE.series)
        }
        assert infer(c, infer_body(x), "/v2/models/reg/infer").status_code == 200
        text = c.get("/metrics").text
    (out,) = [o for o in models.regressor.reference["outputs"] if o["name"] == "variable"]
    assert out["kind"] == "value"
    buckets = metric_samples(text, mc.PREDICTION_VALUE.series)
    assert [float(lab["le"]) for lab, _ in buckets[:-1]] == out["edges"]
    assert buckets[-1][1] - before.get("+Inf", 0.0) == 64
    preds = models.regressor_estimator.predict(x)
    for lab, v in buckets[:-1]:
        # float32 outputs vs float64 predictions: allow a value sitting on an edge
        delta = v - before.get(lab["le"], 0.0)
        assert abs(delta - int((preds <= float(lab["le"])).sum())) <= 1
    ratios = metric_samples(text, mc.REFERENCE_PREDICTION_VALUE_RATIO.name)
    assert ratios[-1][1] == pytest.approx(1.0)


def test_metrics_endpoint_survives_scrapes_during_load(iris_server: Server, models: Models) -> None:
    x = models.iris_x

    def work(i: int) -> int:
        with httpx.Client(base_url=iris_server.url) as c:
            if i % 10 == 0:
                return c.get("/metrics").status_code
            return infer(c, infer_body(x[i % 150 : i % 150 + 2])).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(work, range(200))) == {200}
