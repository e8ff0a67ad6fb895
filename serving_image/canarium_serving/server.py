"""Run the model server: a DataPlane behind its REST ASGI application on uvicorn (httptools
parser, uvloop event loop) and its gRPC service on grpc.aio, both in one event loop.

uvicorn was measured against granian with the same bare ASGI application on this class of
machine (2 cores, wrk with 16 connections): both serve a minimal ASGI response at ~17.5k
requests/s, so the well-known, pure-Python-configurable uvicorn stays. The application, not
the server, decides the speed (see serving_image/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from .app import RestApp
from .config import ServerConfig
from .dataplane import DataPlane
from .grpc_app import GrpcApp, grpc_server

log = logging.getLogger("canarium_serving")


def serve(
    config: ServerConfig, *, host: str, port: int, grpc_port: int = 0, log_level: str = "info"
) -> int:
    """Serve REST on `port` and gRPC on `grpc_port` (0: none) until SIGTERM/SIGINT (exit 0),
    until the model fails to load or a port cannot be bound (exit 1)."""
    import uvicorn

    failed: list[str] = []
    server: uvicorn.Server | None = None

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
    )
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",  # uvloop when installed (it is, except on Windows)
        http="auto",  # httptools when installed
        ws="none",
        lifespan="on",
        access_log=False,
        log_level=log_level.lower(),
        log_config=None,  # uvicorn's loggers propagate to the root logger the CLI configured
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=10,
        backlog=4096,
    )
    server = uvicorn.Server(uv_config)
    # uvicorn re-raises the stop signal after a graceful shutdown; with these no-op handlers in
    # place that ends in a clean exit status 0 instead of "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    grpc_address = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"

    async def main() -> None:
        rpc = None
        if grpc_port:
            try:
                rpc = grpc_server(GrpcApp(dataplane), grpc_address, config.max_body_bytes)
            except RuntimeError as exc:  # grpc could not bind the port
                failed.append(f"cannot serve gRPC on {grpc_address}: {exc}")
                log.error("%s", failed[-1])
                return
            await rpc.start()
            log.info("V2 gRPC on %s", grpc_address)
        try:
            await server.serve()
        finally:
            if rpc is not None:
                await rpc.stop(grace=5)

    _run(main())
    if failed:
        log.error("exiting: %s", failed[0])
        return 1
    return 0 if server.started else 1


def _run(main: Any) -> None:
    """Run a coroutine on uvloop when installed (it is, except on Windows), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main)
    else:
        uvloop.run(main)
