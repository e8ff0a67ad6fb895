"""The in-flight bound on a real canarium-serve process, over real HTTP and gRPC clients.

The server takes at most 2 inference requests at once (`--max-inflight 2`). Requests are held in
flight by the dynamic batcher itself, a production setting: with `--batch-max-wait-ms 2000` and
room for 64 rows, a request waits 2 s in an open batch for others to join it, while the event
loop keeps answering everything else. With 2 held, the next inference request (REST or gRPC,
the bound is shared) is refused at once: 503 with Retry-After and a V2 JSON error, or
UNAVAILABLE with the same message and gRPC's retry pushback; health, readiness, metadata and
/metrics still answer 200; once the held ones are answered, requests are served again; and each
refusal is counted in canarium_requests_total{code="503"}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from canarium_serving import contract
from canarium_serving.proto import inference_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Models, Server, grpc_call, infer_body, iris_env, start_server

LIMIT = 2
HOLD_S = 2.0  # --batch-max-wait-ms: how long a request waits in the batcher for company
# Enough for requests sent to reach the server and be admitted (a few ms on an idle machine).
SETTLE_S = 0.3
QUICK_S = 1.0  # a sanity bound on a refusal's latency (it is immediate), not a benchmark
REFUSED = f"{LIMIT} inference requests already in flight"


@pytest.fixture(scope="module")
def bounded_server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = [
        *("--max-inflight", str(LIMIT)),
        *("--batch-max-size", "64", "--batch-max-wait-ms", str(int(HOLD_S * 1000))),
    ]
    server = start_server(args, tmp_path_factory.mktemp("bounded"), env=iris_env(models))
    yield server
    assert server.stop() == 0, server.log()


# --- clients ---------------------------------------------------------------------------------
def _rest_infer(server: Server, x: np.ndarray[Any, Any]) -> httpx.Response:
    with server.client() as client:
        return client.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(x)))


def _grpc_request(x: np.ndarray[Any, Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request


def _grpc_infer(server: Server, x: np.ndarray[Any, Any]) -> pb.ModelInferResponse:
    response: pb.ModelInferResponse = grpc_call(
        server.grpc_target, "ModelInfer", _grpc_request(x), pb.ModelInferResponse
    )
    return response


def _grpc_label(response: pb.ModelInferResponse) -> list[int]:
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents[names.index("label")]
    return [int(v) for v in np.frombuffer(raw, dtype="<i8")]


def _requests_by_code(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + contract.METRICS_PATH, timeout=5).text
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "canarium_requests"
        for sample in family.samples
        if sample.name == "canarium_requests_total"
    }


def _increase(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        code: after[code] - before.get(code, 0.0)
        for code in after
        if after[code] != before.get(code)
    }


# --- holding requests in flight --------------------------------------------------------------
@contextmanager
def _held(calls: list[Callable[[], Any]]) -> Iterator[list[Future[Any]]]:
    """Run `calls` in threads; yield once they are in flight (held by the batcher)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        time.sleep(SETTLE_S)
        # Still unanswered: admitted and waiting (a refusal would have come back at once).
        assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
        yield futures


# --- what a refusal looks like, and what is never refused ------------------------------------
def _assert_rest_refused(client: httpx.Client, content: bytes) -> None:
    started = time.perf_counter()
    r = client.post("/v2/models/iris/infer", content=content)
    elapsed = time.perf_counter() - started
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"] == "1"  # delay-seconds: a whole number
    error = r.json()["error"]
    assert REFUSED in error, error
    assert contract.ENV_MAX_INFLIGHT in error
    assert elapsed < QUICK_S, elapsed


def _assert_grpc_refused(server: Server, x: np.ndarray[Any, Any]) -> None:
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        _grpc_infer(server, x)
    elapsed = time.perf_counter() - started
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert REFUSED in error.details()
    assert dict(error.trailing_metadata())["grpc-retry-pushback-ms"] == "1000"
    assert elapsed < QUICK_S, elapsed


def _assert_unbounded_calls_answer(server: Server, client: httpx.Client) -> None:
    """Health, readiness, metadata and /metrics, REST and gRPC: never refused."""
    for path in (
        contract.LIVE_PATH,
        contract.READY_PATH,
        "/v2",
        "/v2/models/iris",
        "/v2/models/iris/versions/2",
        "/v2/models/iris/ready",
        contract.METRICS_PATH,
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
    target = server.grpc_target
    assert grpc_call(target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
    assert grpc_call(target, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready
    ready = grpc_call(
        target, "ModelReady", pb.ModelReadyRequest(name="iris"), pb.ModelReadyResponse
    )
    assert ready.ready
    meta = grpc_call(
        target, "ModelMetadata", pb.ModelMetadataRequest(name="iris"), pb.ModelMetadataResponse
    )
    assert meta.name == "iris"
    server_meta = grpc_call(
        target, "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse
    )
    assert server_meta.name


def _assert_served_again(server: Server, models: Models) -> None:
    """Both transports at once (within the bound): answered, right."""
    x = models.iris_x[:1]
    expected = models.iris_estimator.predict(x).tolist()
    with ThreadPoolExecutor(2) as pool:
        rest = pool.submit(_rest_infer, server, x)
        rpc = pool.submit(_grpc_infer, server, x)
        r = rest.result()
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == expected
        assert _grpc_label(rpc.result()) == expected


# --- the tests -------------------------------------------------------------------------------
def test_log_says_the_bound(bounded_server: Server) -> None:
    assert f"inference requests in flight: at most {LIMIT}" in bounded_server.log()


def test_rest_beyond_the_limit_is_503_with_retry_after_at_once(
    bounded_server: Server, models: Models
) -> None:
    x = models.iris_x[:1]
    before = _requests_by_code(bounded_server)
    with (
        _held([lambda: _rest_infer(bounded_server, x)] * LIMIT) as held,
        bounded_server.client() as client,
    ):
        _assert_rest_refused(client, orjson.dumps(infer_body(x)))
        # refused before its body is read: not even parsed (garbage is not a 400 here)
        _assert_rest_refused(client, b"{not json")
        # the same connection goes on (the unread body was skipped), bounded calls answer
        _assert_unbounded_calls_answer(bounded_server, client)
        _assert_rest_refused(client, orjson.dumps(infer_body(x)))  # still saturated
        assert not any(f.done() for f in held)
    expected = models.iris_estimator.predict(x).tolist()
    for future in held:
        r = future.result()
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == expected
    _assert_served_again(bounded_server, models)
    increase = _increase(before, _requests_by_code(bounded_server))
    # the refusals under 503 (one way of counting, as every other outcome), the rest under 200
    assert increase == {"503": 3, "200": LIMIT + 2}, increase
    assert bounded_server.proc.poll() is None


def test_grpc_beyond_the_limit_is_unavailable_at_once(
    bounded_server: Server, models: Models
) -> None:
    x = models.iris_x[50:51]
    before = _requests_by_code(bounded_server)
    with (
        _held([lambda: _grpc_infer(bounded_server, x)] * LIMIT) as held,
        bounded_server.client() as client,
    ):
        _assert_grpc_refused(bounded_server, x)
        _assert_unbounded_calls_answer(bounded_server, client)
        _assert_grpc_refused(bounded_server, x)  # still saturated
        assert not any(f.done() for f in held)
    expected = models.iris_estimator.predict(x).tolist()
    for future in held:
        assert _grpc_label(future.result()) == expected
    _assert_served_again(bounded_server, models)
    increase = _increase(before, _requests_by_code(bounded_server))
    assert increase == {"503": 2, "200": LIMIT + 2}, increase


def test_the_bound_is_shared_by_rest_and_grpc(bounded_server: Server, models: Models) -> None:
    x = models.iris_x[100:101]
    before = _requests_by_code(bounded_server)
    # one request in flight over each transport fill the bound of 2 for both
    with (
        _held(
            [lambda: _rest_infer(bounded_server, x), lambda: _grpc_infer(bounded_server, x)]
        ) as held,
        bounded_server.client() as client,
    ):
        _assert_rest_refused(client, orjson.dumps(infer_body(x)))
        _assert_grpc_refused(bounded_server, x)
    assert held[0].result().status_code == 200
    assert len(_grpc_label(held[1].result())) == 1
    increase = _increase(before, _requests_by_code(bounded_server))
    assert increase == {"503": 2, "200": 2}, increase


def test_no_limit_takes_every_request(models: Models, tmp_path: Path) -> None:
    """`--max-inflight 0`: as many in flight as arrive (here 6, all held in one batch)."""
    args = ["--max-inflight", "0", "--batch-max-size", "64", "--batch-max-wait-ms", "1000"]
    server = start_server(args, tmp_path, env=iris_env(models))
    try:
        assert "inference requests in flight: no limit" in server.log()
        x = models.iris_x[:1]
        calls = [lambda: _rest_infer(server, x)] * 3 + [lambda: _grpc_infer(server, x)] * 3
        with _held(calls) as held:
            pass
        assert [f.result().status_code for f in held[:3]] == [200] * 3
        assert all(len(_grpc_label(f.result())) == 1 for f in held[3:])
        assert _requests_by_code(server).get("503") == 0
    finally:
        assert server.stop() == 0, server.log()
