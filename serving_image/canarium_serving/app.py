"""The model server as a bare ASGI application: V2 REST endpoints and /metrics on one port.

No web framework: routing is a few string comparisons, bodies are read with a size limit, JSON
is orjson, and the protocol module does the rest. Client mistakes get a 4xx `{"error": ...}`;
anything unexpected is logged and answered with a 500, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from . import __version__
from .batching import Batcher
from .config import ServerConfig
from .contract import METRICS_PATH
from .fetch import fetch_model
from .metrics import Labels, ServingMetrics
from .model import ModelLoadError, OnnxModel
from .protocol import ProtocolError, build_response, error_body, parse_request, select_outputs

log = logging.getLogger("canarium_serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVER_NAME = "canarium-serving"
_JSON = [(b"content-type", b"application/json")]


class _Disconnected(Exception):
    pass


class ModelServer:
    """The ASGI application. `on_fatal(reason)` is called when the model cannot be loaded."""

    def __init__(self, config: ServerConfig, on_fatal: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_fatal = on_fatal
        self.model: OnnxModel | None = None
        self.load_error: str | None = None
        self.metrics = ServingMetrics(
            Labels(
                model=config.model_name,
                version=config.model_version,
                deployment=config.deployment,
                namespace=config.namespace,
                revision=config.revision,
                role=config.role,
            )
        )
        self.batcher: Batcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        name = config.model_name
        self._infer_paths = {
            f"/v2/models/{name}/infer",
            f"/v2/models/{name}/versions/{config.model_version}/infer",
        }
        self._server_metadata = orjson.dumps(
            {"name": SERVER_NAME, "version": __version__, "extensions": []}
        )
        self._model_metadata = b""
        self._metric_outputs: list[str] = []

    # --- model loading -------------------------------------------------------------------
    def load(self) -> None:
        """Fetch, verify and load the model (blocking); raise ModelLoadError with the reason."""
        cfg = self.config
        started = time.perf_counter()
        fetched = fetch_model(cfg.model_uri, sha256=cfg.model_sha256, cache_dir=cfg.model_cache_dir)
        model = OnnxModel(fetched.path, threads=cfg.ort_threads)
        self.metrics.configure_model(
            platform=model.platform,
            sha256=fetched.sha256,
            uri=cfg.model_uri,
            outputs=[(s.name, s.datatype, s.shape) for s in model.outputs],
            reference=model.reference,
        )
        self._model_metadata = orjson.dumps(
            {
                "name": cfg.model_name,
                "versions": [cfg.model_version],
                "platform": model.platform,
                "inputs": [s.to_json() for s in model.inputs],
                "outputs": [s.to_json() for s in model.outputs],
            }
        )
        if cfg.batch_max_size > 1 and model.batchable:
            self.batcher = Batcher(
                model.predict,
                max_size=cfg.batch_max_size,
                max_wait=cfg.batch_max_wait_ms / 1000.0,
                on_execute=self._observe_execution,
            )
        elif cfg.batch_max_size > 1:
            log.warning("dynamic batching is off: the model's inputs have no free batch dimension")
        self._metric_outputs = [
            n for n in model.output_names if n in self.metrics.observed_outputs()
        ]
        self.model = model
        self.metrics.ready = True
        log.info(
            "model %r version %r ready in %.2fs: %s (sha256 %s), inputs %s, outputs %s",
            cfg.model_name,
            cfg.model_version,
            time.perf_counter() - started,
            fetched.path,
            fetched.sha256,
            [s.to_json() for s in model.inputs],
            [s.to_json() for s in model.outputs],
        )

    async def _load_in_background(self) -> None:
        try:
            await asyncio.to_thread(self.load)
        except ModelLoadError as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.exception("unexpected error while loading the model")
            self._fail(f"unexpected error while loading the model: {exc!r}")

    def _fail(self, reason: str) -> None:
        self.load_error = reason
        log.error("model not loaded: %s", reason)
        self._write_termination_log(reason)
        if self.config.exit_on_load_failure and self.on_fatal is not None:
            self.on_fatal(reason)

    def _write_termination_log(self, reason: str) -> None:
        path = self.config.termination_log
        if not path:
            return
        try:
            if Path(path).parent.is_dir():
                with open(path, "w", encoding="utf-8") as f:
                    f.write(f"model not loaded: {reason}"[:4000])
        except OSError:
            pass  # outside Kubernetes there may be no such file; the log line is enough

    # --- ASGI ----------------------------------------------------------------------------
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
                self._load_task = asyncio.create_task(self._load_in_background())
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
        try:
            if is_infer:
                status, body = await self._route_infer(path, method, scope, receive)
            else:
                status, body = await self._route(path, method)
                if status == 200 and path == METRICS_PATH:
                    await _respond(send, 200, body, CONTENT_TYPE_LATEST.encode())
                    return
        except ProtocolError as exc:
            status, body = exc.status, error_body(exc.message)
        except _Disconnected:
            return
        except Exception as exc:
            log.exception("internal error serving %s %s", method, path)
            status, body = 500, error_body(f"internal server error: {type(exc).__name__}")
        await _respond(send, status, body)
        if is_infer:
            self.metrics.observe_request(status, time.perf_counter() - started)

    async def _route_infer(
        self, path: str, method: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes]:
        if path not in self._infer_paths:
            parts = path.strip("/").split("/")
            if len(parts) < 4 or parts[:2] != ["v2", "models"]:
                raise ProtocolError(f"no such endpoint: {path}", 404)
            self._check_model(parts[2:-1])
        if method != "POST":
            raise ProtocolError(f"{path} accepts POST only, not {method}", 405)
        body = await self._read_body(scope, receive)
        return 200, await self._infer(body)

    async def _route(self, path: str, method: str) -> tuple[int, bytes]:
        if method not in ("GET", "HEAD"):
            raise ProtocolError(f"{path} accepts GET only, not {method}", 405)
        if path == "/v2/health/live":
            return 200, b'{"live":true}'
        if path == "/v2/health/ready":
            return (200, b'{"ready":true}') if self.model else (503, b'{"ready":false}')
        if path in ("/v2", "/v2/"):
            return 200, self._server_metadata
        if path == METRICS_PATH:
            return 200, self.metrics.exposition()
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            rest = self._check_model(parts[2:])
            if not rest:
                return self._metadata()
            if rest == ["ready"]:
                ready = orjson.dumps({"name": self.config.model_name, "ready": bool(self.model)})
                return (200 if self.model else 503), ready
        raise ProtocolError(f"no such endpoint: {path}", 404)

    def _check_model(self, parts: list[str]) -> list[str]:
        """Check `{name}[/versions/{v}]...` against the served model; return what follows."""
        cfg = self.config
        name, rest = parts[0], parts[1:]
        if name != cfg.model_name:
            raise ProtocolError(
                f"model '{name}' not found; this server serves '{cfg.model_name}'", 404
            )
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise ProtocolError("a model version is missing after /versions/", 404)
            if rest[1] != cfg.model_version:
                raise ProtocolError(
                    f"model '{name}' has no version '{rest[1]}'; served: '{cfg.model_version}'",
                    404,
                )
            rest = rest[2:]
        return rest

    def _metadata(self) -> tuple[int, bytes]:
        if self.model is None:
            return 503, error_body(self._not_ready())
        return 200, self._model_metadata

    def _not_ready(self) -> str:
        if self.load_error:
            return f"model '{self.config.model_name}' failed to load: {self.load_error}"
        return f"model '{self.config.model_name}' is still loading"

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        declared: int | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
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
                break
        timeout = self.config.body_read_timeout_s
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            try:
                # A body shorter than its Content-Length would otherwise be waited for forever.
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                of = "" if declared is None else f" of the {declared} declared by Content-Length"
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
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _infer(self, body: bytes) -> bytes:
        model = self.model
        if model is None:
            raise ProtocolError(self._not_ready(), 503)
        request = parse_request(body, model.inputs)
        names = select_outputs(request.outputs, model.output_names)
        run = names
        if self._metric_outputs:
            run = list(dict.fromkeys([*names, *self._metric_outputs]))
        if self.batcher is not None:
            outputs = await self.batcher.submit(request.inputs, run)
        else:
            outputs = model.predict(request.inputs, run)
            self._observe_execution(request.inputs, outputs, request.batch_size)
        if len(outputs) != len(names):
            outputs = {n: outputs[n] for n in names}
        cfg = self.config
        return build_response(cfg.model_name, cfg.model_version, outputs, request.id)

    def _observe_execution(self, inputs: Any, outputs: Any, rows: int) -> None:
        self.metrics.observe_execution(inputs, outputs, rows)


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"application/json"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if status == 408:
        # The rest of a body given up on may still arrive: it must not be read as a request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
