"""Soak benchmark of the model server (issue 14): canarium-serve at saturation for minutes, its
memory and tail latency over time; then how fast a request beyond the in-flight limit is refused.

    make bench-soak                                    # 3 minutes of soak, about 4 in all
    .venv/bin/python -m tests.bench.bench_soak --duration 600 --interval 30 --json out.json

1. Soak. canarium-serve with its defaults (iris, LogisticRegression, trained here; dynamic
   batching on, in-flight limit 128) is loaded by h2load in another process (Debian's
   nghttp2-client, installed with apt-get when missing): HTTP/1.1, one request in flight per
   connection, `--connections` (32) of them, for `--duration` seconds (180) after a `--warmup`
   run (5 s): the server process is busy all the time (its CPU % is printed). Every second this
   process samples the server's RSS (/proc/PID/status VmRSS) and CPU time. Per `--interval`
   (15 s): requests/s, p50/p99/max latency (from h2load's per-request log), non-200 answers, the
   RSS at the interval's end and CPU %. Then:
   - RSS drift: the last interval's RSS against the first interval's (which includes allocator
     and caches warming up), in % (acceptance: < 10 %), and the RSS slope over the run after the
     first interval (MB/min, least squares), which a leak shows whatever the run's length;
   - p99 stability: the intervals' p99 spread (max/min, and max/median) and the trend (median of
     the last third over the median of the first third).
2. Overload. Another canarium-serve with the defaults, loaded by h2load with `--overload-
   connections` (256, twice the in-flight limit) for `--overload-duration` s (20): at most 128 are
   admitted at a time and the others are refused with 503. The latency of those 503 answers,
   as the clients see them on a saturated server (p50, p99, max; goal: p99 within 10 ms), next
   to the latency of the 200 answers.
3. Overload, isolated. A server whose in-flight slots are all held (4 slots, each held by a
   request waiting 5 s in an open batch), otherwise idle: `--probes` (500) requests one after
   the other on one keep-alive connection, each timed to its whole 503 answer: the cost of a
   refusal itself.

Nothing is asserted: the figures and the acceptance lines (PASS/MISS) are printed, and the exit
status is 0 unless the benchmark itself fails (a server that dies or stops answering 200 during
the soak fails it). Servers and h2load run in their own process groups, stopped on any exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.bench_serving import ensure_tool, free_port, process, server_env, wait_ready

HOST = "127.0.0.1"
DEFAULT_MAX_INFLIGHT = 128  # canarium-serve's, with its default batch size
RSS_DRIFT_LIMIT_PCT = 10.0
OVERLOAD_GOAL_MS = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the model and the server ----------------------------------------------------------------
def build_iris(root: Path) -> tuple[Path, bytes]:
    """The iris model (ONNX) and a one-row inference request body for it."""
    from canarium_serving.packaging import build_model
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    x = iris.data.astype(np.float32)
    built = build_model(LogisticRegression(max_iter=1000).fit(x, iris.target), x, root, name="iris")
    row = [float(v) for v in x[75]]
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    return built.model_path, json.dumps(body).encode()


@contextmanager
def canarium(work: Path, model: Path, name: str, *args: str) -> Iterator[tuple[int, int]]:
    """canarium-serve on a free port (no gRPC): its port and pid, ready."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "canarium_serving.cli", "--model-uri", str(model),
        "--model-name", "iris", "--host", HOST, "--port", str(port), "--grpc-port", "0",
        "--model-cache-dir", str(work / "cache"), "--log-level", "warning", *args,
    ]  # fmt: skip
    with process(cmd, work / f"{name}.log", server_env()) as proc:
        wait_ready(f"http://{HOST}:{port}/v2/health/ready", proc)
        yield port, proc.pid
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited with {proc.returncode}")


# --- sampling the server process -------------------------------------------------------------
@dataclass
class Sample:
    at: float  # time.time()
    rss_mb: float
    cpu_s: float  # user + system CPU seconds so far


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    return Sample(time.time(), rss_kb / 1024, cpu)


class Sampler(threading.Thread):
    """Samples `pid` every `every` seconds until stopped."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append(sample(self.pid))
            self._done.wait(self.every)

    def stop(self) -> list[Sample]:
        self._done.set()
        self.join()
        self.samples.append(sample(self.pid))
        return self.samples


# --- the load --------------------------------------------------------------------------------
@dataclass
class Requests:
    """h2load's per-request log: start (s since the epoch), HTTP status, duration (ms)."""

    start: np.ndarray[Any, Any]
    status: np.ndarray[Any, Any]
    ms: np.ndarray[Any, Any]


def h2load(
    tool: str, url: str, body: Path, connections: int, seconds: float, log: Path | None
) -> tuple[str, Requests | None]:
    """One h2load run (HTTP/1.1, one request in flight per connection): its summary, and its
    per-request log when `log` is given."""
    if log is not None:
        log.unlink(missing_ok=True)  # h2load appends
    cmd = [
        tool, "--h1", "-t1", f"-c{connections}", "-m1", f"-D{round(seconds * 1000)}ms",
        "-d", str(body), "-H", "content-type: application/json",
        *(["--log-file", str(log)] if log is not None else []), url,
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 120, check=False,
        start_new_session=True,
    )  # fmt: skip
    if out.returncode != 0 or "finished in" not in out.stdout:
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stdout[-800:]}{out.stderr}")
    if log is None:
        return out.stdout, None
    table = np.loadtxt(log, dtype=np.int64, delimiter="\t", ndmin=2)
    return out.stdout, Requests(table[:, 0] / 1e6, table[:, 1], table[:, 2] / 1e3)


# --- 1. soak ---------------------------------------------------------------------------------
@dataclass
class Interval:
    index: int
    start_s: float
    end_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    rss_mb: float
    cpu_pct: float


@dataclass
class Soak:
    connections: int
    duration_s: float
    interval_s: float
    intervals: list[Interval] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_drift_pct: float = 0.0
    rss_slope_mb_per_min: float = 0.0
    p99_median_ms: float = 0.0
    p99_spread: float = 0.0  # max / min
    p99_peak: float = 0.0  # max / median
    p99_trend: float = 0.0  # median of the last third / median of the first third
    requests: int = 0
    errors: int = 0


def _at(samples: list[Sample], t: float) -> Sample:
    """The last sample at or before time t (the first one if none)."""
    before = [s for s in samples if s.at <= t]
    return before[-1] if before else samples[0]


def soak(args: argparse.Namespace, tool: str, work: Path, model: Path, body: Path) -> Soak:
    with canarium(work, model, "soak") as (port, pid):
        url = f"http://{HOST}:{port}/v2/models/iris/infer"
        print(f"soak: warm-up {args.warmup:g} s, then {args.duration:g} s, ", end="")
        print(f"{args.connections} connections, intervals of {args.interval:g} s", flush=True)
        h2load(tool, url, body, args.connections, args.warmup, None)
        sampler = Sampler(pid)
        sampler.start()
        _, log = h2load(tool, url, body, args.connections, args.duration, work / "h2load-soak.log")
        samples = sampler.stop()
        assert log is not None
        # the server still answers, and its metrics too
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
            assert r.status == 200
    result = Soak(args.connections, args.duration, args.interval)
    t0 = float(log.start.min())
    count = max(1, round(args.duration / args.interval))
    for i in range(count):
        lo, hi = t0 + i * args.interval, t0 + (i + 1) * args.interval
        mask = (log.start >= lo) & (log.start < hi)
        if i == count - 1:
            mask = log.start >= lo
        ms, status = log.ms[mask], log.status[mask]
        if ms.size == 0:
            continue
        first, last = _at(samples, lo), _at(samples, hi)
        span = max(last.at - first.at, 1e-9)
        result.intervals.append(
            Interval(
                index=i + 1,
                start_s=i * args.interval,
                end_s=(i + 1) * args.interval,
                requests=int(ms.size),
                rps=ms.size / args.interval,
                p50_ms=float(np.percentile(ms, 50)),
                p99_ms=float(np.percentile(ms, 99)),
                max_ms=float(ms.max()),
                errors=int(np.count_nonzero(status != 200)),
                rss_mb=last.rss_mb,
                cpu_pct=100 * (last.cpu_s - first.cpu_s) / span,
            )
        )
    rows = result.intervals
    result.requests = sum(r.requests for r in rows)
    result.errors = sum(r.errors for r in rows)
    result.rss_start_mb, result.rss_end_mb = rows[0].rss_mb, rows[-1].rss_mb
    result.rss_drift_pct = 100 * (result.rss_end_mb - result.rss_start_mb) / result.rss_start_mb
    after = [s for s in samples if s.at >= t0 + args.interval]
    if len(after) >= 2:
        minutes = np.array([(s.at - after[0].at) / 60 for s in after])
        rss = np.array([s.rss_mb for s in after])
        result.rss_slope_mb_per_min = float(np.polyfit(minutes, rss, 1)[0])
    p99 = [r.p99_ms for r in rows]
    third = max(1, len(p99) // 3)
    result.p99_median_ms = statistics.median(p99)
    result.p99_spread = max(p99) / min(p99)
    result.p99_peak = max(p99) / result.p99_median_ms
    result.p99_trend = statistics.median(p99[-third:]) / statistics.median(p99[:third])
    return result


def report_soak(result: Soak) -> None:
    print()
    print(
        "| interval | s | requests | req/s | p50 ms | p99 ms | max ms | non-200 | RSS MB | CPU % |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result.intervals:
        print(
            f"| {r.index} | {r.start_s:.0f}-{r.end_s:.0f} | {r.requests} | {r.rps:.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | {r.errors} | "
            f"{r.rss_mb:.1f} | {r.cpu_pct:.0f} |"
        )
    verdict = "PASS" if abs(result.rss_drift_pct) < RSS_DRIFT_LIMIT_PCT else "MISS"
    print()
    print(
        f"requests: {result.requests} in {result.duration_s:g} s, {result.errors} not 200; "
        f"{result.connections} connections"
    )
    print(
        f"RSS drift: {result.rss_start_mb:.1f} MB after the first interval, "
        f"{result.rss_end_mb:.1f} MB at the end: {result.rss_drift_pct:+.1f} % "
        f"(acceptance < {RSS_DRIFT_LIMIT_PCT:g} %): {verdict}; slope after the first interval "
        f"{result.rss_slope_mb_per_min:+.2f} MB/min"
    )
    print(
        f"p99 stability: median {result.p99_median_ms:.2f} ms over the intervals; max/min "
        f"{result.p99_spread:.2f}, max/median {result.p99_peak:.2f}; last third / first third "
        f"{result.p99_trend:.2f}"
    )


# --- 2. overload, saturated ------------------------------------------------------------------
@dataclass
class Overload:
    connections: int
    duration_s: float
    limit: int
    refused: int = 0
    served: int = 0
    other: int = 0
    refused_p50_ms: float = 0.0
    refused_p99_ms: float = 0.0
    refused_max_ms: float = 0.0
    served_p50_ms: float = 0.0
    served_p99_ms: float = 0.0
    refused_rps: float = 0.0
    served_rps: float = 0.0
    isolated_p50_ms: float = 0.0
    isolated_p99_ms: float = 0.0
    isolated_max_ms: float = 0.0
    isolated_probes: int = 0


def overload(args: argparse.Namespace, tool: str, work: Path, model: Path, body: Path) -> Overload:
    limit = args.overload_max_inflight
    extra = [] if limit == DEFAULT_MAX_INFLIGHT else ["--max-inflight", str(limit)]
    result = Overload(args.overload_connections, args.overload_duration, limit)
    with canarium(work, model, "overload", *extra) as (port, _):
        url = f"http://{HOST}:{port}/v2/models/iris/infer"
        print(
            f"overload: {args.overload_connections} connections for "
            f"{args.overload_duration:g} s against an in-flight limit of {limit}",
            flush=True,
        )
        log_path = work / "h2load-overload.log"
        connections, seconds = args.overload_connections, args.overload_duration
        _, log = h2load(tool, url, body, connections, seconds, log_path)
    assert log is not None
    refused, served = log.ms[log.status == 503], log.ms[log.status == 200]
    result.refused, result.served = int(refused.size), int(served.size)
    result.other = int(log.ms.size - refused.size - served.size)
    if refused.size:
        result.refused_p50_ms, result.refused_p99_ms = map(float, np.percentile(refused, [50, 99]))
        result.refused_max_ms = float(refused.max())
        result.refused_rps = refused.size / args.overload_duration
    if served.size:
        result.served_p50_ms, result.served_p99_ms = map(float, np.percentile(served, [50, 99]))
        result.served_rps = served.size / args.overload_duration
    isolated(args, work, model, body, result)
    return result


# --- 3. overload, isolated -------------------------------------------------------------------
def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head


def isolated(
    args: argparse.Namespace, work: Path, model: Path, body: Path, result: Overload
) -> None:
    held_s, slots = 5.0, 4
    hold = ["--max-inflight", str(slots), "--batch-max-size", "64"]
    hold += ["--batch-max-wait-ms", str(int(held_s * 1000))]
    content = body.read_bytes()
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(content)).encode()
        + b"\r\n\r\n"
        + content
    )
    with canarium(work, model, "isolated", *hold) as (port, _):
        print(
            f"overload, isolated: {slots} slots held, {args.probes} requests on one connection",
            flush=True,
        )
        holders = [socket.create_connection((HOST, port), timeout=30) for _ in range(slots)]
        with ExitStack() as stack:
            for sock in holders:
                stack.enter_context(sock)
                sock.sendall(request)
            time.sleep(0.3)  # admitted, waiting in the open batch
            times = []
            with socket.create_connection((HOST, port), timeout=10) as probe:
                probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                deadline = time.monotonic() + held_s - 1
                while len(times) < args.probes and time.monotonic() < deadline:
                    started = time.perf_counter()
                    probe.sendall(request)
                    head = _read_response(probe)
                    times.append((time.perf_counter() - started) * 1000)
                    if not head.startswith(b"HTTP/1.1 503"):
                        raise RuntimeError(f"expected a 503, got {head[:60]!r}")
            for sock in holders:
                if not _read_response(sock).startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("a held request was not answered 200")
    ms = np.array(times)
    result.isolated_probes = int(ms.size)
    result.isolated_p50_ms, result.isolated_p99_ms = map(float, np.percentile(ms, [50, 99]))
    result.isolated_max_ms = float(ms.max())


def report_overload(result: Overload) -> None:
    verdict = "PASS" if result.refused_p99_ms <= OVERLOAD_GOAL_MS else "MISS"
    total = result.refused + result.served + result.other
    print()
    print(
        f"overload ({result.connections} connections, in-flight limit {result.limit}, "
        f"{result.duration_s:g} s): {result.refused} refused with 503 "
        f"({100 * result.refused / max(total, 1):.0f} %, {result.refused_rps:.0f}/s), "
        f"{result.served} served ({result.served_rps:.0f}/s), {result.other} other"
    )
    print(
        f"  503 answered in p50 {result.refused_p50_ms:.2f} ms, p99 {result.refused_p99_ms:.2f} "
        f"ms, max {result.refused_max_ms:.1f} ms (goal p99 <= {OVERLOAD_GOAL_MS:g} ms): {verdict}"
    )
    print(f"  200 answered in p50 {result.served_p50_ms:.2f} ms, p99 {result.served_p99_ms:.2f} ms")
    print(
        f"overload, isolated (slots held, server otherwise idle, {result.isolated_probes} "
        f"requests): 503 in p50 {result.isolated_p50_ms:.3f} ms, p99 "
        f"{result.isolated_p99_ms:.3f} ms, max {result.isolated_max_ms:.2f} ms"
    )


# --- main ------------------------------------------------------------------------------------
def _stop_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `process` block: servers stop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=180, help="soak seconds")
    parser.add_argument("--interval", type=float, default=15, help="seconds per table row")
    parser.add_argument("--warmup", type=float, default=5, help="seconds before the soak")
    parser.add_argument("--connections", type=int, default=32, help="soak connections")
    parser.add_argument("--overload-connections", type=int, default=256)
    parser.add_argument("--overload-duration", type=float, default=20)
    parser.add_argument(
        "--overload-max-inflight",
        type=int,
        default=DEFAULT_MAX_INFLIGHT,
        help="the overloaded server's --max-inflight (default: its default)",
    )
    parser.add_argument("--probes", type=int, default=500, help="isolated 503s timed")
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument("--skip-soak", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    tool = ensure_tool("h2load", "nghttp2-client")
    started = time.monotonic()
    load_before = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="canarium-soak-") as tmp:
        work = Path(tmp)
        model, content = build_iris(work / "iris")
        body = work / "body.json"
        body.write_bytes(content)
        soaked = None if args.skip_soak else soak(args, tool, work, model, body)
        over = None if args.skip_overload else overload(args, tool, work, model, body)
    if soaked is not None:
        report_soak(soaked)
    if over is not None:
        report_overload(over)
    print(
        f"\nwall time {time.monotonic() - started:.0f} s; load average "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    if args.json:
        out = {
            "soak": None if soaked is None else asdict(soaked),
            "overload": None if over is None else asdict(over),
            "load_average": [load_before[0], os.getloadavg()[0]],
        }
        args.json.write_text(json.dumps(out, indent=2))
    if soaked is not None and soaked.errors:
        print(f"the server answered {soaked.errors} requests with other than 200", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
