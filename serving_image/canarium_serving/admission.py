"""A bound on the inference requests in flight in one server process, shared by its transports.

A request beyond the bound is refused at once, never queued: the REST transport answers it 503
with `Retry-After` and `{"error": ...}`, the gRPC one UNAVAILABLE with the same message (both
count it under 503 in the request metrics, so a canary's error rate sees the overload). Without
a bound, requests a saturated server cannot keep up with wait in its event loop and its batcher
for ever longer, until clients time out on answers that are still computed; refusing them costs
less than serving one and tells a client (or a load balancer) at once to go elsewhere or later.

Health, readiness, metadata and /metrics never pass through here: a saturated server stays
live and ready, and its metrics stay scrapeable. A refusal costs neither reading nor parsing a
body: the REST transport `check`s for a free slot before it reads a request's body and takes
one (`with limiter:`) once the body is there, so a slow client still sending its body holds no
slot (slow bodies cannot fill the bound and starve everyone: see app.py); gRPC hands over a
request whole, and it takes its slot before decoding it (grpc_app.py).

Nothing here knows a transport. Both transports run on one event loop thread (server.py), so
the count is a plain int, like the metrics' counters.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final

from .contract import ENV_MAX_INFLIGHT
from .protocol import ProtocolError

# How long a refused client is told to wait (REST `Retry-After`, in whole seconds as RFC 9110's
# delay-seconds; gRPC `grpc-retry-pushback-ms`). A full in-flight window drains in a few batch
# executions, milliseconds to tens of milliseconds, so the smallest whole second is enough.
RETRY_AFTER_S: Final = 1
# gRPC's server pushback (gRFC A6, "gRPC Retry Design"): a client whose retry policy retries
# the status waits this many milliseconds before it does, instead of its own backoff.
GRPC_RETRY_PUSHBACK_KEY: Final = "grpc-retry-pushback-ms"

# The default bound: four full batches of one-row requests (one executing, three waiting, so an
# admitted request waits for about three model executions at most), and at least 128. Past the
# point where the server is busy all the time, more requests in flight add waiting, not
# throughput (serving_image/README.md measures the iris server saturated at 16 connections:
# 12k req/s with a p99 of 3 ms; 128 in flight there is ~10 ms of queue). It grows with
# --batch-max-size, so that a batch can always fill. Other servers, for scale:
# - Triton: ModelQueuePolicy.max_queue_size (model_config.proto in
#   triton-inference-server/common) defaults to 0, no bound; when set, a request that finds the
#   queue full "will be rejected immediately" with UNAVAILABLE ("Exceeds maximum queue size",
#   core's RequestQueue::Enqueue), which Triton's HTTP frontend answers 503 (HttpCodeFromError)
#   and its gRPC frontend UNAVAILABLE: the mapping used here.
# - KServe's Python model server has no bound of its own; under Knative, the queue-proxy admits
#   containerConcurrency requests (default 0: unlimited) with a queue of 10 x that, and answers
#   the rest 503 "pending request queue full" at once (knative/serving, buildBreaker in
#   pkg/queue/sharedmain/main.go).
# - TorchServe: job_queue_size, default 100 per model; a request that finds it full gets a 503.
DEFAULT_INFLIGHT_BATCHES: Final = 4
MIN_DEFAULT_MAX_INFLIGHT: Final = 128


def default_max_inflight(batch_max_size: int) -> int:
    """The in-flight bound when none is configured, for a batcher of `batch_max_size` rows."""
    return max(MIN_DEFAULT_MAX_INFLIGHT, DEFAULT_INFLIGHT_BATCHES * batch_max_size)


class OverloadedError(ProtocolError):
    """The server already has its most inference requests in flight: retry later."""

    def __init__(self, limit: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(
            f"server overloaded: {limit} inference requests already in flight, the most it "
            f"takes at once ({ENV_MAX_INFLIGHT}); retry after {retry_after_s} s",
            503,
        )
        self.limit = limit
        self.retry_after_s = retry_after_s


class InflightLimiter:
    """At most `limit` requests at once (0: no limit), never waiting for a slot.

    `with limiter:` around a request: entering takes a slot or raises OverloadedError at once,
    leaving (however the request ends) gives it back. One instance serves every request.
    `check()` raises the same refusal without taking a slot.
    """

    __slots__ = ("inflight", "limit", "retry_after_s")

    def __init__(self, limit: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        if limit < 0:
            raise ValueError(f"the in-flight limit must be >= 0 (0: none), got {limit}")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.inflight = 0

    def check(self) -> None:
        """Raise OverloadedError if no slot is free now; take none."""
        if self.inflight >= self.limit > 0:
            raise OverloadedError(self.limit, self.retry_after_s)

    def __enter__(self) -> None:
        if self.inflight >= self.limit > 0:
            raise OverloadedError(self.limit, self.retry_after_s)
        self.inflight += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.inflight -= 1
