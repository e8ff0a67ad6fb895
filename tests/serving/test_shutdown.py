"""Graceful shutdown of a real canarium-serve process on SIGTERM, over real REST and gRPC clients.

Requests are held in flight by the dynamic batcher, as in test_overload.py: with
`--batch-max-wait-ms`, a request waits that long in an open batch for others to join it. Then
SIGTERM: the requests in flight over both transports are answered (right) within the grace
period, new connections and calls are refused at once, and the process exits 0; a request still
running when the grace period ends is answered 503 (REST) and the process still exits 0, in
time; with a shutdown delay, the server says it is not ready while it still serves.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from canarium_serving.proto import inference_pb2 as pb

from .conftest import Models, Server, grpc_call, infer_body, iris_env, start_server

pytestmark = pytest.mark.serving

SETTLE_S = 0.3  # for requests sent to be admitted and held (a few ms on an idle machine)


def _start(models: Models, tmp_path: Path, hold_s: float, *args: str) -> Server:
    held = ["--batch-max-size", "64", "--batch-max-wait-ms", str(int(hold_s * 1000))]
    return start_server([*held, *args], tmp_path, env=iris_env(models))


def _rest_infer(server: Server, x: np.ndarray[Any, Any]) -> httpx.Response:
    with server.client() as client:
        return client.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(x)))


def _grpc_infer(server: Server, x: np.ndarray[Any, Any]) -> list[int]:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    response = grpc_call(server.grpc_target, "ModelInfer", request, pb.ModelInferResponse)
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents[names.index("label")]
    return [int(v) for v in np.frombuffer(raw, dtype="<i8")]


def _hold(pool: ThreadPoolExecutor, calls: list[Callable[[], Any]]) -> list[Future[Any]]:
    futures = [pool.submit(call) for call in calls]
    time.sleep(SETTLE_S)
    assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
    return futures


def _rest_refused_soon(server: Server, within_s: float = 2.0) -> float:
    """Wait until the REST port refuses connections (uvicorn's main loop looks at its stop flag
    every 0.1 s; a loaded machine may take longer); how long that took. A connection the kernel
    took into the listening socket's backlog just before it closed is reset with no answer:
    refused too (CI, 2026-12-04: "Connection reset by peer")."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        try:
            httpx.get(server.url + "/v2/health/live", timeout=2)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the REST port still takes connections {within_s:g} s after SIGTERM")


def _grpc_refused(server: Server, x: np.ndarray[Any, Any]) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _grpc_infer(server, x)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()


def _exit_status(server: Server, within_s: float) -> tuple[int, float]:
    """The process's exit status and how long it took to exit from now (fails past
    `within_s`)."""
    started = time.monotonic()
    code = server.proc.wait(within_s)
    return code, time.monotonic() - started


def test_sigterm_finishes_rest_and_grpc_requests_in_flight_then_exits_0(
    models: Models, tmp_path: Path
) -> None:
    hold_s, grace_s = 3.0, 10.0
    server = _start(models, tmp_path, hold_s, "--shutdown-grace-s", str(grace_s))
    x = models.iris_x[:1]
    expected = models.iris_estimator.predict(x).tolist()
    try:
        with ThreadPoolExecutor(4) as pool:
            first_sent = time.monotonic()  # the batch holding them all opens with the first
            rest = _hold(pool, [lambda: _rest_infer(server, x)] * 2)
            rpc = _hold(pool, [lambda: _grpc_infer(server, x)] * 2)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            # new work is refused at once, over both transports, while the held ones wait
            _rest_refused_soon(server)
            _grpc_refused(server, x)
            assert not any(f.done() for f in rest + rpc)
            assert server.proc.poll() is None
            # the requests in flight are answered, right
            for future in rest:
                r = future.result()
                assert r.status_code == 200, r.text
                assert r.json()["outputs"][0]["data"] == expected
            for future in rpc:
                assert future.result() == expected
        code, _ = _exit_status(server, grace_s)
        exited = time.monotonic()
    finally:
        server.stop()
    assert code == 0, server.log()
    # it waited for its requests (held `hold_s` from the first one's arrival), not for the
    # whole grace
    assert exited - first_sent >= hold_s - 0.1, exited - first_sent
    assert exited - signalled < grace_s - 1, exited - signalled
    log = server.log()
    assert "shutting down: not ready, REST and gRPC take no new requests" in log
    assert "have 10 s to finish" in log
    assert "shut down" in log
    assert "Traceback" not in log


def test_requests_beyond_the_grace_period_get_503_and_the_process_still_exits_0(
    models: Models, tmp_path: Path
) -> None:
    hold_s, grace_s = 30.0, 1.0
    server = _start(models, tmp_path, hold_s, "--shutdown-grace-s", str(grace_s))
    x = models.iris_x[:1]
    try:
        with ThreadPoolExecutor(2) as pool:
            rest = _hold(pool, [lambda: _rest_infer(server, x)])
            rpc = _hold(pool, [lambda: _grpc_infer(server, x)])
            server.proc.send_signal(signal.SIGTERM)
            code, took = _exit_status(server, grace_s + 5)
            r = rest[0].result(timeout=5)
            with pytest.raises(grpc.RpcError) as info:
                rpc[0].result(timeout=5)
    finally:
        server.stop()
    assert code == 0, server.log()
    assert grace_s - 0.1 <= took < grace_s + 3, took  # the grace, not the 30 s hold
    # the clients are told to retry
    assert r.status_code == 503, r.text
    assert r.headers["connection"] == "close"
    assert "server shutting down" in r.json()["error"]
    assert "CANARIUM_SHUTDOWN_GRACE_S" in r.json()["error"]
    error: Any = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # retryable, as REST's 503


def test_shutdown_delay_says_not_ready_while_still_serving(models: Models, tmp_path: Path) -> None:
    delay_s = 4.0
    server = _start(models, tmp_path, 0, "--shutdown-delay-s", str(delay_s))
    x = models.iris_x[:1]
    expected = models.iris_estimator.predict(x).tolist()
    target = server.grpc_target
    try:
        assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(SETTLE_S)
        with server.client() as client:
            # not ready (for the load balancers), but live, and still serving
            ready = client.get("/v2/health/ready")
            assert (ready.status_code, ready.json()) == (503, {"ready": False})
            model_ready = client.get("/v2/models/iris/ready")
            assert model_ready.status_code == 503
            assert model_ready.json() == {"name": "iris", "ready": False}
            assert client.get("/v2/health/live").status_code == 200
            r = client.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(x)))
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == expected
        assert not grpc_call(
            target, "ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse
        ).ready
        assert grpc_call(target, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live
        assert _grpc_infer(server, x) == expected
        assert time.monotonic() - signalled < delay_s, "the checks took longer than the delay"
        code, _ = _exit_status(server, delay_s + 5)
        took = time.monotonic() - signalled
    finally:
        server.stop()
    assert code == 0, server.log()
    assert delay_s <= took < delay_s + 3, took
    assert "stop signal: not ready, still serving for 4 s" in server.log()


def test_a_second_signal_ends_the_delay(models: Models, tmp_path: Path) -> None:
    server = _start(models, tmp_path, 0, "--shutdown-delay-s", "60")
    try:
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(SETTLE_S)
        assert server.proc.poll() is None  # delaying
        assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(10)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert code == 0, server.log()
    assert took < 3, took
