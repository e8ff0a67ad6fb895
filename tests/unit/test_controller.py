"""The controller as pure units: its work queue, backoff, conflict and stale-event handling,
status patches of deleted objects, terminating namespaces, and the target of an analysis.
A fake Kube records every call; no cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
import urllib3
from canarium import controller as controller_module
from canarium import metrics
from canarium.analysis import AnalysisTarget, MeasuredWindow, WindowResult
from canarium.analysis import providers as providers_module
from canarium.analysis.judge import CUSTOM_CHECKS_NOT_RUN
from canarium.controller import (
    MAX_BACKOFF,
    Controller,
    Key,
    KeyQueue,
    OwnWrites,
    contested,
    covers,
)
from canarium.kube import Kube, KubeError, ObjectRef, Unreachable
from canarium.reconcile import ChildRef, Plan, ReconcileInput, rollout_input
from canarium.render import LABEL_DEPLOYMENT, LABEL_MANAGED_BY, LABEL_REVISION, MANAGER
from canarium.rollout import AnalysisRun, Event

from tests.unit.operator_fixtures import NOW, SETTINGS, mdep, name_of

KEY: Key = ("ml", "iris")
TERMINATING = json.dumps(
    {"message": 'deployments "x" is forbidden: namespace ml because it is being terminated'}
)
POLICY = {
    "steps": [{"setWeight": 25}, {"pause": {}}],
    "analysis": {"interval": "30s", "checks": {"errorRate": {"max": 0.05}}},
}


class FakeKube:
    """Records the controller's API calls; `fail[verb]` raises (once per entry) instead."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, list[Exception]] = {}
        self.lists: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        self.status_version = 50
        self.status_version_prefix = ""

    def _maybe_fail(self, verb: str) -> None:
        errors = self.fail.get(verb)
        if errors:
            raise errors.pop(0)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", manifest["metadata"]["name"]))
        self._maybe_fail("apply")
        body = json.loads(json.dumps(manifest))
        body["metadata"]["resourceVersion"] = "40"
        return cast(dict[str, Any], body)

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        self.calls.append(("get", ref))
        self._maybe_fail("get")
        return None

    async def delete(self, ref: ObjectRef) -> bool:
        self.calls.append(("delete", ref))
        self._maybe_fail("delete")
        return True

    async def patch_status(
        self, ref: ObjectRef, patch: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self.calls.append(("patch_status", (ref, patch, resource_version)))
        self._maybe_fail("patch_status")
        self.status_version += 1
        return {
            "apiVersion": "canarium.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": ref.name,
                "namespace": ref.namespace,
                "resourceVersion": f"{self.status_version_prefix}{self.status_version}",
            },
            "status": patch,
        }

    async def event(
        self,
        involved: dict[str, Any],
        type_: str,
        reason: str,
        msg: str,
        at: datetime | None = None,
    ) -> None:
        self.calls.append(("event", reason))
        self._maybe_fail("event")

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None, labels: str = ""
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", (kind, namespace, labels)))
        self._maybe_fail(f"list {kind}")
        return self.lists.get((kind, namespace), [])

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


def _controller(**kw: Any) -> tuple[Controller, FakeKube]:
    kube = FakeKube()
    return Controller(cast(Kube, kube), SETTINGS, **kw), kube


def _body(resource_version: str = "10", **extra: Any) -> dict[str, Any]:
    body = mdep(**extra).model_dump(by_alias=True, mode="json")
    body["metadata"]["resourceVersion"] = resource_version
    body["status"] = {}  # as the API server sends it: no nulls
    return body


def _child(
    name: str, version: str, kind: str = "Service", owner: str = "iris", **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": version,
            "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: owner},
            **extra,
        },
        "spec": {"ports": [{"port": 80}]},
    }


def _counter(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())


def _record_timers(controller: Controller) -> list[tuple[Key, float]]:
    timers: list[tuple[Key, float]] = []
    controller.enqueue_after = lambda key, delay: timers.append((key, delay))  # type: ignore[method-assign]
    return timers


async def _drain(controller: Controller, workers: int = 1) -> None:
    """Run workers until the queue is empty and nothing is being reconciled."""
    tasks = [asyncio.create_task(controller._worker()) for _ in range(workers)]
    for _ in range(200):
        await asyncio.sleep(0)
        if controller._queue.empty() and not controller._active and not controller._queued:
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _run_worker(
    controller: Controller, reconcile: Callable[[Key], Awaitable[None]], *keys: Key
) -> None:
    controller.reconcile_key = reconcile  # type: ignore[method-assign]

    async def scenario() -> None:
        for key in keys:
            controller.enqueue(key)
        await _drain(controller)

    asyncio.run(scenario())


# --- the work queue ---------------------------------------------------------------------------
def test_a_key_queued_twice_is_reconciled_once() -> None:
    controller, _ = _controller()
    calls: list[Key] = []

    async def reconcile(key: Key) -> None:
        calls.append(key)

    other = ("ml", "other")
    _run_worker(controller, reconcile, KEY, KEY, other, KEY)
    assert calls == [KEY, other]


def test_a_key_queued_while_it_is_reconciled_runs_again_once_afterwards() -> None:
    controller, _ = _controller()
    calls: list[Key] = []
    in_flight: list[Key] = []

    async def reconcile(key: Key) -> None:
        assert key not in in_flight, "a key is never reconciled by two workers at once"
        in_flight.append(key)
        calls.append(key)
        if len(calls) == 1:
            # Events during the reconcile: the key runs once more, afterwards.
            controller.enqueue(key)
            controller.enqueue(key)
            assert controller._queue.qsize() == 0, "not handed to another worker meanwhile"
        await asyncio.sleep(0)
        in_flight.remove(key)

    controller.reconcile_key = reconcile  # type: ignore[method-assign]

    async def scenario() -> None:
        controller.enqueue(KEY)
        await _drain(controller, workers=3)

    asyncio.run(scenario())
    assert calls == [KEY, KEY]


def test_keys_reconciled_before_go_ahead_of_first_passes_without_starving_them() -> None:
    controller, _ = _controller()
    calls: list[Key] = []

    async def reconcile(key: Key) -> None:
        calls.append(key)

    old = [("ml", f"old-{i}") for i in range(6)]
    new = [("ml", f"new-{i}") for i in range(6)]
    for key in [*old, *new]:
        controller.mdeps[key] = {}
    _run_worker(controller, reconcile, *old)  # their first pass
    assert calls == old
    calls.clear()
    # A burst of new ones, then the old ones again (their Deployments became available):
    # the old ones first, but one get in four takes a first pass.
    _run_worker(controller, reconcile, *new, *old)
    assert calls == [
        old[0], new[0], old[1], old[2], old[3], new[1], old[4], old[5], *new[2:],
    ]  # fmt: skip
    # Deleted and made again: a first pass again.
    controller.on_mdep("ADDED", _body())
    _run_worker(controller, reconcile)
    assert KEY in controller._reconciled
    controller.on_mdep("DELETED", _body())
    assert KEY not in controller._reconciled


def test_a_key_queue_serves_a_first_pass_within_every_share_of_gets() -> None:
    queue = KeyQueue()

    async def scenario() -> list[Key]:
        got = []
        queue.put_nowait(("ml", "first"), seen=False)
        for i in range(20):
            queue.put_nowait(("ml", f"seen-{i}"), seen=True)
        for _ in range(KeyQueue.FIRST_PASS_SHARE):
            got.append(await queue.get())
        return got

    got = asyncio.run(scenario())
    assert ("ml", "first") in got
    assert queue.qsize() == 21 - KeyQueue.FIRST_PASS_SHARE
    assert not queue.empty()


def test_a_key_queue_measures_its_depth_adds_and_waits() -> None:
    """client-go's workqueue metrics, for this queue's name: depth now, keys added, and how
    long each waited for a worker (here 50 ms for the first, none for the second)."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"name": "test-queue", **labels}) or 0.0

    queue = KeyQueue("test-queue")
    # The registry outlives this test (a runner may run it twice in one process): deltas.
    count, total, fast, adds = (
        "canarium_workqueue_queue_duration_seconds_count",
        "canarium_workqueue_queue_duration_seconds_sum",
        "canarium_workqueue_queue_duration_seconds_bucket",
        "canarium_workqueue_adds_total",
    )
    before = (sample(count), sample(total), sample(fast, le="0.01"), sample(adds))

    async def scenario() -> None:
        queue.put_nowait(("ml", "a"), seen=False)
        assert sample("canarium_workqueue_depth") == 1
        await asyncio.sleep(0.05)
        queue.put_nowait(("ml", "b"), seen=True)
        assert sample("canarium_workqueue_depth") == 2
        assert await queue.get() == ("ml", "b")
        assert await queue.get() == ("ml", "a")

    asyncio.run(scenario())
    assert sample("canarium_workqueue_depth") == 0
    assert sample(adds) - before[3] == 2
    waits = sample(count) - before[0]
    slow = waits - (sample(fast, le="0.01") - before[2])
    assert (waits, slow) == (2, 1)
    assert sample(total) - before[1] >= 0.05


def test_a_timer_queues_its_key_and_a_new_timer_replaces_the_old() -> None:
    controller, _ = _controller()

    async def scenario() -> None:
        controller.enqueue_after(KEY, 10.0)
        controller.enqueue_after(KEY, 0.0)  # replaces the 10 s one
        assert len(controller._timers) == 1
        await asyncio.sleep(0.01)
        assert KEY in controller._queued
        assert controller._queue.qsize() == 1
        assert KEY not in controller._timers
        controller.enqueue_after(KEY, 60.0)
        await controller.stop()
        assert controller._timers[KEY].cancelled()

    asyncio.run(scenario())


# --- backoff and retries ----------------------------------------------------------------------
def test_failures_back_off_exponentially_up_to_the_cap_and_success_resets() -> None:
    controller, _ = _controller()
    timers = _record_timers(controller)
    errors_before = _counter(metrics.RECONCILE_ERRORS, "ModelDeployment")
    for _ in range(12):
        controller._retry(KEY, RuntimeError("boom"))
    delays = [delay for _, delay in timers]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[8] == 256.0
    assert delays[9:] == [MAX_BACKOFF] * 3
    assert _counter(metrics.RECONCILE_ERRORS, "ModelDeployment") == errors_before + 12

    # Through the worker: a failure counts, a success forgets the count.
    outcomes: list[Exception | None] = [RuntimeError("boom"), None]

    async def reconcile(key: Key) -> None:
        error = outcomes.pop(0)
        if error:
            raise error

    controller._failures.clear()
    timers.clear()
    _run_worker(controller, reconcile, KEY)
    assert timers == [(KEY, 1.0)]
    assert controller._failures[KEY] == 1
    _run_worker(controller, reconcile, KEY)
    assert KEY not in controller._failures


def test_a_conflict_is_retried_soon_and_is_not_counted_as_an_error() -> None:
    controller, _ = _controller()
    timers = _record_timers(controller)
    errors_before = _counter(metrics.RECONCILE_ERRORS, "ModelDeployment")
    for _ in range(5):
        controller._retry(KEY, KubeError(409, "Conflict", "{}"))
    assert [delay for _, delay in timers] == [0.2] * 5
    assert _counter(metrics.RECONCILE_ERRORS, "ModelDeployment") == errors_before
    # Any other API error backs off and counts as an error; the conflicts before it do not
    # count toward its backoff: it waits as a first failure does.
    controller._retry(KEY, KubeError(500, "Internal", "{}"))
    assert timers[-1][1] == 1.0
    assert _counter(metrics.RECONCILE_ERRORS, "ModelDeployment") == errors_before + 1


def test_a_deleted_namespace_or_object_is_not_retried_but_other_errors_are() -> None:
    controller, _ = _controller()
    controller.on_mdep("ADDED", _body())
    timers = _record_timers(controller)

    def outcome(error: KubeError) -> list[tuple[Key, float]]:
        timers.clear()
        controller._failures[KEY] = 3

        async def reconcile(key: Key) -> None:
            raise error

        _run_worker(controller, reconcile, KEY)
        return list(timers)

    terminating = KubeError(403, "Forbidden", TERMINATING)
    assert terminating.namespace_gone
    assert outcome(terminating) == []
    assert KEY not in controller._failures
    gone = KubeError(
        404,
        "Not Found",
        json.dumps({"message": 'namespaces "ml" not found', "details": {"kind": "namespaces"}}),
    )
    assert gone.namespace_gone
    assert outcome(gone) == []

    # Anything else is retried with backoff: RBAC refusing, a resource that is not served.
    forbidden = KubeError(403, "Forbidden", json.dumps({"message": "RBAC says no"}))
    assert not forbidden.namespace_gone
    assert outcome(forbidden) == [(KEY, 8.0)]
    missing = KubeError(404, "Not Found", json.dumps({"details": {"kind": "httproutes"}}))
    assert not missing.namespace_gone
    assert not KubeError(404, "Not Found", "not json").namespace_gone
    assert outcome(missing) == [(KEY, 8.0)]

    # The ModelDeployment itself deleted while it was reconciled: dropped, whatever the error.
    controller.on_mdep("DELETED", _body("11"))
    assert outcome(forbidden) == []
    assert KEY not in controller._failures


# --- watch events -----------------------------------------------------------------------------
def test_an_event_older_than_the_cache_is_ignored() -> None:
    """resourceVersion is opaque: an event is older than the operator's own write until the
    watch delivers the version that write made (a watch delivers an object's changes in
    order)."""
    controller, kube = _controller()
    controller.on_mdep("ADDED", _body("x-10"))
    assert controller._queued == {KEY}
    controller._queued.clear()
    # The operator's own status patch made version x-51; the watch then delivers x-11.
    kube.status_version_prefix = "x-"
    assert asyncio.run(controller.write_status(KEY, controller.mdeps[KEY], {"phase": "Healthy"}))
    controller.mdeps[KEY]["spec"] = _body()["spec"]  # the fake answers with the status only
    controller.on_mdep("MODIFIED", _body("x-11"))
    assert controller.mdeps[KEY]["status"] == {"phase": "Healthy"}
    assert not controller._queued
    # The write comes back, then a newer one replaces the cache and queues a reconcile.
    echo = _body("x-51")
    echo["status"] = {"phase": "Healthy"}
    controller.on_mdep("MODIFIED", echo)
    controller.on_mdep("MODIFIED", _body("x-9", version="2.0.0"))
    assert controller.mdeps[KEY]["spec"]["model"]["version"] == "2.0.0"
    assert controller._queued == {KEY}
    # A listing (the watch restarted) or a deletion is always taken.
    assert asyncio.run(controller.write_status(KEY, controller.mdeps[KEY], {"phase": "Paused"}))
    controller.on_mdep(None, _body("x-8", version="3.0.0"))
    assert controller.mdeps[KEY]["spec"]["model"]["version"] == "3.0.0"


def test_a_child_event_older_than_the_cache_is_ignored() -> None:
    controller, _ = _controller()
    # The operator's own apply made version 20; the watch still delivers 19 first.
    controller.on_child("ADDED", _child("iris", "20", annotations={"v": "new"}), own_write=True)
    assert not controller._queued, "no reconcile for the operator's own write"
    controller.on_child("MODIFIED", _child("iris", "19", annotations={"v": "old"}))
    cached = controller.children["Service"][KEY]["iris"]
    assert cached["metadata"]["annotations"] == {"v": "new"}
    controller.on_child("MODIFIED", _child("iris", "20", annotations={"v": "new"}))
    controller.on_child("MODIFIED", _child("iris", "21", annotations={"v": "newer"}))
    assert controller.children["Service"][KEY]["iris"]["metadata"]["annotations"] == {"v": "newer"}
    controller.on_child("DELETED", _child("iris", "22"))
    assert "iris" not in controller.children["Service"][KEY]
    assert controller._queued == {KEY}


def test_children_not_managed_by_the_operator_are_ignored() -> None:
    controller, _ = _controller()
    body = _child("iris", "1")
    body["metadata"]["labels"][LABEL_MANAGED_BY] = "helm"
    controller.on_child("ADDED", body)
    unowned = _child("iris", "1")
    del unowned["metadata"]["labels"][LABEL_DEPLOYMENT]
    controller.on_child("ADDED", unowned)
    assert not controller.children["Service"]
    assert not controller._queued


def test_a_non_numeric_resource_version_never_hides_an_event() -> None:
    controller, _ = _controller()
    controller.on_child("ADDED", _child("iris", "not-a-number", annotations={"v": "1"}))
    controller.on_child("MODIFIED", _child("iris", "5", annotations={"v": "2"}))
    assert controller.children["Service"][KEY]["iris"]["metadata"]["annotations"] == {"v": "2"}


def test_deleting_a_model_deployment_forgets_its_timer_failures_and_children() -> None:
    controller, _ = _controller()

    async def scenario() -> None:
        controller.on_mdep("ADDED", _body())
        controller.on_child("ADDED", _child("iris", "1"))
        controller.enqueue_after(KEY, 60.0)
        timer = controller._timers[KEY]
        controller._failures[KEY] = 4
        controller.on_mdep("DELETED", _body())
        assert timer.cancelled()
        assert KEY not in controller.mdeps
        assert KEY not in controller._failures
        assert KEY not in controller.children["Service"]
        assert controller.build_input(KEY) is None

    asyncio.run(scenario())


def test_a_policy_event_queues_only_the_model_deployments_that_refer_to_it() -> None:
    controller, _ = _controller()
    ref = {"policyRef": {"name": "safe"}}
    controller.on_mdep("ADDED", _body(rollout=ref))
    other_ns = _body(rollout=ref)
    other_ns["metadata"]["namespace"] = "prod"
    controller.on_mdep("ADDED", other_ns)
    other_policy = _body(rollout={"policyRef": {"name": "fast"}})
    other_policy["metadata"]["name"] = "wine"
    controller.on_mdep("ADDED", other_policy)
    controller._queued.clear()
    policy = {"metadata": {"namespace": "ml", "name": "safe"}, "spec": POLICY}
    controller.on_policy("ADDED", policy)
    assert controller._queued == {KEY}
    assert ("ml", "safe") in controller.policies
    controller._queued.clear()
    controller.on_policy("DELETED", policy)
    assert ("ml", "safe") not in controller.policies
    assert controller._queued == {KEY}


# --- reconcile input --------------------------------------------------------------------------
def test_the_policy_comes_from_the_reference_and_its_absence_or_invalidity_is_reported() -> None:
    controller, _ = _controller()
    controller.on_mdep("ADDED", _body(rollout={"policyRef": {"name": "safe"}}))
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.policy is None
    assert inp.policy_error == "RolloutPolicy 'safe' not found"

    controller.on_policy("ADDED", {"metadata": {"namespace": "ml", "name": "safe"}, "spec": {}})
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.policy is None
    assert inp.policy_error is not None
    assert inp.policy_error.startswith("RolloutPolicy 'safe' is invalid")

    controller.on_policy("ADDED", {"metadata": {"namespace": "ml", "name": "safe"}, "spec": POLICY})
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.policy_error is None
    assert inp.policy is not None
    assert [s.set_weight for s in inp.policy.steps] == [25, None]


def test_an_inline_policy_wins_and_no_rollout_means_no_policy() -> None:
    controller, _ = _controller()
    controller.on_mdep("ADDED", _body(rollout={"policy": POLICY}))
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.policy is not None
    assert inp.policy.analysis is not None
    controller.on_mdep("MODIFIED", _body("11"))
    inp = controller.build_input(KEY)
    assert inp is not None
    assert (inp.policy, inp.policy_error) == (None, None)


def test_a_model_deployment_being_deleted_is_not_reconciled() -> None:
    controller, kube = _controller()
    body = _body()
    body["metadata"]["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    controller.on_mdep("MODIFIED", body)
    assert controller.build_input(KEY) is None
    asyncio.run(controller.reconcile_key(KEY))
    assert kube.calls == []


# --- executing a plan -------------------------------------------------------------------------
def _plan(**kw: Any) -> Plan:
    return Plan(**kw)


def test_a_status_patch_carries_the_cached_resource_version_and_updates_the_cache() -> None:
    controller, kube = _controller()
    controller.on_mdep("ADDED", _body("10"))
    plan = _plan(status={"phase": "Progressing"}, events=[Event("Normal", "Started", "go")])

    async def scenario() -> None:
        await controller.execute(KEY, plan)
        assert ("event", "Started") not in kube.calls, "posted after the reconcile, not in it"
        await controller.events.flush()

    asyncio.run(scenario())
    verb, (ref, patch, version) = kube.calls[0]
    assert verb == "patch_status"
    assert ref == ObjectRef("canarium.dev/v1alpha1", "ModelDeployment", "ml", "iris")
    assert patch == {"phase": "Progressing"}
    assert version == "10"
    assert controller.mdeps[KEY]["metadata"]["resourceVersion"] == "51"
    assert kube.calls[1] == ("event", "Started")
    # The same status again: nothing to patch.
    kube.calls.clear()
    asyncio.run(controller.execute(KEY, _plan(status={"phase": "Progressing"})))
    assert kube.calls == []


def test_a_status_patch_of_a_deleted_object_ends_the_reconcile_quietly() -> None:
    controller, kube = _controller()
    timers = _record_timers(controller)
    controller.on_mdep("ADDED", _body("10"))
    kube.fail["patch_status"] = [KubeError(404, "NotFound", "{}")]
    plan = _plan(
        status={"phase": "Progressing"},
        events=[Event("Normal", "Started", "go")],
        requeue_after=5.0,
    )
    asyncio.run(controller.execute(KEY, plan))
    assert kube.verbs() == ["patch_status"], "no event on an object that is gone"
    assert timers == []
    assert controller.mdeps[KEY]["metadata"]["resourceVersion"] == "10"


def test_a_status_patch_conflict_fails_the_reconcile_and_is_retried_soon() -> None:
    controller, kube = _controller()
    timers = _record_timers(controller)
    controller.on_mdep("ADDED", _body("10"))
    kube.fail["patch_status"] = [KubeError(409, "Conflict", "{}")]
    plan = _plan(status={"phase": "Progressing"}, requeue_after=5.0)

    async def reconcile(key: Key) -> None:
        await controller.execute(key, plan)

    _run_worker(controller, reconcile, KEY)
    assert kube.verbs() == ["patch_status"]
    assert timers == [(KEY, 0.2)], "a stale status is not written, the reconcile runs again"
    assert controller.mdeps[KEY]["metadata"]["resourceVersion"] == "10"


def test_an_event_that_cannot_be_recorded_does_not_fail_the_reconcile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, kube = _controller()
    timers = _record_timers(controller)
    controller.on_mdep("ADDED", _body("10"))
    kube.fail["event"] = [
        KubeError(403, "Forbidden", TERMINATING),
        KubeError(500, "Internal", "{}"),
    ]
    rollbacks = _counter(metrics.ROLLBACKS, "ml", "iris", "RolledBack")
    plan = _plan(
        events=[
            Event("Warning", "RolledBack", "bad"),
            Event("Normal", "Other", "x"),
            Event("Normal", "Third", "y"),
        ],
        requeue_after=7.0,
    )

    async def scenario() -> None:
        await controller.execute(KEY, plan)
        await controller.events.flush()

    asyncio.run(scenario())
    assert sorted(kube.calls) == [("event", "Other"), ("event", "RolledBack"), ("event", "Third")]
    assert timers == [(KEY, 7.0)]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["could not record event Other on ml/iris: 500 Internal: {}"], (
        "a terminating namespace is not worth a warning"
    )
    assert _counter(metrics.ROLLBACKS, "ml", "iris", "RolledBack") == rollbacks + 1


def test_applies_are_skipped_when_the_cache_covers_them_and_nobody_took_a_field() -> None:
    controller, kube = _controller()
    controller.on_mdep("ADDED", _body())
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "labels": {LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: "iris"},
        },
        "spec": {"ports": [{"port": 80}]},
    }

    def plan() -> Plan:
        return _plan(apply=[json.loads(json.dumps(manifest))])

    controller._queued.clear()
    asyncio.run(controller.execute(KEY, plan()))
    assert kube.calls == [("apply", "iris")]
    cached = controller.children["Service"][KEY]["iris"]
    assert cached["metadata"]["resourceVersion"] == "40"
    assert not controller._queued, "our own write is cached without queueing a reconcile"

    # Unchanged: no apply.
    kube.calls.clear()
    asyncio.run(controller.execute(KEY, plan()))
    assert kube.calls == []

    # Another manager took spec.ports: apply again to take it back.
    cached["metadata"]["managedFields"] = [
        {"manager": "kubectl-edit", "fieldsV1": {"f:spec": {"f:ports": {}}}}
    ]
    asyncio.run(controller.execute(KEY, plan()))
    assert kube.calls == [("apply", "iris")]

    # Another manager on a field we do not set: no apply.
    kube.calls.clear()
    controller.children["Service"][KEY]["iris"]["metadata"]["managedFields"] = [
        {"manager": "kubectl-edit", "fieldsV1": {"f:spec": {"f:externalName": {}}}}
    ]
    asyncio.run(controller.execute(KEY, plan()))
    assert kube.calls == []


def test_deletes_go_to_the_model_deployments_namespace() -> None:
    controller, kube = _controller()
    controller.on_mdep("ADDED", _body())
    plan = _plan(delete=[ChildRef("apps/v1", "Deployment", "iris-old")])
    asyncio.run(controller.execute(KEY, plan))
    assert kube.calls == [("delete", ObjectRef("apps/v1", "Deployment", "ml", "iris-old"))]


def test_covers_and_contested() -> None:
    assert covers({"a": 1, "b": 2}, {"a": 1})
    assert not covers({"a": 1}, {"a": 1, "b": 2})
    assert not covers({"a": [1, 2]}, {"a": [1]})
    assert not covers({"a": "1"}, {"a": 1})
    assert not covers([1], {"a": 1})
    manifest = {"spec": {"replicas": 3, "template": {"x": 1}}}
    assert not contested({"metadata": {}}, manifest)
    owned = {"metadata": {"managedFields": [{"fieldsV1": {"f:spec": {"f:replicas": {}}}}]}}
    assert contested(owned, manifest)
    presence = {"metadata": {"managedFields": [{"fieldsV1": {"f:spec": {".": {}}}}]}}
    assert not contested(presence, manifest)
    in_list = {"metadata": {"managedFields": [{"fieldsV1": {"f:ports": {"k:{}": {}}}}]}}
    assert contested(in_list, {"ports": [{"port": 80}]})
    assert not contested(in_list, {"ports": []})


# --- start: priming the caches ----------------------------------------------------------------
def test_start_primes_the_caches_skips_unserved_kinds_and_stops_cleanly() -> None:
    controller, kube = _controller(namespaces=["ml"], workers=2)
    deployment = _child("iris-abc", "3", kind="Deployment")
    del deployment["kind"], deployment["apiVersion"]  # a LIST's items carry neither
    kube.lists[("Deployment", "ml")] = [deployment, _child("stray", "3", owner="")]
    del kube.lists[("Deployment", "ml")][1]["metadata"]["labels"][LABEL_DEPLOYMENT]
    kube.lists[("Pod", "ml")] = [
        {
            "metadata": {
                "name": "iris-abc-1",
                "namespace": "ml",
                "labels": {LABEL_DEPLOYMENT: "iris", LABEL_REVISION: "abc"},
            },
            "status": {"phase": "Running"},
        }
    ]
    kube.fail["list HTTPRoute"] = [KubeError(404, "NotFound", "{}")]

    async def scenario() -> None:
        await controller.start()
        assert len(controller._tasks) == 2
        await controller.stop()
        assert all(task.done() for task in controller._tasks)

    asyncio.run(scenario())
    cached = controller.children["Deployment"][KEY]
    assert set(cached) == {"iris-abc"}
    assert cached["iris-abc"]["kind"] == "Deployment"
    assert [p["metadata"]["name"] for p in controller.pods_of(KEY, "abc")] == ["iris-abc-1"]
    listed = [args for verb, args in kube.calls if verb == "list"]
    assert {kind for kind, _, _ in listed} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "HTTPRoute",
        "Pod",
        # the retraining side: its ModelRetrainings, their Jobs, and the ModelDeployments
        "ModelRetraining",
        "Job",
        "ModelDeployment",
    }
    assert all(ns == "ml" for _, ns, _ in listed)


def test_start_fails_on_other_list_errors() -> None:
    controller, kube = _controller()
    kube.fail["list Service"] = [KubeError(403, "Forbidden", "{}")]
    with pytest.raises(KubeError):
        asyncio.run(controller.start())
    listed = [args for verb, args in kube.calls if verb == "list"]
    assert listed[0][1] is None, "no namespaces given: all of them"


# --- analysis: when and what it measures ------------------------------------------------------
class FakeProvider:
    runs_custom_checks = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def baseline(self, target: AnalysisTarget) -> None:
        self.calls.append(("baseline", target))

    async def measure(self, target: AnalysisTarget) -> WindowResult:
        self.calls.append(("measure", target))
        return WindowResult(canary=None, stable=None, errors=["no pods"])

    async def custom_values(self, analysis: Any, target: AnalysisTarget) -> dict[str, Any]:
        self.calls.append(("custom", target))
        return {}

    def forget(self, namespace: str, deployment: str) -> None:
        self.calls.append(("forget", (namespace, deployment)))


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    fake = FakeProvider()
    monkeypatch.setitem(providers_module.FACTORIES, "podMetrics", lambda *args: fake)
    return fake


def _analysed(
    status: dict[str, Any], now_offset: int = 31, policy: dict[str, Any] = POLICY
) -> tuple[Controller, Any]:
    controller, _ = _controller(clock=lambda: NOW + timedelta(seconds=now_offset))
    body = _body(rollout={"policy": policy})
    body["status"] = status
    controller.on_mdep("ADDED", body)
    inp = controller.build_input(KEY)
    assert inp is not None
    return controller, asyncio.run(controller.analyse(KEY, inp))


def _desired() -> str:
    return name_of(mdep())


def _window(inp: ReconcileInput) -> MeasuredWindow:
    """The interval the controller measured: reconcile judges it (controller.measure no more)."""
    assert inp.analysis_run is None, "the controller hands in a window, never a judged run"
    assert inp.analysis_window is not None
    return inp.analysis_window


def _judged(inp: ReconcileInput) -> AnalysisRun:
    """The run the state machine records for the input's window: judged in reconcile."""
    run = rollout_input(inp).analysis_run
    assert run is not None
    return run


def _rolling(analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Progressing",
        "stable": {"name": "iris-0ld", "weight": 75, "readyReplicas": 3},
        "canary": {"name": _desired(), "weight": 25, "readyReplicas": 1},
    }
    if analysis is not None:
        status["analysis"] = analysis
    return status


def test_the_first_analysis_of_a_canary_takes_a_baseline(provider: FakeProvider) -> None:
    _, inp = _analysed(_rolling())
    assert [verb for verb, _ in provider.calls] == ["baseline"]
    target = provider.calls[0][1]
    desired = _desired()
    assert target == AnalysisTarget(
        namespace="ml",
        deployment="iris",
        canary_revision_hash=desired.removeprefix("iris-"),
        stable_revision_hash="0ld",
        canary_revision_name=desired,
        stable_revision_name="iris-0ld",
        interval_seconds=30,
    )
    window = _window(inp)
    assert window.time == NOW + timedelta(seconds=31)
    assert window.result is None, "a baseline: nothing to judge"
    run = _judged(inp)
    assert (run.time, run.judgement) == (NOW + timedelta(seconds=31), None)
    assert inp.now == NOW + timedelta(seconds=31)


def test_a_new_window_after_a_weight_change_takes_a_baseline_again(
    provider: FakeProvider,
) -> None:
    # The state machine reset the analysis (intervals kept, no lastRunTime): a new window.
    _, inp = _analysed(_rolling({"intervals": 2, "failures": 1}))
    assert [verb for verb, _ in provider.calls] == ["baseline"]
    assert _window(inp).result is None
    assert _judged(inp).judgement is None


def test_a_due_interval_of_a_canary_is_measured_and_judged(provider: FakeProvider) -> None:
    last = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    controller, inp = _analysed(_rolling({"intervals": 1, "lastRunTime": last}))
    assert [verb for verb, _ in provider.calls] == ["measure", "custom"]
    target = provider.calls[0][1]
    assert target.canary_revision_name == _desired()
    assert target.stable_revision_name == "iris-0ld"
    window = _window(inp)
    assert window.result == WindowResult(canary=None, stable=None, errors=["no pods"])
    assert window.custom == {}, "the provider runs custom checks: their values came along"
    judgement = _judged(inp).judgement
    assert judgement is not None
    assert judgement.verdict == "Inconclusive", "no data is never Failed"
    assert judgement.measurements[0].reason == "no canary metrics in this window"
    controller.providers.analysis_ended(*KEY)
    assert provider.calls[-1] == ("forget", KEY), "the provider that measured it is kept"


def test_custom_checks_of_a_provider_that_runs_none_are_inconclusive(
    provider: FakeProvider,
) -> None:
    provider.runs_custom_checks = False
    last = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    custom = {"name": "accuracy", "query": "q", "min": 0.9}
    policy = {**POLICY, "analysis": {"interval": "30s", "checks": {"custom": [custom]}}}
    _, inp = _analysed(_rolling({"intervals": 1, "lastRunTime": last}), policy=policy)
    assert [verb for verb, _ in provider.calls] == ["measure"]
    assert _window(inp).custom is None
    judgement = _judged(inp).judgement
    assert judgement is not None
    (measurement,) = [m for m in judgement.measurements if m.check == "accuracy"]
    assert (measurement.verdict, measurement.reason) == ("Inconclusive", CUSTOM_CHECKS_NOT_RUN)


def test_an_interval_not_yet_due_measures_nothing(provider: FakeProvider) -> None:
    last = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    _, inp = _analysed(_rolling({"intervals": 1, "lastRunTime": last}), now_offset=10)
    assert provider.calls == []
    assert (inp.analysis_run, inp.analysis_window) == (None, None)


def test_a_bake_measures_the_promoted_revision_against_the_one_it_replaced(
    provider: FakeProvider,
) -> None:
    status = {
        "phase": "Healthy",
        "stable": {"name": _desired(), "weight": 100, "readyReplicas": 3},
        "previous": {"name": "iris-0ld", "replicas": 3},
        "bakeUntil": (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _, inp = _analysed(status)
    target = provider.calls[0][1]
    assert target.canary_revision_name == _desired()
    assert target.canary_revision_hash == _desired().removeprefix("iris-")
    assert target.stable_revision_name == "iris-0ld"
    assert target.stable_revision_hash == "0ld"
    assert _window(inp).result is None  # the bake's first interval: a baseline


def test_a_canary_of_an_older_spec_is_not_measured_as_the_canary(provider: FakeProvider) -> None:
    # The spec moved on: status.canary is no longer the desired revision, nothing is rolling.
    status = _rolling()
    status["canary"]["name"] = "iris-0bs0lete"
    _, inp = _analysed(status)
    assert provider.calls == []
    assert (inp.analysis_run, inp.analysis_window) == (None, None)


def test_analysis_state_is_forgotten_once_no_canary_or_bake_remains(
    provider: FakeProvider,
) -> None:
    controller, _ = _analysed(_rolling())
    assert ("forget", KEY) not in provider.calls
    controller.on_mdep("MODIFIED", _body(rollout={"policy": POLICY}))  # no canary any more
    asyncio.run(controller.reconcile_key(KEY))
    assert ("forget", KEY) in provider.calls
    assert "apply" in cast(FakeKube, controller.kube).verbs()


def test_deleting_a_model_deployment_mid_analysis_drops_the_providers_state(
    provider: FakeProvider,
) -> None:
    """A ModelDeployment deleted mid-rollout: the provider forgets the revisions it measured
    (pod-metrics keeps baselines per revision, for as long as nobody says otherwise)."""
    controller, _ = _analysed(_rolling())
    assert ("forget", KEY) not in provider.calls
    controller.on_mdep("DELETED", _body())
    assert ("forget", KEY) in provider.calls


def test_a_model_deployment_deleted_during_its_reconcile_ends_it_quietly() -> None:
    controller, kube = _controller()
    controller.on_mdep("ADDED", _body("10"))
    controller.on_mdep("DELETED", _body("11"))
    asyncio.run(controller.execute(KEY, _plan(status={"phase": "Progressing"})))
    assert kube.verbs() == [], "nothing written for an object that is gone"


# --- analysis beside the reconcile workers ----------------------------------------------------
class HangingProvider(FakeProvider):
    """Measures one ModelDeployment (`hangs_on`) never: it waits until cancelled."""

    def __init__(self, hangs_on: str) -> None:
        super().__init__()
        self.hangs_on = hangs_on

    async def measure(self, target: AnalysisTarget) -> WindowResult:
        if target.deployment == self.hangs_on:
            self.calls.append(("hangs", target.deployment))
            await asyncio.Event().wait()
        return await super().measure(target)


def test_a_window_whose_judgement_was_not_written_is_judged_again_not_remeasured(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status write of a judged interval fails (the API server is away): the measured
    window stays, and the retried reconcile judges that same window. Measuring it again would
    lose the interval's numbers (the provider's counters moved on) and count it twice."""
    controller, kube = _controller(clock=lambda: NOW + timedelta(seconds=31))
    body = _body(rollout={"policy": POLICY})
    body["status"] = _rolling({"intervals": 1, "lastRunTime": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")})
    judged: list[MeasuredWindow | None] = []

    def reconcile(inp: ReconcileInput) -> Plan:
        """The state machine's part, reduced to what the controller does with a window."""
        judged.append(inp.analysis_window)
        analysis = {"intervals": 2} if inp.analysis_window is not None else {"intervals": 1}
        return _plan(status={**body["status"], "analysis": analysis})

    monkeypatch.setattr(controller_module, "reconcile", reconcile)
    versions = itertools.count(11)

    async def reconcile_now() -> None:
        # The cache fed as the watch would, the status unchanged: the failed write wrote
        # nothing (and the fake API answers status patches with the status only).
        version = str(next(versions))
        controller.on_mdep(
            None, {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
        )
        await controller.reconcile_key(KEY)

    async def scenario() -> None:
        await reconcile_now()  # the interval is due: measured in a task
        await controller._analysis_tasks[KEY]
        window = controller._analysis_runs[KEY][1]
        kube.fail["patch_status"] = [Unreachable(urllib3.exceptions.ProtocolError("reset"))]
        with pytest.raises(KubeError):
            await reconcile_now()
        assert controller._analysis_runs[KEY][1] is window, "kept for the retry"
        await reconcile_now()
        assert KEY not in controller._analysis_runs, "written: dropped"
        assert KEY not in controller._analysis_tasks, "and never measured again"
        assert judged[1:] == [window, window]
        await controller.stop()

    asyncio.run(scenario())
    measured = [verb for verb, _ in provider.calls if verb in ("baseline", "measure")]
    assert measured == ["measure"]


def test_a_provider_that_hangs_holds_up_no_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval of one ModelDeployment is measured in a task of its own: a provider that
    hangs for its whole timeout delays no reconcile, of that model or of another (one worker
    here), and the interval it never answered is recorded as no data."""
    provider = HangingProvider(hangs_on="iris")
    monkeypatch.setitem(providers_module.FACTORIES, "podMetrics", lambda *args: provider)
    settings = dataclasses.replace(SETTINGS, analysis_timeout_seconds=0.5)
    kube = FakeKube()
    controller = Controller(
        cast(Kube, kube), settings, workers=1, clock=lambda: NOW + timedelta(seconds=31)
    )
    last = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    other: Key = ("ml", "iris-b")
    versions = itertools.count(100)

    def rolling_body(name: str, resource_version: str) -> dict[str, Any]:
        body = _body(resource_version, rollout={"policy": POLICY})
        body["metadata"]["name"] = name
        body["status"] = _rolling({"intervals": 1, "lastRunTime": last})
        # Its revision: the same hash as iris', under its own name.
        body["status"]["canary"]["name"] = name + _desired().removeprefix("iris")
        return body

    def finished_run(key: Key) -> AnalysisRun | None:
        """The run a reconcile of `key` would take in now (its cache fed again: the fake API
        answers status patches with the status only)."""
        controller.on_mdep(None, rolling_body(key[1], str(next(versions))))
        inp = controller.build_input(key)
        assert inp is not None
        analysed = controller.with_analysis(key, inp)
        if analysed.analysis_window is None:
            return None
        return _judged(analysed)

    async def scenario() -> None:
        for key in (KEY, other):
            controller.on_mdep("ADDED", rolling_body(key[1], "10"))
        controller._queued.clear()  # the workers' part, done by hand here
        # Each starts measuring and does not wait for it (a reconcile that waited would time
        # out here: the provider hangs).
        await asyncio.wait_for(controller.reconcile_key(KEY), timeout=0.25)
        await asyncio.wait_for(controller.reconcile_key(other), timeout=0.25)
        await asyncio.sleep(0.05)
        assert ("hangs", "iris") in provider.calls
        # The other model's interval came back at once and queued it for its reconcile.
        assert controller._queued == {other}
        run = finished_run(other)
        assert run is not None
        assert run.judgement is not None
        assert run.judgement.verdict == "Inconclusive"
        assert KEY in controller._analysis_tasks, "still measuring the hanging one"
        assert finished_run(KEY) is None
        # Its whole timeout passed: the interval is no data, never a failure.
        await asyncio.sleep(0.6)
        assert KEY not in controller._analysis_tasks
        assert KEY in controller._queued
        run = finished_run(KEY)
        assert run is not None
        assert run.judgement is not None
        assert run.judgement.verdict == "Inconclusive"
        samples = run.judgement.measurements[0]
        assert (samples.check, samples.reason) == (
            "samples",
            "the metrics provider gave no answer within 0.5s",
        )
        await controller.stop()

    asyncio.run(scenario())


def _calls(kube: FakeKube, verb: str) -> list[Any]:
    return [(v, args) for v, args in kube.calls if v == verb]


def test_a_write_that_changed_nothing_waits_for_no_event() -> None:
    """Server-side apply of an unchanged object keeps its resourceVersion and makes no watch
    event: later events of that object are taken as they come."""
    controller, _ = _controller()
    controller.on_child("ADDED", _child("iris", "7", annotations={"v": "a"}))
    controller._queued.clear()
    controller.on_child("MODIFIED", _child("iris", "7", annotations={"v": "a"}), own_write=True)
    controller.on_child("MODIFIED", _child("iris", "8", annotations={"v": "b"}))
    assert controller.children["Service"][KEY]["iris"]["metadata"]["annotations"] == {"v": "b"}
    assert controller._queued == {KEY}


def test_a_write_answered_after_the_watch_brought_newer_versions_changes_nothing() -> None:
    """The watch can be faster than the answer to the write: the write's version, then the
    Deployment controller's next one, arrive before it. The answer is old news: it neither
    rolls the cache back nor makes later events wait."""
    controller, _ = _controller()
    controller.on_child("ADDED", _child("iris", "20", annotations={"v": "ours"}))
    controller.on_child("MODIFIED", _child("iris", "21", annotations={"v": "status"}))
    controller.on_child("MODIFIED", _child("iris", "20", annotations={"v": "ours"}), own_write=True)
    cached = controller.children["Service"][KEY]["iris"]
    assert cached["metadata"]["annotations"] == {"v": "status"}
    controller.on_child("MODIFIED", _child("iris", "22", annotations={"v": "later"}))
    assert controller.children["Service"][KEY]["iris"]["metadata"]["annotations"] == {"v": "later"}


def test_a_write_the_watch_never_echoes_hides_events_for_a_while_only() -> None:
    now = [0.0]
    writes = OwnWrites(wait=60, clock=lambda: now[0])
    ref = ("child", "ml", "iris", "Service", "iris")
    assert writes.wrote(ref, _child("iris", "30"))
    assert not writes.delivered(ref, "MODIFIED", _child("iris", "29"))
    now[0] = 61.0
    assert writes.delivered(ref, "MODIFIED", _child("iris", "31"))
    assert writes.delivered(ref, "MODIFIED", _child("iris", "32")), "nothing waits any more"


# --- monitoring of the stable revision (spec.monitoring) ---------------------------------------
MONITORED = {"interval": "1m", "dataDrift": {"maxPSI": 0.2}}


def _monitored(status: dict[str, Any] | None = None) -> tuple[Controller, FakeKube]:
    controller, kube = _controller(clock=lambda: NOW)
    body = _body(monitoring=MONITORED)
    body["status"] = status or {
        "phase": "Healthy",
        "stable": {"name": _desired(), "weight": 100, "readyReplicas": 3},
    }
    controller.on_mdep("ADDED", body)
    return controller, kube


def test_a_monitored_stable_revision_gets_its_first_window_measured_in_a_task(
    provider: FakeProvider,
) -> None:
    controller, _ = _monitored()

    async def scenario() -> None:
        inp = controller.build_input(KEY)
        assert inp is not None
        assert controller.with_monitoring(KEY, inp) is inp  # nothing measured yet
        task = controller._monitoring_tasks[KEY]
        await task
        (call,) = [c for c in provider.calls if c[0] == "baseline"]
        target = call[1]
        assert (target.canary_revision_name, target.stable_revision_name) == (_desired(), None)
        assert target.interval_seconds == 60.0
        assert KEY in controller._queued  # the finished window queues its ModelDeployment
        window = controller._monitoring_runs[KEY]
        assert (window.revision, window.metrics) == (_desired(), None)
        # the next reconcile input carries it, once
        inp = controller.build_input(KEY)
        assert inp is not None
        assert controller.with_monitoring(KEY, inp).monitoring_window == window
        assert controller._monitoring_runs[KEY] is window, "kept until its status is written"
        await controller.reconcile_key(KEY)
        assert KEY not in controller._monitoring_runs

    asyncio.run(scenario())


def test_no_monitoring_window_while_a_rollout_runs_or_without_spec_monitoring(
    provider: FakeProvider,
) -> None:
    rolling, _ = _monitored(_rolling())
    inp = rolling.build_input(KEY)
    assert inp is not None
    rolling.with_monitoring(KEY, inp)
    assert KEY not in rolling._monitoring_tasks
    plain, _ = _controller(clock=lambda: NOW)
    body = _body()
    body["status"] = {"phase": "Healthy", "stable": {"name": _desired(), "weight": 100}}
    plain.on_mdep("ADDED", body)
    inp = plain.build_input(KEY)
    assert inp is not None
    plain.with_monitoring(KEY, inp)
    assert KEY not in plain._monitoring_tasks


def test_a_monitored_model_keeps_its_baselines_and_deleting_it_drops_them(
    provider: FakeProvider,
) -> None:
    controller, _ = _monitored()
    asyncio.run(controller.reconcile_key(KEY))
    assert ("forget", KEY) not in provider.calls  # the window's baseline must survive
    controller._monitoring_runs[KEY] = object()  # type: ignore[assignment]
    controller.on_mdep("DELETED", _body())
    assert ("forget", KEY) in provider.calls
    assert KEY not in controller._monitoring_runs
