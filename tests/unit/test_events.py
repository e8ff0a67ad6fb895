"""The Event recorder: off the reconcile path, stamped when recorded, bounded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from canarium import metrics
from canarium.events import EventRecorder
from canarium.kube import KubeError, NotLeader
from canarium.rollout import Event

T0 = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def _body(name: str) -> dict[str, Any]:
    return {"kind": "ModelDeployment", "metadata": {"name": name, "namespace": "ml"}}


class Sink:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, datetime | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: list[Exception] = []

    async def event(
        self,
        involved: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        at: datetime | None = None,
    ) -> None:
        await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)
        self.posted.append((involved["metadata"]["name"], reason, at))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_recording_never_waits_for_the_api_server_and_flush_does() -> None:
    async def scenario() -> None:
        sink = Sink()
        sink.gate.clear()  # the API server does not answer
        recorder = EventRecorder(sink, clock=Clock())
        recorder.record(_body("iris"), Event("Normal", "Progressing", "new revision"))
        recorder.record(_body("iris"), Event("Normal", "Ready", "serving"))
        await asyncio.sleep(0.01)
        assert sink.posted == []
        flushed = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.01)
        assert not flushed.done(), "flush waits until they are posted"
        sink.gate.set()
        await asyncio.wait_for(flushed, 1)
        assert sorted(reason for _, reason, _ in sink.posted) == ["Progressing", "Ready"]
        await recorder.stop()

    asyncio.run(scenario())


def test_each_event_carries_the_time_it_was_recorded_not_posted() -> None:
    async def scenario() -> None:
        sink = Sink()
        sink.gate.clear()
        recorder = EventRecorder(sink, clock=Clock())
        recorder.record(_body("iris"), Event("Normal", "Progressing", ""))
        recorder.record(_body("iris"), Event("Normal", "Ready", ""))
        await asyncio.sleep(0.05)  # posted later than recorded
        sink.gate.set()
        await recorder.flush()
        stamps = {reason: at for _, reason, at in sink.posted}
        assert stamps == {
            "Progressing": T0 + timedelta(seconds=1),
            "Ready": T0 + timedelta(seconds=2),
        }
        await recorder.stop()

    asyncio.run(scenario())


def test_beyond_the_queue_capacity_events_are_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dropped = metrics.EVENTS_DROPPED._value.get()

    async def scenario() -> None:
        sink = Sink()
        sink.gate.clear()
        recorder = EventRecorder(sink, capacity=2, senders=1)
        for i in range(5):
            recorder.record(_body(f"m{i}"), Event("Normal", "Ready", ""))
            await asyncio.sleep(0)  # the sender takes the first one off the queue
        sink.gate.set()
        await recorder.flush()
        # One being posted, two queued: the last two were dropped.
        assert [name for name, _, _ in sink.posted] == ["m0", "m1", "m2"]
        await recorder.stop()

    asyncio.run(scenario())
    assert metrics.EVENTS_DROPPED._value.get() == dropped + 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "event Ready on ml/m3 dropped: 2 events wait to be posted",
        "event Ready on ml/m4 dropped: 2 events wait to be posted",
    ]


def test_a_failed_post_is_given_up_and_warned_about_unless_nobody_would_care(
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminating = '{"message": "namespace ml is being terminated"}'

    async def scenario() -> None:
        sink = Sink()
        sink.fail = [
            KubeError(403, "Forbidden", terminating),
            NotLeader("replica-a"),
            KubeError(500, "Internal", "{}"),
            RuntimeError("boom"),
        ]
        recorder = EventRecorder(sink, senders=1)
        for reason in ("A", "B", "C", "D", "E"):
            recorder.record(_body("iris"), Event("Normal", reason, ""))
        await recorder.flush()
        assert [reason for _, reason, _ in sink.posted] == ["E"], "the others are not retried"
        await recorder.stop()

    asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert warnings == ["could not record event C on ml/iris: 500 Internal: {}"]
    assert errors == ["could not record event D on iris"]


def test_stop_posts_what_is_queued_within_the_grace_then_ends_the_senders() -> None:
    async def scenario() -> None:
        sink = Sink()
        recorder = EventRecorder(sink, senders=2)
        for i in range(3):
            recorder.record(_body(f"m{i}"), Event("Normal", "Ready", ""))
        await recorder.stop(grace=1)
        assert sorted(name for name, _, _ in sink.posted) == ["m0", "m1", "m2"]
        # An API server that never answers holds a stop for the grace only.
        sink.gate.clear()
        recorder.record(_body("late"), Event("Normal", "Ready", ""))
        started = asyncio.get_running_loop().time()
        await recorder.stop(grace=0.1)
        assert asyncio.get_running_loop().time() - started < 1
        assert all(task.done() for task in asyncio.all_tasks() if "events" in task.get_name())

    asyncio.run(scenario())
