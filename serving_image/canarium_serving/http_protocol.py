"""uvicorn's HTTP/1.1 protocol (httptools) with the timeouts it lacks, so that slow clients cannot
hold connections for ever.

uvicorn bounds one thing: the idle time between a response and the next request's first byte
(`timeout_keep_alive`), and any byte received rearms it. Nothing bounds the time a request head
takes to arrive: a client that opens a connection and sends nothing, or trickles its headers a
byte at a time (slowloris), or sends blank lines between requests (which start no request), keeps
its connection, its socket and its buffers as long as it likes, and enough of them exhaust the
server's file descriptors. Nor does anything bound a body the application does not read (one
sent to a health check, or after an overload refusal), which uvicorn keeps reading and dropping.

This protocol adds, per connection:
- the head deadline: a request line and headers must be complete within `header_timeout`
  seconds of their first byte (of the connection's opening, for its first request; of the first
  byte after the previous request, blank lines included). Past it the client gets a 408 and the
  connection is closed; if a response is still being computed on it (a pipelined request), the
  connection closes once that response is sent. Go's net/http (ReadHeaderTimeout) and nginx
  (client_header_timeout) bound the head the same way.
- the body deadline: `body_timeout` seconds from the head for the whole body. The application
  reads the bodies it wants under this same deadline and answers 408 itself (app.py); this
  protocol closes the connection when a body is still arriving after its response was sent.

One timer for all of them: a sweep over the open connections every tenth of the shortest
timeout (between 0.05 and 1 s), while connections are open, so a request costs two reads of
the loop's clock, not timers of its own; a deadline is kept to within one sweep.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .contract import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    ENV_HEADER_TIMEOUT_S,
)

log = logging.getLogger("canarium_serving")

# What a connection is waiting for: nothing it could be late with, a request head, a body.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2


def sweep_interval(header_timeout: float, body_timeout: float) -> float:
    """How often the deadlines are checked: a tenth of the shortest, within [0.05, 1] s."""
    return min(1.0, max(0.05, min(header_timeout, body_timeout) / 10))


def _response_408(message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return b"".join(
        [
            b"HTTP/1.1 408 Request Timeout\r\n",
            b"content-type: application/json\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
    )


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body deadlines; see `protocol_class`."""

    header_timeout: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: ClassVar[float] = DEFAULT_BODY_TIMEOUT_S
    # Shared by the connections of one protocol_class(): the open ones, the sweep's timer.
    _open: ClassVar[set[TimedHttpToolsProtocol]]
    _sweep_handle: ClassVar[asyncio.TimerHandle | None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._deadline = 0.0  # loop time by which the head or body must be in

    # --- the phases ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first request's head is due from the opening: a connection that says nothing is
        # as slow as one that trickles.
        self._expect(_HEAD, self.header_timeout)
        cls = type(self)
        cls._open.add(self)
        if cls._sweep_handle is None:
            cls._schedule_sweep(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self)._open.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _IDLE:
            # Any byte after a complete request starts the next head's clock (blank lines,
            # which start no request in the parser, included).
            self._expect(_HEAD, self.header_timeout)
        super().data_received(data)

    def on_message_begin(self) -> None:
        if self._phase == _IDLE:  # a pipelined request in the same read as the previous one
            self._expect(_HEAD, self.header_timeout)
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._expect(_BODY, self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        super().on_message_complete()

    def _expect(self, phase: int, timeout: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + timeout

    # --- the sweep -------------------------------------------------------------------------
    @classmethod
    def _schedule_sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        every = sweep_interval(cls.header_timeout, cls.body_timeout)
        cls._sweep_handle = loop.call_later(every, cls._sweep, loop)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        cls._sweep_handle = None
        now = loop.time()
        late = [c for c in cls._open if c._phase != _IDLE and c._deadline <= now]
        if late:
            closed = [phase for c in late if (phase := c._expire()) is not None]
            heads, bodies = closed.count("head"), closed.count("body")
            if heads or bodies:
                # One line per sweep at most, however many slow clients there are.
                log.info(
                    "closed %d connection(s) whose request head was not complete within %g s "
                    "and %d whose unread request body was not complete within %g s",
                    *(heads, cls.header_timeout, bodies, cls.body_timeout),
                )
        if cls._open:
            cls._schedule_sweep(loop)

    def _expire(self) -> str | None:
        """Act on a passed deadline; "head" or "body" if the connection is closed for it."""
        transport = self.transport
        if transport.is_closing():
            return None
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if self._phase == _HEAD:
            self._phase = _IDLE
            if answering:
                # A pipelined head is late behind a response still being computed: that
                # response goes out, then the connection closes (as on shutdown).
                cycle.keep_alive = False
                return None
            transport.write(
                _response_408(
                    f"request head (request line and headers) not complete within "
                    f"{self.header_timeout:g} s ({ENV_HEADER_TIMEOUT_S})"
                )
            )
            transport.close()
            return "head"
        if not answering:
            # A body still arriving after its response was sent (the application did not need
            # it): not worth waiting for any longer.
            self._phase = _IDLE
            transport.close()
            return "body"
        # The application is reading this body under the same deadline (a 408 of its own), or
        # has it all and is answering.
        return None


def protocol_class(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
) -> type[TimedHttpToolsProtocol]:
    """A protocol class for uvicorn.Config(http=...) with these deadlines (in seconds), and
    connection bookkeeping of its own."""
    if not header_timeout > 0 or not body_timeout > 0:
        raise ValueError(
            f"the head and body timeouts must be > 0, got {header_timeout} and {body_timeout}"
        )
    attrs: dict[str, Any] = {
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
        "_open": set(),
        "_sweep_handle": None,
    }
    return type("TimedHttpToolsProtocol", (TimedHttpToolsProtocol,), attrs)
