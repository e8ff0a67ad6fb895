"""Kubernetes Events, posted off the reconcile path.

A reconcile hands its events to the recorder and goes on to the next object, as client-go's
EventRecorder does: at a thousand new ModelDeployments the API server answers slowly, and a
reconcile worker waiting for an Event to be written is a worker that writes no Deployment.
Each Event is stamped when it is recorded, so `kubectl describe` lists them in the order they
happened whatever order they are posted in. The queue is bounded like client-go's (1,000): an
Event is worth less than a reconcile, and beyond that they are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from canarium import metrics
from canarium.kube import KubeError, NotLeader
from canarium.rollout import Event

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 1000
SENDERS = 4


class EventSink(Protocol):
    async def event(
        self,
        involved: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class _Pending:
    involved: dict[str, Any]
    event: Event
    at: datetime


class EventRecorder:
    def __init__(
        self,
        sink: EventSink,
        capacity: int = QUEUE_CAPACITY,
        senders: int = SENDERS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.sender_count = senders
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(capacity)
        self._senders: list[asyncio.Task[None]] = []

    def record(self, involved: dict[str, Any], event: Event) -> None:
        """Queue an Event on `involved` (its apiVersion, kind and metadata are kept as they are
        now); never waits."""
        self._start()
        pending = _Pending(involved, event, self.clock())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            log.warning(
                "event %s on %s/%s dropped: %d events wait to be posted",
                event.reason,
                involved["metadata"].get("namespace"),
                involved["metadata"]["name"],
                self._queue.qsize(),
            )

    async def flush(self) -> None:
        """Wait until every Event recorded so far is posted (or given up)."""
        if self._senders:
            await self._queue.join()

    async def stop(self, grace: float = 5.0) -> None:
        """Post what is queued, for `grace` seconds at most, then stop the senders."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), grace)
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []

    def _start(self) -> None:
        if not self._senders:
            self._senders = [
                asyncio.create_task(self._send(), name=f"canarium-events-{i}")
                for i in range(self.sender_count)
            ]

    async def _send(self) -> None:
        while True:
            pending = await self._queue.get()
            event, meta = pending.event, pending.involved["metadata"]
            try:
                await self.sink.event(
                    pending.involved, event.type, event.reason, event.message, pending.at
                )
            except KubeError as exc:  # an event is not worth a retry
                # Not worth a warning: a namespace being deleted, or a lost Lease (the process
                # ends; the new leader tells what happens next).
                if not exc.namespace_gone and not isinstance(exc, NotLeader):
                    log.warning(
                        "could not record event %s on %s/%s: %s",
                        event.reason,
                        meta.get("namespace"),
                        meta["name"],
                        exc,
                    )
            except Exception:
                log.exception("could not record event %s on %s", event.reason, meta["name"])
            finally:
                self._queue.task_done()
