"""The REST transport of the model server: a bare ASGI application over a DataPlane.

V2 REST endpoints, /metrics and the API's OpenAPI description (openapi.py) on one port. No
web framework: routing is a few string comparisons, bodies are read with a size limit, a read
timeout (time without data) and a deadline (the whole body), JSON is orjson, and the protocol
operations are the DataPlane's (dataplane.py). Its errors and client mistakes get a 4xx or 503
`{"error": ...}` (a 405 names the allowed methods in `Allow`); anything unexpected is logged and
answered with a 500, and the server keeps serving.

An inference request is checked against the DataPlane's in-flight bound (admission.py) once its
path and method are known, before its body is read: beyond the bound it is answered 503 with
`Retry-After` at once, its body left unread (uvicorn skips it; the connection stays usable). It
takes its slot only once its body has arrived, so clients that send bodies slowly hold no slot
and cannot fill the bound against everyone else (the body deadline cuts them off). Nothing else
(health, metadata, /metrics) is bounded. The request heads, unread bodies and idle connections
are the HTTP protocol's to time out (http_protocol.py).

A request still running when the shutdown grace period ends (server.py) is cancelled by
uvicorn: it is answered 503 "shutting down" then, so that its client can retry elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from .admission import OverloadedError
from .contract import (
    DEFAULT_BODY_READ_TIMEOUT_S,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    ENV_BODY_TIMEOUT_S,
    ENV_SHUTDOWN_GRACE_S,
    LIVE_PATH,
    METRICS_PATH,
    OPENAPI_PATH,
    READY_PATH,
)
from .dataplane import DataPlane
from .openapi import served_document
from .protocol import (
    ProtocolError,
    build_binary_response,
    build_response,
    error_body,
    parse_binary_request,
    parse_request,
)

log = logging.getLogger("canarium_serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Disconnected(Exception):
    pass


class MethodNotAllowedError(ProtocolError):
    """405, with the methods the path takes (RFC 9110: a 405 names them in `Allow`)."""

    def __init__(self, path: str, method: str, allowed: str) -> None:
        super().__init__(f"{path} accepts {allowed.replace(', ', ' and ')} only, not {method}", 405)
        self.allowed = allowed


_GET = "GET, HEAD"
_POST = "POST"


class RestApp:
    """The ASGI application; it starts loading the DataPlane's model at lifespan startup."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_read_timeout_s: float = DEFAULT_BODY_READ_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout_s = body_read_timeout_s
        self.body_timeout_s = body_timeout_s
        self._load_task: asyncio.Task[None] | None = None
        self._openapi: tuple[bool, bytes] | None = None  # (model loaded, document)
        self._paths: dict[str, Callable[[], tuple[int, bytes]]] = {
            LIVE_PATH: self._live,
            READY_PATH: self._ready,
            "/v2": self._server_metadata,
            "/v2/": self._server_metadata,
            METRICS_PATH: self._metrics,
            OPENAPI_PATH: self._openapi_document,
        }
        name, version = dataplane.config.model_name, dataplane.config.model_version
        # The served model's infer paths, routed without splitting them (the hot path).
        self._infer_paths: dict[str, tuple[str, str | None]] = {
            f"/v2/models/{name}/infer": (name, None),
            f"/v2/models/{name}/versions/{version}/infer": (name, version),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._load_task = asyncio.create_task(self.dataplane.load_in_thread())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._load_task is not None and not self._load_task.done():
                    self._load_task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        is_infer = path in self._infer_paths or path.endswith("/infer")
        content_type, extra_headers = b"application/json", None
        try:
            if is_infer:
                body, json_length = await self._infer(path, method, scope, receive)
                status = 200
                if json_length is not None:
                    # Binary tensor data extension: headed like Triton's.
                    content_type = b"application/octet-stream"
                    extra_headers = [
                        (b"inference-header-content-length", str(json_length).encode())
                    ]
            else:
                status, body = self._route(path, method)
                if status == 200 and path == METRICS_PATH:
                    await _respond(send, 200, body, CONTENT_TYPE_LATEST.encode())
                    return
        except ProtocolError as exc:
            status, body = exc.status, error_body(exc.message)
            if isinstance(exc, OverloadedError):
                extra_headers = [(b"retry-after", str(exc.retry_after_s).encode())]
            elif isinstance(exc, MethodNotAllowedError):
                extra_headers = [(b"allow", exc.allowed.encode())]
        except _Disconnected:
            return
        except asyncio.CancelledError:
            # Only uvicorn cancels a request: the shutdown grace period is over. Answered, so
            # that the client knows to retry elsewhere; then the task ends as it was asked to.
            status, body = (
                503,
                error_body(
                    "server shutting down: the request did not finish within the shutdown grace "
                    f"period ({ENV_SHUTDOWN_GRACE_S}); retry it"
                ),
            )
            extra_headers = [(b"connection", b"close")]
        except Exception as exc:
            log.exception("internal error serving %s %s", method, path)
            status, body = 500, error_body(f"internal server error: {type(exc).__name__}")
        await _respond(send, status, body, content_type, extra_headers)
        if is_infer:
            self.dataplane.metrics.observe_request(status, time.perf_counter() - started)

    async def _infer(
        self, path: str, method: str, scope: Scope, receive: Receive
    ) -> tuple[bytes, int | None]:
        """The response body, and the length of its JSON part if it holds binary tensors."""
        route = self._infer_paths.get(path)
        if route is None:
            parts = path.strip("/").split("/")
            if len(parts) < 4 or parts[:2] != ["v2", "models"]:
                raise ProtocolError(f"no such endpoint: {path}", 404)
            # Another model's request is refused before its body is read.
            name, version, rest = self._model_route(parts[2:-1])
            if rest:  # e.g. /v2/models/iris/foo/infer
                raise ProtocolError(f"no such endpoint: {path}", 404)
            route = name, version
        if method != "POST":
            raise MethodNotAllowedError(path, method, _POST)
        inflight = self.dataplane.inflight
        # Saturated: OverloadedError (503) at once, the body unread. Else the body is read
        # holding no slot (a slow sender must not hold one), then a slot is taken from there to
        # the response body built (or OverloadedError if others took the last ones meanwhile).
        inflight.check()
        body, json_length = await self._read_body(scope, receive)
        with inflight:
            name, version = route
            # While the model loads, its inputs are unknown: a 503 before the body is looked at.
            model_inputs = self.dataplane.model_inputs(name, version)
            if json_length is None:
                request = parse_request(body, model_inputs)
            else:
                request = parse_binary_request(body, json_length, model_inputs)
            response = await self.dataplane.infer(name, version, request)
            binary = request.binary_output_names(response.outputs)
            if binary:
                return build_binary_response(
                    response.model_name,
                    response.model_version,
                    response.outputs,
                    response.id,
                    binary,
                )
            body = build_response(
                response.model_name, response.model_version, response.outputs, response.id
            )
            return body, None

    def _route(self, path: str, method: str) -> tuple[int, bytes]:
        """Any other path than an inference one: 404 if there is no such path, else 405 unless
        GET or HEAD, else its answer."""
        answer = self._paths.get(path)
        if answer is None:
            answer = self._model_path(path)
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(path, method, _GET)
        return answer()

    def _live(self) -> tuple[int, bytes]:
        return 200, orjson.dumps({"live": self.dataplane.live()})

    def _ready(self) -> tuple[int, bytes]:
        ready = self.dataplane.ready()
        return (200 if ready else 503), orjson.dumps({"ready": ready})

    def _server_metadata(self) -> tuple[int, bytes]:
        return 200, orjson.dumps(self.dataplane.server_metadata())

    def _metrics(self) -> tuple[int, bytes]:
        return 200, self.dataplane.metrics.exposition()

    def _model_path(self, path: str) -> Callable[[], tuple[int, bytes]]:
        """The answer of /v2/models/{name}[/versions/{version}][/ready] (404: no such path)."""
        dataplane = self.dataplane
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            name, version, rest = self._model_route(parts[2:])
            if not rest:
                return lambda: (200, orjson.dumps(dataplane.model_metadata(name, version)))
            if rest == ["ready"]:

                def model_ready() -> tuple[int, bytes]:
                    ready = dataplane.model_ready(name, version)
                    return (200 if ready else 503), orjson.dumps({"name": name, "ready": ready})

                return model_ready
        raise ProtocolError(f"no such endpoint: {path}", 404)

    def _openapi_document(self) -> tuple[int, bytes]:
        """openapi.json completed for the served model (with an example once it is loaded)."""
        model = self.dataplane.model
        cached = self._openapi
        if cached is None or cached[0] != (model is not None):
            cfg = self.dataplane.config
            doc = served_document(
                cfg.model_name,
                cfg.model_version,
                None if model is None else model.inputs,
                None if model is None else model.outputs,
            )
            cached = self._openapi = (model is not None, orjson.dumps(doc))
        return 200, cached[1]

    def _model_route(self, parts: list[str]) -> tuple[str, str | None, list[str]]:
        """`{name}[/versions/{version}]/...` as the name, the version (None: any) and what
        follows; an unknown model is a 404 whatever follows its name."""
        name, rest = parts[0], parts[1:]
        self.dataplane.check_model(name)
        if rest[:1] != ["versions"]:
            return name, None, rest
        if len(rest) < 2:
            raise ProtocolError("a model version is missing after /versions/", 404)
        version = rest[1]
        self.dataplane.check_model(name, version)
        return name, version, rest[2:]

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, int | None]:
        """The body, and the Inference-Header-Content-Length header's value if given."""
        limit = self.max_body_bytes
        declared: int | None = None
        json_length: int | None = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                try:
                    json_length = int(value)
                except ValueError:
                    raise ProtocolError(
                        f"invalid Inference-Header-Content-Length header: {value[:40]!r}"
                    ) from None
            elif key == b"content-length":
                # uvicorn's parsers (httptools, h11) already refuse a malformed one with a 400.
                try:
                    declared = int(value)
                except ValueError:
                    raise ProtocolError("invalid Content-Length header") from None
                if declared > limit:
                    raise ProtocolError(
                        f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                        413,
                    )
        timeout = self.body_read_timeout_s
        clock = asyncio.get_running_loop().time
        # The whole body by then: a body trickled steadily never goes `timeout` without data.
        deadline = clock() + self.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            # A body shorter than its Content-Length would otherwise be waited for forever.
            idle_deadline = clock() + timeout
            try:
                async with asyncio.timeout_at(min(idle_deadline, deadline)):
                    message = await receive()
            except TimeoutError:
                of = "" if declared is None else f" of the {declared} declared by Content-Length"
                if deadline < idle_deadline:
                    raise ProtocolError(
                        f"request body incomplete: {size} bytes{of} received in "
                        f"{self.body_timeout_s:g} s, the most a body may take "
                        f"({ENV_BODY_TIMEOUT_S})",
                        408,
                    ) from None
                raise ProtocolError(
                    f"request body incomplete: {size} bytes{of} received, then nothing "
                    f"for {timeout:g} s",
                    408,
                ) from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body exceeds the limit of {limit} bytes", 413)
            chunks.append(chunk)
            more_body = message.get("more_body", False)
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), json_length


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    if status == 408:
        # The rest of a body given up on may still arrive: it must not be read as a request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
