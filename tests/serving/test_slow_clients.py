"""Slow clients against a real canarium-serve process, over real sockets.

The server runs with short timeouts: a request head must be whole within 1 s (of the
connection's opening, or of its first byte), a body within 2 s of its head, an idle
keep-alive connection goes after 1 s, and at most 4 inference requests are in flight. Each
attack keeps sending for longer than its timeout (so only the server can end it) and must find
its connection cut by the server in time; meanwhile other clients get their predictions, right
and without a refusal.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from .conftest import Models, Server, infer_body, iris_env, start_server

pytestmark = pytest.mark.serving

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0
MAX_INFLIGHT = 4
# Deadlines are checked every tenth of the shortest timeout (0.1 s here); the rest is room for
# a loaded machine.
LATE_S = 1.0


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = [
        *("--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S)),
        *("--keep-alive-timeout-s", str(KEEP_ALIVE_S), "--max-inflight", str(MAX_INFLIGHT)),
    ]
    # iris_env: CANARIUM_BODY_READ_TIMEOUT_S=1, the most a body may go without any data.
    started = start_server(args, tmp_path_factory.mktemp("slow"), env=iris_env(models))
    yield started
    assert started.stop() == 0, started.log()


# --- a client that sends slowly ----------------------------------------------------------
@dataclass
class Slow:
    """One connection: `at_once` is sent on opening, then `trickle` one byte every `every` s."""

    sock: socket.socket
    trickle: bytes
    every: float
    opened: float = field(default_factory=time.monotonic)
    sent: int = 0
    next_at: float = 0.0
    answer: bytes = b""
    closed_at: float | None = None  # when the server closed it

    @property
    def lifetime(self) -> float:
        assert self.closed_at is not None
        return self.closed_at - self.opened

    @property
    def status(self) -> int | None:
        """The status of the server's answer, if any."""
        if not self.answer.startswith(b"HTTP/1.1 "):
            return None
        return int(self.answer[9:12])


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def open_slow(server: Server, at_once: bytes, trickle: bytes, every: float) -> Slow:
    sock = socket.create_connection(address(server), timeout=5)
    if at_once:
        sock.sendall(at_once)
    sock.setblocking(False)
    slow = Slow(sock, trickle, every)
    slow.next_at = slow.opened + every
    return slow


def drive(conns: list[Slow], seconds: float) -> None:
    """Trickle every connection's bytes for `seconds` (or until the server closed them all),
    reading whatever the server answers; close the ones still open at the end."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(c.closed_at is None for c in conns):
        now = time.monotonic()
        for c in conns:
            if c.closed_at is not None:
                continue
            try:
                while data := c.sock.recv(65536):
                    c.answer += data
                c.closed_at = now  # b"": the server closed it
            except BlockingIOError:
                pass
            except OSError:  # reset
                c.closed_at = now
            if c.closed_at is None and now >= c.next_at and c.sent < len(c.trickle):
                try:
                    c.sock.send(c.trickle[c.sent : c.sent + 1])
                    c.sent += 1
                except BlockingIOError:
                    pass
                except OSError:
                    c.closed_at = now
                c.next_at = now + c.every
        time.sleep(0.01)
    for c in conns:
        c.sock.close()


def infer_request(body: bytes, path: str = "/v2/models/iris/infer") -> tuple[bytes, bytes]:
    """A request's head, and its body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def assert_cut(slow: Slow, after: float, status: int | None, why: str) -> None:
    """The server closed the connection `after` s after its opening (no earlier, not much
    later), while the client still had bytes to send, answering `status` (None: nothing)."""
    assert slow.closed_at is not None, f"{why}: still open after {slow.sent} bytes sent slowly"
    assert after - 0.05 <= slow.lifetime <= after + LATE_S, (why, slow.lifetime)
    assert slow.sent < len(slow.trickle), f"{why}: the client had finished sending"
    assert slow.status == status, (why, slow.answer[:300])


GOOD = b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\n\r\n"


# --- each kind of slow client ----------------------------------------------------------
def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    silent = open_slow(server, b"", b"\0" * 100, every=1e9)  # never sends
    drive([silent], HEADER_TIMEOUT_S + 3)
    assert silent.closed_at is not None, "the server kept a silent connection"
    assert HEADER_TIMEOUT_S - 0.05 <= silent.lifetime <= HEADER_TIMEOUT_S + LATE_S
    assert silent.status == 408, silent.answer
    assert b"CANARIUM_HEADER_TIMEOUT_S" in silent.answer


def test_slowloris_head_trickled_byte_by_byte_is_cut_off(server: Server) -> None:
    # Each byte comes well within the keep-alive timeout: only a deadline on the head ends it.
    head = GOOD[:-2] + b"".join(b"X-Pad-%d: %d\r\n" % (i, i) for i in range(40)) + b"\r\n"
    slowloris = open_slow(server, b"", head, every=0.05)
    drive([slowloris], HEADER_TIMEOUT_S + 5)
    assert_cut(slowloris, HEADER_TIMEOUT_S, 408, "slowloris")
    assert b"request head (request line and headers) not complete within 1 s" in slowloris.answer


def test_blank_lines_between_requests_do_not_keep_a_connection(server: Server) -> None:
    # After one request is answered, CRLFs (which start no request) every 0.3 s: each one
    # would rearm the keep-alive timer for ever; the head deadline counts from the first.
    slow = open_slow(server, GOOD, b"\r\n" * 100, every=0.3)
    drive([slow], HEADER_TIMEOUT_S + 5)
    assert slow.closed_at is not None, "blank lines kept the connection"
    assert slow.status == 200, slow.answer  # the real request was answered
    assert b"HTTP/1.1 408 " in slow.answer  # then the blank lines timed out
    # the clock started at the first blank line, 0.3 s after opening
    assert 0.3 + HEADER_TIMEOUT_S - 0.05 <= slow.lifetime <= 0.3 + HEADER_TIMEOUT_S + LATE_S


def test_idle_keep_alive_connection_is_closed_after_its_timeout(server: Server) -> None:
    idle = open_slow(server, GOOD, b"", every=1e9)  # one request, then nothing
    drive([idle], KEEP_ALIVE_S + 5)
    assert idle.closed_at is not None
    assert idle.status == 200
    assert b"408" not in idle.answer  # closed quietly: it had asked for nothing more
    assert KEEP_ALIVE_S - 0.05 <= idle.lifetime <= KEEP_ALIVE_S + LATE_S


def test_body_trickled_steadily_is_408_after_the_body_timeout(
    server: Server, models: Models
) -> None:
    # A byte every 0.1 s: never a second without data (the read timeout), but never whole.
    head, body = infer_request(orjson.dumps(infer_body(models.iris_x[:1])) + b" " * 200)
    slow = open_slow(server, head, body, every=0.1)
    drive([slow], BODY_TIMEOUT_S + 5)
    assert_cut(slow, BODY_TIMEOUT_S, 408, "slow body")
    error = orjson.loads(slow.answer.partition(b"\r\n\r\n")[2])["error"]
    assert error.startswith("request body incomplete: ")
    assert f"received in {BODY_TIMEOUT_S:g} s, the most a body may take" in error
    assert "CANARIUM_BODY_TIMEOUT_S" in error


def test_an_unread_body_trickled_after_the_answer_is_cut_off(server: Server) -> None:
    # A health check does not read bodies: answered at once, then the body's deadline ends the
    # connection that would otherwise be held by the trickle.
    head = b"POST /v2/health/live HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"
    slow = open_slow(server, head, b"x" * 1000, every=0.1)
    drive([slow], BODY_TIMEOUT_S + 5)
    assert_cut(slow, BODY_TIMEOUT_S, 405, "unread slow body")


def test_slow_bodies_hold_no_inflight_slot(server: Server, models: Models) -> None:
    # Twice the in-flight limit of inference requests whose bodies are being trickled: none of
    # them takes a slot until its body is whole, so everyone else is still served.
    x = models.iris_x[:1]
    head, body = infer_request(orjson.dumps(infer_body(x)))
    slow = [open_slow(server, head, body, every=0.2) for _ in range(2 * MAX_INFLIGHT)]
    driver = threading.Thread(target=drive, args=(slow, BODY_TIMEOUT_S + 3))
    driver.start()
    try:
        time.sleep(0.3)  # their heads are in, their bodies are coming
        with server.client() as client:
            for _ in range(2 * MAX_INFLIGHT):
                r = client.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(x)))
                assert r.status_code == 200, r.text
                assert r.json()["outputs"][0]["data"] == models.iris_estimator.predict(x).tolist()
    finally:
        driver.join()
    for s in slow:
        assert_cut(s, BODY_TIMEOUT_S, 408, "slow inference body")


# --- all at once, while others are served ------------------------------------------------
def _served(server: Server, models: Models, seconds: float) -> tuple[list[int], list[float]]:
    """Inference requests one after the other for `seconds`, alternately on one keep-alive
    connection and on new ones: their statuses and latencies (wrong predictions fail)."""
    x = models.iris_x[100:101]
    expected = models.iris_estimator.predict(x).tolist()
    content = orjson.dumps(infer_body(x))
    statuses, latencies = [], []
    end = time.monotonic() + seconds
    with server.client() as kept:
        while time.monotonic() < end:
            for client in (kept, None):
                started = time.perf_counter()
                if client is None:
                    with server.client() as fresh:
                        r = fresh.post("/v2/models/iris/infer", content=content)
                else:
                    r = client.post("/v2/models/iris/infer", content=content)
                latencies.append(time.perf_counter() - started)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    assert r.json()["outputs"][0]["data"] == expected
    return statuses, latencies


def test_others_are_served_during_a_slow_client_attack(server: Server, models: Models) -> None:
    head, body = infer_request(orjson.dumps(infer_body(models.iris_x[:1])))
    trickled_head = GOOD[:-2] + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    attack_s = BODY_TIMEOUT_S + 2.5
    with ThreadPoolExecutor(2) as pool:
        baseline = pool.submit(_served, server, models, 1.0).result()
        attackers = (
            [open_slow(server, b"", trickled_head, every=0.05) for _ in range(150)]  # slowloris
            + [open_slow(server, b"", b"\0", every=1e9) for _ in range(50)]  # silent
            + [open_slow(server, head, body, every=0.1) for _ in range(4 * MAX_INFLIGHT)]
        )
        attack = pool.submit(drive, attackers, attack_s)
        time.sleep(0.2)
        statuses, latencies = pool.submit(_served, server, models, BODY_TIMEOUT_S + 1).result()
        attack.result()
    # every request of the others was answered, right, and none was refused
    assert statuses, "no request was served during the attack"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    p50 = statistics.median(latencies)
    base_p50 = statistics.median(baseline[1])
    assert p50 < max(20 * base_p50, 0.05), (p50, base_p50)
    # and every attacker was cut off by the server, in time
    heads = attackers[:200]
    bodies = attackers[200:]
    for s in heads:
        assert_cut(s, HEADER_TIMEOUT_S, 408, "attacking head")
    for s in bodies:
        assert_cut(s, BODY_TIMEOUT_S, 408, "attacking body")
    assert "connection(s) whose request head was not complete within 1 s" in server.log()


# --- gRPC: a connection that never speaks HTTP/2 ----------------------------------------
def test_grpc_connection_that_sends_nothing_is_closed(server: Server) -> None:
    host, port = server.grpc_target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT_S + 10)
    started = time.monotonic()
    with sock:
        try:
            while sock.recv(65536):  # the server's SETTINGS, then its close
                pass
        except ConnectionResetError:
            pass
    elapsed = time.monotonic() - started
    assert HEADER_TIMEOUT_S - 0.05 <= elapsed <= HEADER_TIMEOUT_S + LATE_S + 1, elapsed
    # the port still serves
    assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
