"""The gRPC transport of the model server: inference.GRPCInferenceService over a DataPlane.

The same DataPlane as the REST transport (app.py), so both share the model, the dynamic
batcher, the metrics and the drift statistics; grpc.aio runs in the same event loop as
uvicorn. Messages are (de)serialized here rather than by grpc, so that a request that is not
a valid message is the client's mistake (INVALID_ARGUMENT), not an INTERNAL error. A
ProtocolError's HTTP status maps to its gRPC code (400 INVALID_ARGUMENT, 404 NOT_FOUND,
503 UNAVAILABLE); anything unexpected is logged and answered INTERNAL, and the server keeps
serving. Inference requests are counted in the request metrics under the HTTP status of the
same outcome, so an error rate reads the same whichever transport the traffic takes.

ModelInfer enters the in-flight bound it shares with REST (DataPlane.inflight, admission.py)
before its message is decoded; beyond it the call ends at once with UNAVAILABLE (REST: 503 with
Retry-After), the message saying why, and `grpc-retry-pushback-ms` in the trailers. UNAVAILABLE,
not RESOURCE_EXHAUSTED: gRPC's status code guide gives UNAVAILABLE for a transient condition
"corrected by retrying with a backoff" and its HTTP mapping turns 503 (and 429) into it; it is
what Triton answers for a full queue, and what retries by default: Istio's sidecars retry
`unavailable` (and HTTP 503) twice on another pod, never `resource-exhausted`, and client
retry policies list it in retryableStatusCodes. RESOURCE_EXHAUSTED reads as a quota or a
too-large message (413 here) that a retry does not fix. grpc.aio's own
`maximum_concurrent_rpcs` is not used: it would bound health and metadata calls too, not be
shared with REST, answer RESOURCE_EXHAUSTED, and refuse calls before the metrics count them.
The other methods are never bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

import grpc
from grpc import aio

from .admission import GRPC_RETRY_PUSHBACK_KEY, OverloadedError
from .contract import DEFAULT_HEADER_TIMEOUT_S
from .dataplane import DataPlane
from .grpc_protocol import (
    build_infer_response,
    decode,
    model_metadata_response,
    server_metadata_response,
    to_inference_request,
)
from .proto import inference_pb2 as pb
from .protocol import ProtocolError

log = logging.getLogger("canarium_serving")

SERVICE: Final = "inference.GRPCInferenceService"

_CODES: Final[dict[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

Context = aio.ServicerContext[bytes, bytes]
Handler = Callable[[bytes, Context], Awaitable[bytes]]


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC code of a ProtocolError's HTTP status."""
    return _CODES.get(http_status, grpc.StatusCode.INTERNAL)


async def _abort(context: Context, exc: ProtocolError) -> NoReturn:
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, OverloadedError):
        trailers = ((GRPC_RETRY_PUSHBACK_KEY, str(exc.retry_after_s * 1000)),)
    await context.abort(status_code(exc.status), exc.message, trailing_metadata=trailers)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class GrpcApp:
    """The six V2 methods, each a unary handler of serialized messages."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def handlers(self) -> dict[str, Handler]:
        return {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }

    async def server_live(self, message: bytes, context: Context) -> bytes:
        return pb.ServerLiveResponse(live=self.dataplane.live()).SerializeToString()

    async def server_ready(self, message: bytes, context: Context) -> bytes:
        return pb.ServerReadyResponse(ready=self.dataplane.ready()).SerializeToString()

    async def server_metadata(self, message: bytes, context: Context) -> bytes:
        return server_metadata_response(self.dataplane.server_metadata())

    async def model_ready(self, message: bytes, context: Context) -> bytes:
        try:
            request = decode(pb.ModelReadyRequest, message)
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except ProtocolError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=ready).SerializeToString()

    async def model_metadata(self, message: bytes, context: Context) -> bytes:
        try:
            request = decode(pb.ModelMetadataRequest, message)
            metadata = self.dataplane.model_metadata(request.name, request.version or None)
        except ProtocolError as exc:
            await _abort(context, exc)
        return model_metadata_response(metadata)

    async def model_infer(self, message: bytes, context: Context) -> bytes:
        started = time.perf_counter()
        dataplane = self.dataplane
        status = 200
        try:
            # A slot until the response is built, or OverloadedError (UNAVAILABLE) at once.
            with dataplane.inflight:
                request = decode(pb.ModelInferRequest, message)
                name, version = request.model_name, request.model_version or None
                # While the model loads, its inputs are unknown: UNAVAILABLE before the tensors.
                inputs = to_inference_request(request, dataplane.model_inputs(name, version))
                response = await dataplane.infer(name, version, inputs)
                # Raw inputs are answered with raw outputs, typed contents with typed contents.
                return build_infer_response(response, raw=bool(request.raw_input_contents))
        except ProtocolError as exc:
            status = exc.status
            await _abort(context, exc)
        except asyncio.CancelledError:
            # The shutdown grace period is over: grpc ends the call UNAVAILABLE.
            status = 503
            raise
        except Exception as exc:
            status = 500
            log.exception("internal error serving ModelInfer")
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}"
            )
        finally:
            dataplane.metrics.observe_request(status, time.perf_counter() - started)


def grpc_server(
    app: GrpcApp,
    address: str,
    max_message_bytes: int,
    handshake_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
) -> aio.Server:
    """A grpc.aio server of `app` bound to `address` (host:port), not yet started.

    A connection must send its HTTP/2 preface and settings within `handshake_timeout_s` (the
    REST port's head deadline) or it is closed; grpc's default waits 120 s, so connections
    that say nothing would pile up. A call's message is handed to the handler only once whole,
    so a slow sender holds no in-flight slot; HTTP/2 flow control and the message size limit
    bound what it holds meanwhile."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # grpc's default lets a second process bind the same port and share its traffic.
            ("grpc.so_reuseport", 0),
            ("grpc.server_handshake_timeout_ms", max(1, round(handshake_timeout_s * 1000))),
        ]
    )
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        method: grpc.unary_unary_rpc_method_handler(handler)
        for method, handler in app.handlers().items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(address)
    return server
