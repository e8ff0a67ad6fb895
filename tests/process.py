"""Server processes the tests run on this machine (versitygw in tests/s3server.py, Azurite in
tests/azurite.py, Prometheus in tests/e2e/prometheus.py): `start` one with its output in a log
file, `wait_ready` until it answers on a TCP port or an HTTP URL, `stop` it (SIGTERM, then
SIGKILL)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def start(
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `args` with stdout and stderr into `log_path` (emptied first, unless `append`);
    `env` is the whole environment (None: this process's)."""
    with log_path.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
        )


def read_log(log_path: Path) -> str:
    return log_path.read_text(errors="replace") if log_path.exists() else ""


def _answers(port: tuple[str, int] | None, url: str | None) -> bool:
    try:
        if port is not None:
            with socket.create_connection(port, timeout=1):
                return True
        assert url is not None
        # Straight to the server: a proxy from the environment has no business on loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # refused, reset, HTTP errors (not 200)
        return False


def wait_ready(
    proc: subprocess.Popen[bytes],
    name: str,
    log_path: Path,
    *,
    port: tuple[str, int] | None = None,
    url: str | None = None,
    timeout: float = 30,
    interval: float = 0.1,
) -> None:
    """Return once `proc` takes TCP connections on `port` ((host, port)) or answers `url` with
    200. RuntimeError, with the log, if it exits first, or if it does not answer within
    `timeout` seconds (then it is stopped first)."""
    if port is not None and url is None:
        what = f"{port[0]}:{port[1]}"
    elif url is not None and port is None:
        what = url
    else:
        raise ValueError("wait_ready takes one of port and url")
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{read_log(log_path)}")
        if _answers(port, url):
            return
        if time.monotonic() > deadline:
            stop(proc)
            log = read_log(log_path)
            raise RuntimeError(f"{name} not answering on {what} in {timeout:g} s:\n{log}")
        time.sleep(interval)


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still running after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
