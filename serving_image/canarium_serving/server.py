"""Run the model server: a DataPlane behind its REST ASGI application, on uvicorn (httptools
parser, uvloop event loop).

uvicorn was measured against granian with the same bare ASGI application on this class of
machine (2 cores, wrk with 16 connections): both serve a minimal ASGI response at ~17.5k
requests/s, so the well-known, pure-Python-configurable uvicorn stays. The application, not
the server, decides the speed (see serving_image/README.md).
"""

from __future__ import annotations

import logging
import signal

from .app import RestApp
from .config import ServerConfig
from .dataplane import DataPlane

log = logging.getLogger("canarium_serving")


def serve(config: ServerConfig, *, host: str, port: int, log_level: str = "info") -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until the model fails to load (exit 1)."""
    import uvicorn

    failed: list[str] = []
    server: uvicorn.Server | None = None

    def on_fatal(reason: str) -> None:
        failed.append(reason)
        if server is not None:
            server.should_exit = True

    app = RestApp(
        DataPlane(config, on_fatal=on_fatal),
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
    server.run()
    if failed:
        log.error("exiting: the model could not be loaded")
        return 1
    return 0 if server.started else 1
