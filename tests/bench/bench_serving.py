"""Serving benchmark (issue 12): canarium-serve (REST JSON, REST binary, gRPC) vs KServe 0.21's
Python model server vs MLServer 1.7.1, with two ceilings (onnxruntime in-process, and a no-op
HTTP server answering the same bytes), same machine, same models, same load generator, one run.

    .venv/bin/python tests/bench/bench_serving.py [--duration 5] [--warmup 2] [--rounds 1] \
        [--connections 1,16] [--models iris,digits] [--no-batching] [--json out.json]

Models: iris (LogisticRegression, 4 features) and digits (RandomForestClassifier, 100 trees,
64 features), trained here from datasets bundled with scikit-learn; one row per request.

Load: h2load (Debian's nghttp2-client, installed with apt-get when missing) for every row
that crosses a socket: `--h1` for REST, HTTP/2 cleartext for gRPC (POSTs to
/inference.GRPCInferenceService/ModelInfer with one gRPC frame as the body). One h2load thread,
N connections, one request in flight per connection; a warm-up run, then a measured `-D` run;
req/s from h2load's summary, p50/p99 from its per-request `--log-file`. Before each row, one
real request checks the answer is the right prediction (gRPC: a grpcio call with the very bytes
h2load sends, so grpc-status is checked, which h2load does not do); during the run, failed gRPC
calls (HTTP 200, no message, an error in trailers) are counted from h2load's data bytes.

Per model, every server is started first and stays up (idle when not loaded); then each round
loads every row at one connection count after the other, in an order that puts the rows each
target compares next to each other in time (this machine is shared: its background load moves).
With --rounds N every figure is the median of N rounds (default 1: about 7 minutes in all;
--rounds 3: about 15).

Rows:
- canarium-serve, defaults (dynamic batching on): REST JSON, REST binary (the binary tensor
  data extension, outputs asked back as binary), gRPC (when this canarium-serve has
  --grpc-port); with --no-batching also REST JSON with batching off.
- KServe 0.21: kserve.ModelServer + a kserve.Model subclass (tests/bench/kserve_predictor.py)
  with KServe's defaults; REST V2 JSON and gRPC V2. Two predictors are tried per model
  (scikit-learn on the joblib'd estimator, and onnxruntime on the ONNX file) with short
  16-connection REST probes, taken alternately twice; the faster one is benchmarked and named.
- MLServer 1.7.1 (its scikit-learn runtime, own venv in ~/.cache/canarium/mlserver-venv,
  created from PyPI on first use), REST JSON.
- Ceilings: nginx (Debian, one worker, `return 200` with canarium-serve's exact REST JSON
  answer), a no-op ASGI app on uvicorn configured like canarium-serve (tests/bench/noop_asgi.py),
  a no-op grpc.aio server answering canarium-serve's exact gRPC answer (tests/bench/noop_grpc.py,
  the ceiling of the gRPC stack that canarium-serve and KServe use), and the ONNX model called
  in a loop in this process on one thread (no HTTP).

Servers listen on 127.0.0.1 only. Every step is bounded in time, and every server is stopped
(its whole process group) on any exit. Targets are measured and printed as PASS/MISS, never
asserted: the exit status is 0 unless the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("CANARIUM_CACHE", Path.home() / ".cache" / "canarium"))
MLSERVER_VENV = CACHE / "mlserver-venv"
MLSERVER_VERSION = "1.7.1"
HOST = "127.0.0.1"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"

# Rows, in table order: key -> label.
ROWS = {
    "canarium-rest-json": "canarium-serve REST JSON",
    "canarium-rest-binary": "canarium-serve REST binary",
    "canarium-grpc": "canarium-serve gRPC",
    "canarium-rest-json-nobatch": "canarium-serve REST JSON, no batching",
    "kserve-rest-json": "KServe REST JSON",
    "kserve-grpc": "KServe gRPC",
    "mlserver-rest-json": "MLServer REST JSON",
    "noop-nginx": "ceiling: nginx no-op",
    "noop-uvicorn": "ceiling: uvicorn no-op ASGI",
    "noop-grpc": "ceiling: grpc.aio no-op",
    "onnxruntime-in-process": "ceiling: onnxruntime in-process",
}


# The order in which a round loads the rows: what each target compares with canarium-serve's
# REST JSON (its gRPC, its binary REST, KServe's REST, nginx) is measured next to it in time.
ROWS_ORDER = [
    "canarium-grpc",
    "canarium-rest-binary",
    "canarium-rest-json",
    "kserve-rest-json",
    "noop-nginx",
    "kserve-grpc",
    "noop-grpc",
    "canarium-rest-json-nobatch",
    "mlserver-rest-json",
    "noop-uvicorn",
]


@dataclass
class Result:
    key: str
    model: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    errors: int = 0
    note: str = ""
    rps_rounds: list[float] = field(default_factory=list)


@dataclass
class BenchModel:
    name: str
    onnx: Path
    joblib: Path
    row: list[float]
    label: int  # the estimator's prediction for `row`: every server must answer it


@dataclass
class Endpoint:
    """One thing h2load can load: a URL, a body file, headers, and HTTP/1.1 or h2c."""

    url: str
    body: Path
    headers: list[str]
    h1: bool = True


@dataclass
class Row:
    """One row of the tables: what to load, and for gRPC the size of a real answer's frame."""

    key: str
    endpoint: Endpoint
    frame_bytes: int = 0


@dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    h2load: str
    connections: list[int]
    results: list[Result] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# --- setup -----------------------------------------------------------------------------


def ensure_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` with apt-get when it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if found:
        return found
    print(f"installing {package} (apt-get)...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin")
    if not found:
        raise SystemExit(f"{binary} is not available")
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


def build_models(root: Path) -> list[BenchModel]:
    import joblib  # type: ignore[import-untyped,unused-ignore]
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
        row = data[len(data) // 2]
        label = int(est.predict(row.reshape(1, -1))[0])
        out.append(BenchModel(name, built.model_path, jl, row.tolist(), label))
    return out


def server_env() -> dict[str, str]:
    """The environment of every server: this one without CANARIUM_* and OPENBLAS_* settings.

    OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE may be set on this machine to keep old OpenBLAS builds
    correct; they slow the current numpy the scikit-learn servers use, so they are dropped
    (each answer is still checked against the expected prediction before its row)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANARIUM_", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
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
    """Run `cmd` in its own session (process group); stop the whole group on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    except Exception:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print(f"--- last lines of {log.name} ---", *tail, "---", sep="\n", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group still there


# --- request bodies and answer checks --------------------------------------------------


def json_body(model: BenchModel) -> bytes:
    doc = {
        "inputs": [
            {"name": "input", "shape": [1, len(model.row)], "datatype": "FP32", "data": model.row}
        ]
    }
    return json.dumps(doc).encode()


def binary_body(model: BenchModel) -> tuple[bytes, int]:
    """Triton's binary tensor data extension: a JSON header, then the raw tensor bytes."""
    raw = np.asarray([model.row], dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, len(model.row)],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


def grpc_message(model: BenchModel) -> bytes:
    """A serialized ModelInferRequest with the row as raw_input_contents (as tritonclient)."""
    from tritonclient.grpc import service_pb2  # type: ignore[import-untyped]

    request = service_pb2.ModelInferRequest(
        model_name=model.name,
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[1, len(model.row)]
            )
        ],
        raw_input_contents=[np.asarray([model.row], dtype="<f4").tobytes()],
    )
    data: bytes = request.SerializeToString()
    return data


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: flag 0 (not compressed), 4-byte big-endian length."""
    return b"\0" + struct.pack(">I", len(message)) + message


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read(), {k.lower(): v for k, v in r.headers.items()}


def check_json(url: str, body: bytes, model: BenchModel) -> bytes:
    """POST the REST JSON body once; the answer must hold the expected label. Returns it."""
    answer, _ = post(url, body, {"Content-Type": "application/json"})
    outputs = json.loads(answer)["outputs"]
    label = next((o for o in outputs if o["name"] == "label"), outputs[0])
    if int(label["data"][0]) != model.label:
        raise RuntimeError(f"{url} answered {answer[:300]!r}, expected label {model.label}")
    return answer


def check_binary(url: str, body: bytes, json_length: int, model: BenchModel) -> None:
    from tritonclient.http import InferResult  # type: ignore[import-untyped]

    answer, headers = post(
        url,
        body,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(json_length),
        },
    )
    length = headers.get("inference-header-content-length")
    if length is None:
        raise RuntimeError(f"{url}: no binary answer: {answer[:300]!r}")
    result = InferResult.from_response_body(answer, header_length=int(length))
    got = int(result.as_numpy("label")[0])
    if got != model.label:
        raise RuntimeError(f"{url} (binary) answered label {got}, expected {model.label}")


def check_grpc(target: str, message: bytes, model: BenchModel) -> bytes:
    """Send h2load's exact request once over grpcio: grpc-status must be OK and the label right.

    Returns the answer (serialized ModelInferResponse)."""
    import grpc
    from tritonclient.grpc import service_pb2

    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        call: Any = channel.unary_unary(GRPC_PATH)  # bytes in, bytes out
        while True:
            try:
                answer: bytes = call(message, timeout=10, wait_for_ready=True)
                break
            except grpc.RpcError as exc:
                code = exc.code()
                if code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise RuntimeError(f"gRPC {target}: {code}: {exc.details()}") from exc
                time.sleep(0.5)
    response = service_pb2.ModelInferResponse.FromString(answer)
    names = [o.name for o in response.outputs]
    i = names.index("label") if "label" in names else 0
    if response.raw_output_contents:
        got = int(np.frombuffer(response.raw_output_contents[i], dtype="<i8")[0])
    else:
        got = int(response.outputs[i].contents.int64_contents[0])
    if got != model.label:
        raise RuntimeError(f"gRPC {target} answered label {got}, expected {model.label}")
    return answer


# --- load ------------------------------------------------------------------------------


def _summary_int(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def run_h2load(
    ctx: Ctx, ep: Endpoint, connections: int, duration: float, log: Path | None = None
) -> tuple[float, float, float, int, int, int]:
    """req/s, p50 ms, p99 ms, calls done, errors, data bytes of one h2load run of `duration` s.

    p50/p99 come from the per-request log (h2load's summary has no percentiles), so only a
    run given `log` has them (a warm-up run has none: 0.0)."""
    if log is not None:
        log.unlink(missing_ok=True)  # h2load appends to its log file
    cmd = [
        ctx.h2load, *(["--h1"] if ep.h1 else []),
        "-t1", f"-c{connections}", "-m1", f"-D{round(duration * 1000)}ms",
        "-d", str(ep.body), *[a for h in ep.headers for a in ("-H", h)],
        *(["--log-file", str(log)] if log is not None else []), ep.url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    text = out.stdout
    m = re.search(r"finished in \S+, ([\d.]+) req/s", text)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"h2load failed ({out.returncode}): {text[-800:]}{out.stderr[-800:]}")
    rps = float(m.group(1))
    done = _summary_int(r"(\d+) done", text)
    errors = sum(
        _summary_int(p, text)
        for p in (r"(\d+) failed", r"(\d+) errored", r"(\d+) timeout", r"(\d+) 4xx", r"(\d+) 5xx")
    )
    data = _summary_int(r"\((\d+)\) data", text)
    if log is None:
        return rps, 0.0, 0.0, done, errors, data
    # per request: start (us since epoch), status (-1: failed stream), duration (us)
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    us = np.array([int(c[2]) for c in rows if c[1] != "-1"], dtype=np.float64)
    if us.size == 0:
        raise RuntimeError(f"h2load logged no successful request: {text[-800:]}")
    p50, p99 = np.percentile(us, [50, 99]) / 1e3
    return rps, float(p50), float(p99), done, errors, data


def measure(ctx: Ctx, row: Row, model: BenchModel, connections: int) -> Result:
    """One row at one connection count: a warm-up run, then the measured run.

    Two h2load runs rather than --warm-up-time, because h2load's data-byte count then covers
    the measured calls only; that count is how failed gRPC calls are found (`frame_bytes`)."""
    args, ep = ctx.args, row.endpoint
    run_h2load(ctx, ep, connections, args.warmup)
    rps, p50, p99, done, errors, data = run_h2load(
        ctx, ep, connections, args.duration, ctx.work / "h2load.log"
    )
    if row.frame_bytes:
        # A failed gRPC call is an HTTP 200 whose grpc-status (in trailers, which h2load does
        # not read) is not 0, and it carries no message: h2load counts it a success. Every
        # real answer is one frame of `frame_bytes` (the checked call's size).
        errors += max(0, done - data // row.frame_bytes)
    if errors > 0.001 * done:
        raise RuntimeError(f"{ROWS[row.key]}, {connections} connections: {errors} of {done} failed")
    err = f"  {errors} errors" if errors else ""
    print(
        f"  {ROWS[row.key]:<40} c={connections:<3} {rps:>9.0f} req/s  "
        f"p50 {p50:6.2f} ms  p99 {p99:7.2f} ms{err}",
        flush=True,
    )
    return Result(row.key, model.name, connections, rps, p50, p99, done, errors, rps_rounds=[rps])


def write_body(ctx: Ctx, name: str, data: bytes) -> Path:
    path = ctx.work / name
    path.write_bytes(data)
    return path


def json_endpoint(ctx: Ctx, url: str, model: BenchModel) -> Endpoint:
    body = write_body(ctx, f"{model.name}.json", json_body(model))
    return Endpoint(url, body, ["content-type: application/json"])


def grpc_row(ctx: Ctx, key: str, port: int, model: BenchModel) -> tuple[Row, bytes]:
    """The row of a gRPC port, checked with one real call; and that call's answer."""
    message = grpc_message(model)
    answer = check_grpc(f"{HOST}:{port}", message, model)
    body = write_body(ctx, f"{model.name}.grpc", grpc_frame(message))
    headers = ["content-type: application/grpc", "te: trailers"]
    ep = Endpoint(f"http://{HOST}:{port}{GRPC_PATH}", body, headers, h1=False)
    return Row(key, ep, len(grpc_frame(answer))), answer


# --- servers ---------------------------------------------------------------------------


def canarium_has_grpc() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "canarium_serving.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return "--grpc-port" in out.stdout


def start_canarium(
    ctx: Ctx, stack: contextlib.ExitStack, model: BenchModel, *, batching: bool
) -> tuple[list[Row], dict[str, bytes]]:
    """canarium-serve with its defaults (or batching off): its rows, and its answers by kind
    ("json", and "grpc" when it serves gRPC) for the no-op ceilings to send."""
    port = free_port()
    grpc_port = free_port() if batching and ctx.info["canarium_grpc"] else 0
    cmd = [
        sys.executable, "-m", "canarium_serving.cli", "--model-uri", str(model.onnx),
        "--model-name", model.name, "--host", HOST, "--port", str(port),
        "--model-cache-dir", str(ctx.work / "cache"), "--log-level", "warning",
    ]  # fmt: skip
    if ctx.info["canarium_grpc"]:
        cmd += ["--grpc-port", str(grpc_port)]
    if not batching:
        cmd += ["--batch-max-size", "0"]
    label = "canarium" if batching else "canarium-nobatch"
    proc = stack.enter_context(process(cmd, ctx.work / f"{label}-{model.name}.log", server_env()))
    wait_ready(f"http://{HOST}:{port}/v2/health/ready", proc)
    url = f"http://{HOST}:{port}/v2/models/{model.name}/infer"
    ep = json_endpoint(ctx, url, model)
    answers = {"json": check_json(url, ep.body.read_bytes(), model)}
    if not batching:
        return [Row("canarium-rest-json-nobatch", ep)], answers
    rows = [Row("canarium-rest-json", ep)]
    body, json_length = binary_body(model)
    check_binary(url, body, json_length, model)
    headers = [
        "content-type: application/octet-stream",
        f"inference-header-content-length: {json_length}",
    ]
    rows.append(
        Row(
            "canarium-rest-binary",
            Endpoint(url, write_body(ctx, f"{model.name}.bin", body), headers),
        )
    )
    if grpc_port:
        row, answers["grpc"] = grpc_row(ctx, "canarium-grpc", grpc_port, model)
        rows.append(row)
    return rows, answers


@contextmanager
def kserve_server(ctx: Ctx, model: BenchModel, backend: str) -> Iterator[tuple[int, int]]:
    port, grpc_port = free_port(), free_port()
    path = model.joblib if backend == "sklearn" else model.onnx
    cmd = [
        sys.executable, str(HERE / "kserve_predictor.py"), "--backend", backend,
        "--model_path", str(path), "--model_name", model.name,
        "--http_port", str(port), "--grpc_port", str(grpc_port),
    ]  # fmt: skip
    with process(cmd, ctx.work / f"kserve-{backend}-{model.name}.log", server_env()) as proc:
        wait_ready(f"http://{HOST}:{port}/v2/models/{model.name}/ready", proc)
        yield port, grpc_port


PREDICTORS = {"sklearn": "scikit-learn", "onnx": "onnxruntime"}


def start_kserve(ctx: Ctx, stack: contextlib.ExitStack, model: BenchModel) -> list[Row]:
    """Probe both KServe predictors (REST JSON, most connections); keep the faster one up."""
    args = ctx.args
    probe_c = max(ctx.connections)
    probes: dict[str, float] = {}
    ports: dict[str, tuple[int, int]] = {}
    stacks: dict[str, contextlib.ExitStack] = {}
    endpoints: dict[str, Endpoint] = {}
    try:
        for backend in PREDICTORS:
            stacks[backend] = contextlib.ExitStack()
            ports[backend] = stacks[backend].enter_context(kserve_server(ctx, model, backend))
            url = f"http://{HOST}:{ports[backend][0]}/v2/models/{model.name}/infer"
            ep = json_endpoint(ctx, url, model)
            check_json(url, ep.body.read_bytes(), model)
            run_h2load(ctx, ep, probe_c, 1)  # warm-up
            endpoints[backend] = ep
        for _ in range(2):  # alternately, the best of two: the machine's load moves
            for backend, predictor in PREDICTORS.items():
                rps = run_h2load(ctx, endpoints[backend], probe_c, args.kserve_probe)[0]
                probes[backend] = max(probes.get(backend, 0.0), rps)
                print(f"  KServe probe, {predictor}: {rps:.0f} req/s", flush=True)
        winner = max(probes, key=lambda b: probes[b])
        stack.push(stacks.pop(winner))  # the faster stays up until the model is done
    finally:
        for other in stacks.values():
            other.close()  # the slower predictor's server stops before the measurements
    ctx.info.setdefault("kserve", {})[model.name] = {
        "predictor": PREDICTORS[winner],
        "probe_rps": {PREDICTORS[b]: round(v, 1) for b, v in probes.items()},
        "probe": f"REST JSON, {probe_c} connections, {args.kserve_probe:g} s",
    }
    port, grpc_port = ports[winner]
    url = f"http://{HOST}:{port}/v2/models/{model.name}/infer"
    return [
        Row("kserve-rest-json", json_endpoint(ctx, url, model)),
        grpc_row(ctx, "kserve-grpc", grpc_port, model)[0],
    ]


def start_mlserver(
    ctx: Ctx, stack: contextlib.ExitStack, model: BenchModel, mlserver: Path
) -> list[Row]:
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
    log = work / f"mlserver-{model.name}.log"
    proc = stack.enter_context(process([str(mlserver), "start", str(repo)], log, server_env()))
    wait_ready(f"http://{HOST}:{port}/v2/models/{model.name}/ready", proc)
    url = f"http://{HOST}:{port}/v2/models/{model.name}/infer"
    ep = json_endpoint(ctx, url, model)
    check_json(url, ep.body.read_bytes(), model)
    return [Row("mlserver-rest-json", ep)]


def nginx_conf(work: Path, port: int, answer: bytes) -> Path:
    text = answer.decode()
    if "$" in text:
        raise RuntimeError("the answer holds '$', which nginx would read as a variable")
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    prefix = work / "nginx"
    prefix.mkdir(exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temps = "\n".join(f"  {k}_temp_path {prefix / k};" for k in kinds)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""# one worker: h2load holds the other core (2 workers measured lower on 2 cores)
worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temps}
  keepalive_requests 100000000;
  default_type application/json;
  server {{
    listen {HOST}:{port};
    location / {{ return 200 {quoted}; }}
  }}
}}
"""
    )
    return conf


def start_noop(
    ctx: Ctx,
    stack: contextlib.ExitStack,
    model: BenchModel,
    answers: dict[str, bytes],
    nginx: str | None,
) -> list[Row]:
    """The no-op ceilings, answering canarium-serve's exact REST JSON (gRPC) answer."""
    path = f"/v2/models/{model.name}/infer"
    answer = answers["json"]
    rows = []
    if nginx:
        port = free_port()
        conf = nginx_conf(ctx.work, port, answer)
        cmd = [nginx, "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")]
        log = ctx.work / f"nginx-{model.name}.log"
        proc = stack.enter_context(process(cmd, log, server_env()))
        wait_ready(f"http://{HOST}:{port}/", proc, timeout=30)
        ep = json_endpoint(ctx, f"http://{HOST}:{port}{path}", model)
        got, _ = post(ep.url, ep.body.read_bytes(), {"Content-Type": "application/json"})
        if got != answer:
            raise RuntimeError(f"nginx answers {got[:200]!r}, not {answer[:200]!r}")
        rows.append(Row("noop-nginx", ep))
    port = free_port()
    body_file = write_body(ctx, f"{model.name}.answer.json", answer)
    cmd = [
        sys.executable, str(HERE / "noop_asgi.py"), "--port", str(port),
        "--body-file", str(body_file),
    ]  # fmt: skip
    proc = stack.enter_context(process(cmd, ctx.work / f"noop-{model.name}.log", server_env()))
    wait_ready(f"http://{HOST}:{port}/", proc, timeout=60)
    ep = json_endpoint(ctx, f"http://{HOST}:{port}{path}", model)
    got, _ = post(ep.url, ep.body.read_bytes(), {"Content-Type": "application/json"})
    if got != answer:
        raise RuntimeError(f"the no-op ASGI app answers {got[:200]!r}")
    rows.append(Row("noop-uvicorn", ep))
    if "grpc" in answers:
        port = free_port()
        answer_file = write_body(ctx, f"{model.name}.answer.grpc", answers["grpc"])
        cmd = [
            sys.executable, str(HERE / "noop_grpc.py"), "--port", str(port),
            "--answer-file", str(answer_file),
        ]  # fmt: skip
        log = ctx.work / f"noop-grpc-{model.name}.log"
        stack.enter_context(process(cmd, log, server_env()))
        rows.append(grpc_row(ctx, "noop-grpc", port, model)[0])  # waits for the port
    return rows


def bench_model(ctx: Ctx, model: BenchModel, mlserver: Path | None, nginx: str | None) -> None:
    """Start every server of the model, then load their rows in turn, round after round.

    All servers stay up (idle) while another is loaded, so each round takes the rows in the
    order of ROWS_ORDER at one connection count, and the pairs that the targets compare are
    measured close in time; with --rounds > 1 each figure is the median over the rounds."""
    args = ctx.args
    with contextlib.ExitStack() as stack:
        rows, answers = start_canarium(ctx, stack, model, batching=True)
        if args.no_batching:
            rows += start_canarium(ctx, stack, model, batching=False)[0]
        if not args.skip_kserve:
            rows += start_kserve(ctx, stack, model)
        if mlserver is not None:
            rows += start_mlserver(ctx, stack, model, mlserver)
        rows += start_noop(ctx, stack, model, answers, nginx)
        rows.sort(key=lambda r: ROWS_ORDER.index(r.key))
        runs: dict[tuple[str, int], list[Result]] = {}
        for n in range(args.rounds):
            for connections in ctx.connections:
                if args.rounds > 1:
                    print(f"  round {n + 1}/{args.rounds}, {connections} connections", flush=True)
                for row in rows:
                    result = measure(ctx, row, model, connections)
                    runs.setdefault((row.key, connections), []).append(result)
    for (key, connections), results in runs.items():
        med = statistics.median
        ctx.results.append(
            Result(
                key, model.name, connections,
                med(r.rps for r in results), med(r.p50_ms for r in results),
                med(r.p99_ms for r in results), sum(r.requests for r in results),
                sum(r.errors for r in results), rps_rounds=[r.rps for r in results],
            )
        )  # fmt: skip
    bench_in_process(ctx, model, min(args.duration, 5))


def bench_in_process(ctx: Ctx, model: BenchModel, duration: float) -> None:
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
    rps, p50, p99 = len(times) / sum(times), q[49] * 1e3, q[98] * 1e3
    print(f"  {ROWS['onnxruntime-in-process']:<40} {'':<5} {rps:>9.0f} calls/s (1 thread)")
    for connections in ctx.connections:  # no connections: the same figures in every table
        ctx.results.append(
            Result(
                "onnxruntime-in-process", model.name, connections, rps, p50, p99,
                len(times), note="1 thread, no HTTP",
            )
        )  # fmt: skip


# --- report ----------------------------------------------------------------------------


def find(results: list[Result], key: str, model: str, connections: int) -> Result | None:
    return next(
        (r for r in results if (r.key, r.model, r.connections) == (key, model, connections)),
        None,
    )


def report_table(results: list[Result], model: str, connections: int) -> None:
    rows = sorted(
        (r for r in results if r.model == model and r.connections == connections),
        key=lambda r: list(ROWS).index(r.key),
    )
    if not rows:
        return
    base = find(results, "kserve-rest-json", model, connections)
    spread = any(len(r.rps_rounds) > 1 for r in rows)
    print(f"\n== {model}, {connections} connection{'s' if connections > 1 else ''} ==")
    print(
        f"{'server':<42}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'vs KServe REST req/s':>22}{'p99 vs KServe REST':>20}"
        + (f"{'req/s, rounds min-max':>24}" if spread else "")
    )
    for r in rows:
        ratio = f"{r.rps / base.rps:>21.1f}x" if base and base.rps else f"{'':>22}"
        p99r = f"{r.p99_ms / base.p99_ms:>20.3f}" if base and base.p99_ms else f"{'':>20}"
        span = ""
        if spread and len(r.rps_rounds) > 1:
            span = f"{min(r.rps_rounds):>15.0f} - {max(r.rps_rounds):<6.0f}"
        err = f"  ({r.errors} errors)" if r.errors else ""
        print(
            f"{ROWS[r.key]:<42}{r.rps:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{ratio}{p99r}{span}{err}"
        )
    ours = find(results, "canarium-rest-json", model, connections)
    for key in ("noop-nginx", "noop-uvicorn"):
        ceiling = find(results, key, model, connections)
        if ours and ceiling and ceiling.rps:
            print(f"canarium-serve REST JSON = {ours.rps / ceiling.rps:.1%} of {ROWS[key]}")


def targets(results: list[Result]) -> list[dict[str, Any]]:
    """The issue's targets, as measured in this run (iris, 16 connections unless said)."""
    out: list[dict[str, Any]] = []

    def get(key: str, model: str = "iris", connections: int = 16) -> Result | None:
        return find(results, key, model, connections)

    def add(name: str, value: float | None, ok: bool | None, shown: str, author: str = "") -> None:
        out.append({"target": name, "value": value, "pass": ok, "shown": shown, "author": author})

    ours, kserve = get("canarium-rest-json"), get("kserve-rest-json")
    if ours and kserve:
        x = ours.rps / kserve.rps
        add("REST JSON req/s >= 10x KServe REST (iris, 16 c)", x, x >= 10, f"{x:.1f}x", "16x")
        p = ours.p99_ms / kserve.p99_ms
        add("REST JSON p99 <= 1/5 KServe REST p99 (iris, 16 c)", p, p <= 0.2, f"{p:.3f}", "0.07")
    else:
        add("REST JSON req/s >= 10x KServe REST (iris, 16 c)", None, None, "not measured")
        add("REST JSON p99 <= 1/5 KServe REST p99 (iris, 16 c)", None, None, "not measured")
    grpc = get("canarium-grpc")
    if ours and grpc:
        x = grpc.rps / ours.rps
        add(
            "gRPC req/s >= REST JSON (iris, 16 c)",
            x,
            x >= 1,
            f"{x:.2f}x ({grpc.rps:.0f} vs {ours.rps:.0f})",
        )
    else:
        add("gRPC req/s >= REST JSON (iris, 16 c)", None, None, "not measured")
    jd, bd = get("canarium-rest-json", "digits"), get("canarium-rest-binary", "digits")
    if jd and bd:
        x = bd.rps / jd.rps
        add(
            "binary REST req/s >= REST JSON (digits, 16 c)",
            x,
            x >= 1,
            f"{x:.2f}x ({bd.rps:.0f} vs {jd.rps:.0f})",
        )
    for key in ("noop-nginx", "noop-uvicorn"):
        ceiling = get(key)
        if ours and ceiling:
            share = ours.rps / ceiling.rps
            author = "~15%" if key == "noop-nginx" else ""
            out.append({"target": f"share of {ROWS[key]} (iris, 16 c)", "value": share,
                        "pass": None, "shown": f"{share:.1%}", "author": author})  # fmt: skip
    return out


def report_targets(found: list[dict[str, Any]]) -> None:
    print("\n== targets (measured in this run; a MISS is reported, not an error) ==")
    for t in found:
        verdict = {True: "PASS", False: "MISS", None: "----"}[t["pass"]]
        if t["value"] is None:
            verdict = "SKIP"
        author = f"  (issue's author: {t['author']})" if t["author"] else ""
        print(f"  {verdict}  {t['target']}: {t['shown']}{author}")


# --- main ------------------------------------------------------------------------------


def _versions(h2load: str, nginx: str | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("kserve", "onnxruntime", "scikit-learn", "uvicorn", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    h2 = subprocess.run(
        [h2load, "--version"], check=False, capture_output=True, text=True, timeout=30
    )
    out["h2load"] = h2.stdout.strip().split()[-1] if h2.stdout.strip() else "?"
    if nginx:
        ng = subprocess.run([nginx, "-v"], check=False, capture_output=True, text=True, timeout=30)
        out["nginx"] = ng.stderr.strip().rsplit("/", 1)[-1]
    out["mlserver"] = MLSERVER_VERSION
    return out


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `process` block: servers stop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per row")
    parser.add_argument("--connections", default="1,16", help="comma-separated")
    parser.add_argument("--models", default="iris,digits")
    parser.add_argument(
        "--rounds", type=int, default=1, help="load every row this many times; report medians"
    )
    parser.add_argument(
        "--kserve-probe", type=float, default=2, help="seconds of each KServe predictor's probe"
    )
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-kserve", action="store_true")
    parser.add_argument("--no-nginx", action="store_true", help="no nginx ceiling row")
    parser.add_argument(
        "--no-batching", action="store_true", help="also run canarium-serve with batching off"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)
    h2load = ensure_tool("h2load", "nghttp2-client")
    nginx = None if args.no_nginx else ensure_tool("nginx", "nginx")
    mlserver = None if args.skip_mlserver else ensure_mlserver()
    connections = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="canarium-bench-") as tmp:
        ctx = Ctx(args, Path(tmp), h2load, connections)
        ctx.info.update(
            cpus=os.cpu_count(),
            loadavg_at_start=os.getloadavg(),
            versions=_versions(h2load, nginx),
            canarium_grpc=canarium_has_grpc(),
            settings={
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "connections": connections,
                "load": "h2load, 1 thread, 1 request in flight per connection",
            },
        )
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
            f"h2load {ctx.info['versions']['h2load']}: 1 thread, {args.connections} connections, "
            f"{args.duration:g} s after {args.warmup:g} s warm-up per row; one row per request"
        )
        print(
            "KServe defaults: 1 uvicorn worker (FastAPI, uvloop), an asyncio executor of "
            f"{min(32, (os.cpu_count() or 1) + 4)} threads, gRPC (grpc.aio) on its own port with "
            "4 threads, access log and per-request latency log on (to a file); MLServer defaults; "
            "canarium-serve defaults: dynamic batching on"
            + ("" if ctx.info["canarium_grpc"] else "; canarium-serve has no --grpc-port yet")
        )
        models = [m for m in build_models(ctx.work / "models") if m.name in args.models.split(",")]
        for model in models:
            print(f"\n{model.name}:", flush=True)
            bench_model(ctx, model, mlserver, nginx)
        for model in models:
            for c in connections:
                report_table(ctx.results, model.name, c)
        found = targets(ctx.results)
        report_targets(found)
        kserve = ctx.info.get("kserve", {})
        for name, k in kserve.items():
            probes = ", ".join(f"{p} {v:.0f} req/s" for p, v in k["probe_rps"].items())
            print(f"KServe predictor for {name}: {k['predictor']} (probe, {k['probe']}: {probes})")
        wall = time.monotonic() - started
        ctx.info["loadavg_at_end"] = os.getloadavg()
        print(f"total wall time: {wall:.0f} s; load average now {os.getloadavg()[0]:.2f}")
        if args.json:
            doc = {
                **ctx.info,
                "results": [{**asdict(r), "server": ROWS[r.key]} for r in ctx.results],
                "targets": found,
                "wall_s": round(wall, 1),
            }
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
