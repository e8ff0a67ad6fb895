"""Serving benchmark: canarium-serve vs MLServer 1.7 (scikit-learn runtime) vs onnxruntime
in-process, same machine, same models, same load, one run.

    .venv/bin/python tests/bench/bench_serving.py [--duration 10] [--connections 16]

Models: iris (LogisticRegression) and digits (RandomForestClassifier, 100 trees, 64 features),
both trained here from datasets bundled with scikit-learn. Each server gets the same wrk load
(one wrk thread, N keep-alive connections, fixed duration, one V2 POST body with one row) on
127.0.0.1 after a warm-up. MLServer runs from its own virtual environment
(~/.cache/canarium/mlserver-venv, created from PyPI on first use) with its defaults. The
ceiling is the same ONNX model called in a loop in this process on one thread (no HTTP).
wrk comes from Debian (installed with apt-get when missing). Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("CANARIUM_CACHE", Path.home() / ".cache" / "canarium"))
MLSERVER_VENV = CACHE / "mlserver-venv"
MLSERVER_VERSION = "1.7.1"
HOST = "127.0.0.1"


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    note: str = ""


# --- setup -----------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not available")
    return found


def ensure_mlserver() -> Path:
    import sklearn

    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    stamp = MLSERVER_VENV / f".installed-{MLSERVER_VERSION}-sklearn-{sklearn.__version__}-uvloop"
    if mlserver.exists() and stamp.exists():
        return mlserver
    print(f"creating {MLSERVER_VENV} with MLServer {MLSERVER_VERSION}...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True, timeout=300)
    pip = MLSERVER_VENV / "bin" / "pip"
    subprocess.run(
        [
            str(pip),
            "install",
            "-q",
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            # the same scikit-learn as here, so the pickled models load without warnings
            f"scikit-learn=={sklearn.__version__}",
            # MLServer 1.7.1's inference workers call asyncio.get_event_loop() with no loop
            # set, which uvloop >= 0.22 turns into an error (the pool dies at start).
            "uvloop<0.22",
        ],
        check=True,
        timeout=1800,
    )
    stamp.touch()
    return mlserver


@dataclass
class BenchModel:
    name: str
    onnx: Path
    joblib: Path
    row: list[float]


def build_models(root: Path) -> list[BenchModel]:
    import joblib  # type: ignore[import-untyped]
    from canarium_serving.packaging import build_model
    from sklearn.datasets import load_digits, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    out = []
    iris = load_iris()
    x = iris.data.astype(np.float32)
    clf = LogisticRegression(max_iter=1000).fit(x, iris.target)
    digits = load_digits()
    xd = digits.data.astype(np.float32)
    rf = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(xd, digits.target)
    for name, est, data in (("iris", clf, x), ("digits", rf, xd)):
        built = build_model(est, data, root / name, name=name)
        jl = root / name / "model.joblib"
        joblib.dump(est, jl)
        out.append(BenchModel(name, built.model_path, jl, data[len(data) // 2].tolist()))
    return out


def body_for(model: BenchModel) -> bytes:
    doc = {
        "inputs": [
            {"name": "input", "shape": [1, len(model.row)], "datatype": "FP32", "data": model.row}
        ]
    }
    return json.dumps(doc).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready in {timeout}s")


@contextmanager
def process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


# --- load ------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Ctx:
    wrk: str
    args: argparse.Namespace
    work: Path


def run_wrk(ctx: Ctx, url: str, body: bytes, duration: int) -> Result:
    wrk, connections = ctx.wrk, ctx.args.connections
    lua = ctx.work / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    cmd = [
        wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "--latency",
        "-s", str(lua), url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    return Result("", rps, p50, p99, errors)


def check_answer(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    assert doc.get("outputs"), doc


def bench_canarium(ctx: Ctx, model: BenchModel, *, extra: list[str], label: str) -> Result:
    work = ctx.work
    port = free_port()
    cmd = [
        sys.executable, "-m", "canarium_serving.cli", "--model-uri", str(model.onnx),
        "--model-name", model.name, "--host", HOST, "--port", str(port),
        "--log-level", "warning", *extra,
    ]  # fmt: skip
    env = {**os.environ, "CANARIUM_MODEL_CACHE_DIR": str(work / "cache")}
    with process(cmd, work / f"{label}-{model.name}.log", env) as proc:
        wait_ready(f"http://{HOST}:{port}/v2/health/ready", proc)
        return load(ctx, f"http://{HOST}:{port}/v2/models/{model.name}/infer", model, label)


def bench_mlserver(ctx: Ctx, model: BenchModel, mlserver: Path) -> Result:
    work = ctx.work
    repo = work / f"mlserver-{model.name}"
    (repo / model.name).mkdir(parents=True, exist_ok=True)
    shutil.copy(model.joblib, repo / model.name / "model.joblib")
    port, grpc, metrics = free_port(), free_port(), free_port()
    (repo / "settings.json").write_text(
        json.dumps({"host": HOST, "http_port": port, "grpc_port": grpc, "metrics_port": metrics})
    )
    (repo / model.name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1"},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARIUM_")}
    log = work / f"mlserver-{model.name}.log"
    with process([str(mlserver), "start", str(repo)], log, env) as p:
        wait_ready(f"http://{HOST}:{port}/v2/models/{model.name}/ready", p)
        return load(ctx, f"http://{HOST}:{port}/v2/models/{model.name}/infer", model, "mlserver")


def load(ctx: Ctx, url: str, model: BenchModel, label: str) -> Result:
    body = body_for(model)
    check_answer(url, body)
    run_wrk(ctx, url, body, ctx.args.warmup)  # warm-up
    result = run_wrk(ctx, url, body, ctx.args.duration)
    result.name = label
    return result


def bench_in_process(model: BenchModel, duration: float) -> Result:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model.onnx), options, providers=["CPUExecutionProvider"])
    feed = {"input": np.asarray([model.row], dtype=np.float32)}
    for _ in range(200):
        sess.run(None, feed)
    times: list[float] = []
    perf = time.perf_counter
    end = perf() + duration
    while True:
        t0 = perf()
        sess.run(None, feed)
        t1 = perf()
        times.append(t1 - t0)
        if t1 >= end:
            break
    q = statistics.quantiles(times, n=100)
    return Result("onnxruntime in-process", len(times) / sum(times), q[49] * 1e3, q[98] * 1e3)


# --- report ----------------------------------------------------------------------------


def report(model: str, results: list[Result], connections: int) -> None:
    ml = next((r for r in results if r.name == "mlserver"), None)
    print(f"\n== {model}: {connections} connections ==")
    head = f"{'server':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
    print(f"{head}{'x req/s':>10}{'p99 ratio':>11}")
    for r in results:
        ratio = f"{r.rps / ml.rps:>10.1f}" if ml and ml.rps else f"{'':>10}"
        p99r = f"{r.p99_ms / ml.p99_ms:>11.2f}" if ml and ml.p99_ms else f"{'':>11}"
        err = f"  ({r.errors} errors)" if r.errors else ""
        print(f"{r.name:<28}{r.rps:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{ratio}{p99r}{err}")
    ours = next((r for r in results if r.name == "canarium"), None)
    if ours and ml:
        ok = ours.rps >= 5 * ml.rps and ours.p99_ms <= ml.p99_ms / 3
        print(
            f"canarium vs MLServer: {ours.rps / ml.rps:.1f}x req/s, "
            f"p99 {ours.p99_ms / ml.p99_ms:.2f}x "
            f"(target >= 5x and <= 0.33x: {'met' if ok else 'NOT met'})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per server")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--models", default="iris,digits")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--no-batching",
        action="store_true",
        help="also run canarium-serve with dynamic batching off",
    )
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    mlserver = None if args.skip_mlserver else ensure_mlserver()
    with tempfile.TemporaryDirectory(prefix="canarium-bench-") as tmp:
        work = Path(tmp)
        models = [m for m in build_models(work / "models") if m.name in args.models.split(",")]
        print(f"machine: {os.cpu_count()} CPUs; wrk: 1 thread, {args.connections} connections, "
              f"{args.duration}s after {args.warmup}s warm-up; one row per request")  # fmt: skip
        ctx = Ctx(wrk, args, work)
        for model in models:
            # canarium-serve with its defaults: dynamic batching on (32 rows, no added wait)
            results = [bench_canarium(ctx, model, extra=[], label="canarium")]
            if args.no_batching:
                off = ["--batch-max-size", "0"]
                results.append(
                    bench_canarium(ctx, model, extra=off, label="canarium (no batching)")
                )
            if mlserver is not None:
                results.append(bench_mlserver(ctx, model, mlserver))
            results.append(bench_in_process(model, min(args.duration, 5)))
            report(model.name, results, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
