"""Run the model server: a DataPlane behind its REST ASGI application on uvicorn (httptools
parser, uvloop event loop) and its gRPC service on grpc.aio, both in one event loop.

uvicorn was measured against granian with the same bare ASGI application on this class of
machine (2 cores, wrk with 16 connections): both serve a minimal ASGI response at ~17.5k
requests/s, so the well-known, pure-Python-configurable uvicorn stays. The application, not
the server, decides the speed (see serving_image/README.md). Its HTTP protocol is uvicorn's
httptools one with head and body deadlines (http_protocol.py): slow clients are cut off.

Shutdown, on SIGTERM or SIGINT:
1. the server is not ready at once (/v2/health/ready 503, gRPC ServerReady false), and keeps
   serving for `shutdown_delay_s` (0 by default: the operator's pods wait in their preStop hook
   while the endpoints go, before the signal); a second signal ends the delay;
2. both ports stop taking work: the REST listener closes (new connections are refused), idle
   keep-alive connections are closed, and the connections with a request in flight close after
   its response; the gRPC server refuses new calls;
3. the requests in flight over both transports have `shutdown_grace_s` to finish, counted from
   step 2 for both; those still running then are cancelled (REST answers them 503 "shutting
   down", gRPC ends them UNAVAILABLE "Cancelling all calls": both retryable);
4. the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from grpc import aio

from .app import RestApp
from .config import ServerConfig
from .dataplane import DataPlane
from .grpc_app import GrpcApp, grpc_server
from .http_protocol import protocol_class

log = logging.getLogger("canarium_serving")


class _Server(uvicorn.Server):
    """uvicorn.Server with the shutdown above: `on_signal` at the first signal, a delay before
    uvicorn's own shutdown begins, and `on_shutdown` as it begins (the listeners close)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        delay_s: float,
        on_signal: Callable[[], None],
        on_shutdown: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self.delay_s = delay_s
        self.on_signal = on_signal
        self.on_shutdown = on_shutdown
        self.signalled_at: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # In a signal handler: set flags only (uvicorn's main loop looks every 0.1 s).
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            self.on_signal()
            if self.delay_s > 0:
                return  # on_tick ends the delay
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        since = self.signalled_at
        if since is not None and not self.should_exit:
            if not self._announced:
                self._announced = True
                log.info("stop signal: not ready, still serving for %g s", self.delay_s)
            if time.monotonic() - since >= self.delay_s:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def serve(
    config: ServerConfig, *, host: str, port: int, grpc_port: int = 0, log_level: str = "info"
) -> int:
    """Serve REST on `port` and gRPC on `grpc_port` (0: none) until SIGTERM/SIGINT (exit 0),
    until the model fails to load or a port cannot be bound (exit 1)."""
    failed: list[str] = []
    server: _Server | None = None

    def on_fatal(reason: str) -> None:
        failed.append(f"the model could not be loaded: {reason}")
        if server is not None:
            server.should_exit = True

    dataplane = DataPlane(config, on_fatal=on_fatal)
    limit = dataplane.inflight.limit
    log.info("inference requests in flight: %s", f"at most {limit}" if limit else "no limit")
    app = RestApp(
        dataplane,
        max_body_bytes=config.max_body_bytes,
        body_read_timeout_s=config.body_read_timeout_s,
        body_timeout_s=config.body_timeout_s,
    )
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",  # uvloop when installed (it is, except on Windows)
        http=protocol_class(config.header_timeout_s, config.body_timeout_s),
        ws="none",
        lifespan="on",
        access_log=False,
        log_level=log_level.lower(),
        log_config=None,  # uvicorn's loggers propagate to the root logger the CLI configured
        server_header=False,
        date_header=False,
        timeout_keep_alive=config.keep_alive_timeout_s,  # type: ignore[arg-type]  # int in stubs
        timeout_graceful_shutdown=config.shutdown_grace_s,  # type: ignore[arg-type]
        backlog=4096,
    )
    rpc = _GrpcPort(dataplane, host, grpc_port, config)
    grace = config.shutdown_grace_s

    def on_signal() -> None:
        dataplane.draining = True  # not ready from now on

    def on_shutdown() -> None:
        what = "REST and gRPC take" if rpc.server is not None else "REST takes"
        log.info(
            "shutting down: not ready, %s no new requests, those in flight have %g s to finish",
            what,
            grace,
        )
        dataplane.draining = True  # also when the shutdown is not a signal's
        rpc.stop_soon(grace)

    server = _Server(
        uv_config, delay_s=config.shutdown_delay_s, on_signal=on_signal, on_shutdown=on_shutdown
    )
    # uvicorn re-raises the stop signal after a graceful shutdown; with these no-op handlers in
    # place that ends in a clean exit status 0 instead of "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)

    async def main() -> None:
        if grpc_port:
            error = await rpc.start()
            if error:
                failed.append(error)
                log.error("%s", error)
                return
        try:
            await server.serve()
        finally:
            await rpc.stopped()
        log.info("shut down")

    _run(main())
    if failed:
        log.error("exiting: %s", failed[0])
        return 1
    return 0 if server.started else 1


class _GrpcPort:
    """The gRPC server, when there is one: started, stopped with a grace period, waited for."""

    def __init__(self, dataplane: DataPlane, host: str, port: int, config: ServerConfig) -> None:
        self.dataplane = dataplane
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.config = config
        self.server: aio.Server | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> str | None:
        """Bind and start; the reason if it cannot."""
        cfg = self.config
        try:
            server = grpc_server(
                GrpcApp(self.dataplane), self.address, cfg.max_body_bytes, cfg.header_timeout_s
            )
        except RuntimeError as exc:  # grpc could not bind the port
            return f"cannot serve gRPC on {self.address}: {exc}"
        await server.start()
        self.server = server
        log.info("V2 gRPC on %s", self.address)
        return None

    def stop_soon(self, grace: float) -> None:
        """Refuse new calls now; cancel those still running after `grace` seconds."""
        if self.server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self.server.stop(grace))

    async def stopped(self) -> None:
        """Wait for the stop (at once if uvicorn ended without a shutdown: a port in use)."""
        self.stop_soon(0)
        if self._stopping is not None:
            await self._stopping


def _run(main: Any) -> None:
    """Run a coroutine on uvloop when installed (it is, except on Windows), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)
