"""The controller: watch caches, a work queue, and the executor of reconcile plans.

kopf delivers watch events (canarium.handlers); they update the caches here and queue the key
of the ModelDeployment they concern. Workers take keys one at a time per key (a key queued
while it is being reconciled runs again afterwards), build the pure reconcile input from the
caches, and carry out the plan. Nothing runs for an object that has no event and no timer: an
idle cluster of a thousand models costs no CPU.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from canarium import metrics
from canarium.analysis import AnalysisTarget, MeasuredWindow, monitoring, unanswered
from canarium.analysis.monitoring import MonitoringWindow
from canarium.analysis.providers import ProviderContext, ProviderRegistry
from canarium.analysis.recording import (
    RECORDING_KEY,
    Recording,
    Traffic,
    appended,
    fitted,
    recording_name,
    window_to_record,
)
from canarium.api import (
    AnalysisSpec,
    MetricsProvider,
    ModelDeployment,
    RetrainedStatus,
    RolloutPolicySpec,
)
from canarium.events import EventRecorder
from canarium.kube import Kube, KubeError, NotLeader, ObjectRef, merge_patch
from canarium.leader import LeaderElector
from canarium.pods import pod_failure
from canarium.reconcile import (
    ChildRef,
    Plan,
    ReconcileInput,
    monitored_revision,
    observe_deployment,
    policy_status,
    reconcile,
    rollout_input,
)
from canarium.render import (
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_REVISION,
    MANAGER,
    hash_of_revision,
    object_metadata,
)
from canarium.resources import CORE_CHILDREN
from canarium.retraining import with_model
from canarium.retraining_controller import RetrainingController
from canarium.rollout import Event, analysis_due
from canarium.routers import ROUTER_RESOURCES
from canarium.settings import Settings

log = logging.getLogger("canarium.controller")

Key = tuple[str, str]  # (namespace, name) of a ModelDeployment
ANNOTATION_APPLIED = "canarium.dev/applied-hash"
MDEP = ("canarium.dev/v1alpha1", "ModelDeployment")
POLICY = ("canarium.dev/v1alpha1", "RolloutPolicy")
# What the operator makes: the revisions, their autoscalers, the Services, and whatever the
# traffic routers make (an HTTPRoute exists only where the Gateway API is installed).
CHILD_KINDS = tuple(
    (resource.api_version, resource.kind) for resource in (*CORE_CHILDREN, *ROUTER_RESOURCES)
)
MAX_BACKOFF = 300.0
MEASURING_REQUEUE = 1.0  # seconds: the soonest look again while an interval is measured


@dataclass(frozen=True)
class DueAnalysis:
    """An analysis interval to measure: the policy's analysis, what it compares, and whether
    it is the first snapshot of a window (a baseline) or a window to judge."""

    analysis: AnalysisSpec
    target: AnalysisTarget
    first: bool


def _exit_lost() -> None:
    log.critical("lost the leader Lease: exiting, to come back as a standby")
    logging.shutdown()
    os._exit(1)


def api_threads(workers: int) -> int:
    """Threads for API calls (the kubernetes client blocks): room for every worker's concurrent
    applies. The client's connection pool is as large, so that no thread opens a connection
    (a TLS handshake) that the pool then discards."""
    return max(16, 4 * workers)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class KeyQueue:
    """The work queue, in two lanes: keys this process reconciled before, then keys it never
    did (a first pass: the children to make). A pass of the first kind is cheap and usually
    finishes what someone waits for (a Ready status, the next step); under a burst of new
    ModelDeployments it is not queued behind the first pass over all of them, so they become
    Ready steadily, not in a burst at the end. No lane starves the other: when both wait, one
    get in FIRST_PASS_SHARE takes a first pass. Its depth, adds and wait are metrics
    (`canarium_workqueue_*{name=...}`)."""

    FIRST_PASS_SHARE = 4

    def __init__(self, name: str = "modeldeployments") -> None:
        self._seen: deque[tuple[Key, float]] = deque()
        self._first: deque[tuple[Key, float]] = deque()
        self._items = asyncio.Semaphore(0)
        self._gets = 0
        self._adds = metrics.QUEUE_ADDS.labels(name)
        self._waits = metrics.QUEUE_SECONDS.labels(name)
        metrics.QUEUE_DEPTH.labels(name).set_function(self.qsize)

    def put_nowait(self, key: Key, *, seen: bool) -> None:
        (self._seen if seen else self._first).append((key, time.monotonic()))
        self._adds.inc()
        self._items.release()

    async def get(self) -> Key:
        await self._items.acquire()
        self._gets += 1
        if self._first and (not self._seen or self._gets % self.FIRST_PASS_SHARE == 0):
            key, since = self._first.popleft()
        else:
            key, since = self._seen.popleft()
        self._waits.observe(time.monotonic() - since)
        return key

    def qsize(self) -> int:
        return len(self._seen) + len(self._first)

    def empty(self) -> bool:
        return not self.qsize()


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """A cached copy keeping, of managedFields (most of an object's bytes), only the entries
    of other field managers on the main resource: `contested` reads them."""
    body = copy.deepcopy(body)
    meta = body.get("metadata", {})
    meta["managedFields"] = [
        entry
        for entry in meta.get("managedFields") or []
        if entry.get("manager") != MANAGER and entry.get("subresource", "") in ("", "scale")
    ]
    return body


def _slim_pod(body: dict[str, Any]) -> dict[str, Any]:
    """What the controller keeps of a serving pod: what says whether it starts."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "labels", "resourceVersion", "deletionTimestamp")
            if key in meta
        },
        "status": {
            key: copy.deepcopy(status[key])
            for key in ("phase", "conditions", "containerStatuses")
            if key in status
        },
    }


def _owns_any(fields: dict[str, Any], manifest: Any) -> bool:
    """Whether a managedFields fieldsV1 set holds any field that `manifest` sets."""
    for key, sub in fields.items():
        if key == ".":
            continue  # owns only the node's presence; conflicts are on leaves
        if key.startswith("f:"):
            if not isinstance(manifest, dict) or key[2:] not in manifest:
                continue
            value = manifest[key[2:]]
            if not sub or _owns_any(sub, value):
                return True
        elif isinstance(manifest, list) and manifest:
            # k:{...} / v:... / i:N entries of a list we set: compare item by item would need
            # the list's merge keys; any claim inside a list we set counts.
            return True
    return False


def contested(observed: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """Whether another field manager (kubectl edit/patch, a GitOps tool) has taken any field
    the operator sets, so the operator must apply again to take it back."""
    return any(
        _owns_any(entry.get("fieldsV1") or {}, manifest)
        for entry in observed.get("metadata", {}).get("managedFields") or []
    )


def _version_of(body: dict[str, Any] | None) -> str | None:
    version = ((body or {}).get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


Ref = tuple[str, ...]


class OwnWrites:
    """Which watch events of an object predate this operator's own last write of it.

    resourceVersion is opaque (compared for equality only), and a watch delivers an object's
    changes in order. A write's answer carries the object's version at that moment: if the watch
    already delivered that version, the answer is old news (newer events may be cached already)
    and is dropped; otherwise, until the watch brings that version back, any other event of the
    object is older than the write and would only roll the cache back. A listing (a restarted
    watch) or a deletion is always taken, and a write the watch never echoes is given up after
    `wait` seconds, so that nothing can hide an object's events for long."""

    SEEN = 8  # the last versions remembered per object: a write answers with a recent one

    def __init__(self, wait: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait = wait
        self.clock = clock
        self._pending: dict[Ref, tuple[str, float]] = {}
        self._seen: dict[Ref, deque[str]] = {}

    def wrote(self, ref: Ref, body: dict[str, Any]) -> bool:
        """This operator wrote an object (`body`: the API server's answer). False: the watch
        delivered that version already, so the answer must not replace the cache."""
        version = _version_of(body)
        if version is None:
            return True
        if version in self._seen.get(ref, ()):
            return False
        self._pending[ref] = (version, self.clock())
        return True

    def delivered(self, ref: Ref, event_type: str | None, body: dict[str, Any]) -> bool:
        """A watch event of the object. False: it predates this operator's own write."""
        if event_type == "DELETED":
            self._pending.pop(ref, None)
            self._seen.pop(ref, None)
            return True
        version = _version_of(body)
        if version is not None:
            self._seen.setdefault(ref, deque(maxlen=self.SEEN)).append(version)
        pending = self._pending.get(ref)
        if pending is None:
            return True
        if event_type is None or version == pending[0] or self.clock() - pending[1] > self.wait:
            del self._pending[ref]
            return True
        return False

    def forget(self, prefix: Ref) -> None:
        for table in (self._pending, self._seen):
            for ref in [ref for ref in table if ref[: len(prefix)] == prefix]:
                del table[ref]


def manifest_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def covers(observed: Any, desired: Any) -> bool:
    """Whether `observed` already holds every field of `desired` (server defaults may add
    more). Quantities and ports may come back normalised; a mismatch only costs an apply."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            k in observed and covers(observed[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(covers(o, d) for o, d in zip(observed, desired, strict=True))
        )
    return bool(observed == desired)


class Controller:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        namespaces: list[str] | None = None,
        workers: int = 8,
        clock: Callable[[], datetime] = utcnow,
        elector: LeaderElector | None = None,
    ) -> None:
        self.kube = kube
        # With leader election the caches stay warm while this replica waits: it reconciles
        # only while it holds the Lease, and writes nothing otherwise (the fence).
        self.elector = elector
        if elector is not None:
            kube.fence = elector.fence
        self.settings = settings
        self.namespaces = namespaces  # None: all namespaces
        self.worker_count = workers
        self.clock = clock
        self.mdeps: dict[Key, dict[str, Any]] = {}
        self.policies: dict[Key, dict[str, Any]] = {}
        # children[kind][owner key][name] = body
        self.children: dict[str, dict[Key, dict[str, dict[str, Any]]]] = {
            kind: defaultdict(dict) for _, kind in CHILD_KINDS
        }
        self._queue = KeyQueue()
        self._queued: set[Key] = set()
        self._reconciled: set[Key] = set()  # by this process, at least once: the queue's lanes
        self._active: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = defaultdict(int)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()
        self.providers = ProviderRegistry(ProviderContext(kube, settings.pod_scrape))
        self.own_writes = OwnWrites()
        # Analysis intervals are measured in tasks of their own, a few at a time, and their
        # runs wait here for the next reconcile of their ModelDeployment.
        self._analysis_tasks: dict[Key, asyncio.Task[None]] = {}
        self._analysis_runs: dict[Key, tuple[DueAnalysis, MeasuredWindow]] = {}
        self._analysis_slots = asyncio.Semaphore(settings.analysis_concurrency)
        # Monitoring windows of stable revisions (spec.monitoring), measured the same way.
        self._monitoring_tasks: dict[Key, asyncio.Task[None]] = {}
        self._monitoring_runs: dict[Key, MonitoringWindow] = {}
        # pods[owner key][pod name] = slim pod: the serving pods, for why a revision does not
        # start (their container statuses).
        self.pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        # RolloutPolicy status writes (their Ready/Stalled conditions), each in a task: watch
        # events arrive on kopf's handler threads, so they are started through the loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._policy_writes: dict[Key, asyncio.Task[None]] = {}
        # ModelRetrainings: their own queue; they read the ModelDeployment cache, and a
        # ModelDeployment reads its candidate from theirs.
        self.events = EventRecorder(kube)
        self.retraining = RetrainingController(kube, self.events, self.mdeps, self.enqueue, clock)
        self._leading: asyncio.Task[None] | None = None
        # What happens when the Lease is lost: the process ends (client-go's convention).
        self.on_leadership_lost: Callable[[], None] = _exit_lost

    # --- watch events ------------------------------------------------------------------------
    def on_mdep(self, event_type: str | None, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            self.mdeps.pop(key, None)
            self._forget(key)
            metrics.forget(key)
            self.retraining.on_mdep(key)
            return
        if not self.own_writes.delivered(("ModelDeployment", *key), event_type, body):
            return  # an event older than what this operator itself wrote
        self.mdeps[key] = _slim(body)
        self.enqueue(key)
        self.retraining.on_mdep(key)

    def on_child(
        self, event_type: str | None, body: dict[str, Any], *, own_write: bool = False
    ) -> None:
        """A child changed (a watch event), or this operator wrote it (`own_write`: cached
        before its watch event arrives, and no reconcile for it)."""
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGER or LABEL_DEPLOYMENT not in labels:
            return
        key = (meta["namespace"], labels[LABEL_DEPLOYMENT])
        by_owner = self.children[body["kind"]][key]
        ref = ("child", *key, body["kind"], meta["name"])
        if own_write:
            if not self.own_writes.wrote(ref, body):
                return  # the watch brought this version (or a newer one) already
        elif not self.own_writes.delivered(ref, event_type, body):
            return  # older than what this operator itself wrote
        if event_type == "DELETED":
            by_owner.pop(meta["name"], None)
        else:
            by_owner[meta["name"]] = _slim(body)
        if not own_write:
            self.enqueue(key)

    def on_pod(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A serving pod changed. Its ModelDeployment is reconciled only when what the pod
        says about failing to start changes (readiness reaches it through the Deployment)."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGER or LABEL_DEPLOYMENT not in labels:
            return
        key = (meta["namespace"], labels[LABEL_DEPLOYMENT])
        by_owner = self.pods[key]
        cached = by_owner.get(meta["name"])
        if event_type == "DELETED":
            by_owner.pop(meta["name"], None)
            if not by_owner:
                self.pods.pop(key, None)
            changed = cached is not None and pod_failure(cached) is not None
        else:
            slim = _slim_pod(body)
            by_owner[meta["name"]] = slim
            before = pod_failure(cached) if cached is not None else None
            changed = pod_failure(slim) != before
        if changed and key in self.mdeps:
            self.enqueue(key)

    def pods_of(self, key: Key, rev_hash: str) -> list[dict[str, Any]]:
        """The cached pods of one revision of a ModelDeployment."""
        return [
            pod
            for pod in self.pods.get(key, {}).values()
            if (pod["metadata"].get("labels") or {}).get(LABEL_REVISION) == rev_hash
        ]

    def on_policy(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.policies.pop(key, None)
        else:
            self.policies[key] = _slim(body)
            if self._loop is not None and self._policy_status_patch(key) is not None:
                self._loop.call_soon_threadsafe(self._write_policy_status_soon, key)
        for mdep_key, mdep in self.mdeps.items():
            ref = ((mdep.get("spec") or {}).get("rollout") or {}).get("policyRef") or {}
            if mdep_key[0] == key[0] and ref.get("name") == key[1]:
                self.enqueue(mdep_key)

    def _policy_status_patch(self, key: Key) -> dict[str, Any] | None:
        """The status patch a cached RolloutPolicy needs; None when its status is right."""
        body = self.policies.get(key)
        if body is None:
            return None
        patch: dict[str, Any] | None = merge_patch(
            body.get("status") or {}, policy_status(body, self.clock())
        )
        return patch

    def _write_policy_status_soon(self, key: Key) -> None:
        if key not in self._policy_writes:
            self._policy_writes[key] = asyncio.create_task(
                self.write_policy_status(key), name=f"canarium-policy-{key[0]}-{key[1]}"
            )

    async def write_policy_status(self, key: Key) -> None:
        """Patch a RolloutPolicy's status (Ready, Stalled, observedGeneration) where it is
        stale."""
        conflict = False
        try:
            body = self.policies.get(key)
            patch = self._policy_status_patch(key)
            if body is None or patch is None:
                return
            await self.kube.patch_status(
                ObjectRef(*POLICY, *key), patch, body["metadata"]["resourceVersion"]
            )
        except KubeError as exc:
            # A conflict: a newer version came meanwhile (its event found this write under
            # way), so it is tried again with that one.
            conflict = exc.status == 409
            if exc.status not in (404, 409) and not exc.namespace_gone:
                log.warning("status of RolloutPolicy %s/%s not written: %s", *key, exc)
        finally:
            self._policy_writes.pop(key, None)
        if conflict:
            asyncio.get_running_loop().call_later(0.5, self._write_policy_status_soon, key)

    # --- queue -------------------------------------------------------------------------------
    def enqueue(self, key: Key) -> None:
        if key in self._queued:
            return
        self._queued.add(key)
        if key not in self._active:  # else it is queued again when its reconcile ends
            self._queue.put_nowait(key, seen=key in self._reconciled)

    def enqueue_after(self, key: Key, delay: float) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(
            max(delay, 0.0), self._fire_timer, key
        )

    def _fire_timer(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def _forget(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        self._failures.pop(key, None)
        self._reconciled.discard(key)
        for kind in self.children.values():
            kind.pop(key, None)
        self.pods.pop(key, None)
        self.own_writes.forget(("child", *key))
        self.own_writes.forget(("ModelDeployment", *key))
        self.providers.analysis_ended(*key)
        for tasks in (self._analysis_tasks, self._monitoring_tasks):
            task = tasks.pop(key, None)
            if task is not None:
                task.cancel()
        self._analysis_runs.pop(key, None)
        self._monitoring_runs.pop(key, None)

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Prime the child caches from a LIST (so the first reconcile after a restart sees
        every existing revision), then start the workers."""
        # API calls run in threads (the kubernetes client blocks): room for every worker's
        # concurrent applies, instead of asyncio's default of a few threads.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(
                max_workers=api_threads(self.worker_count), thread_name_prefix="kube"
            )
        )
        self._loop = asyncio.get_running_loop()
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for api_version, kind in CHILD_KINDS:
            for ns in scopes:
                try:
                    items = await self.kube.list(
                        api_version, kind, ns, labels=f"{LABEL_MANAGED_BY}={MANAGER}"
                    )
                except KubeError as exc:
                    if exc.status == 404:  # e.g. the API group is not served
                        continue
                    raise
                for item in items:
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", api_version)
                    meta = item["metadata"]
                    labels = meta.get("labels") or {}
                    if LABEL_DEPLOYMENT in labels:
                        owner = (meta["namespace"], labels[LABEL_DEPLOYMENT])
                        self.children[kind][owner].setdefault(meta["name"], _slim(item))
        # The serving pods too, so that the first reconcile after a restart sees why a
        # revision does not start.
        for ns in scopes:
            for item in await self.kube.list(
                "v1", "Pod", ns, labels=f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_DEPLOYMENT}"
            ):
                meta = item["metadata"]
                owner = (meta["namespace"], (meta.get("labels") or {})[LABEL_DEPLOYMENT])
                self.pods[owner].setdefault(meta["name"], _slim_pod(item))
        await self.retraining.prime(scopes)
        if self.elector is None:
            self._begin()
        else:
            self._leading = asyncio.create_task(self._lead(), name="canarium-leader")

    async def _lead(self) -> None:
        """Wait for the Lease, reconcile while holding it, and end the process when it is
        lost: a replica that lost the Lease comes back as a standby, with fresh caches."""
        assert self.elector is not None
        await self.elector.acquire()
        self._begin()
        await self.elector.hold()
        self.on_leadership_lost()

    def _begin(self) -> None:
        """Start reconciling: the keys queued by watch events meanwhile, the RolloutPolicies'
        statuses, and the ModelRetrainings."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"canarium-worker-{i}")
            for i in range(self.worker_count)
        ]
        for key in list(self.mdeps):
            self.enqueue(key)
        for key in list(self.policies):
            if self._policy_status_patch(key) is not None:
                self._write_policy_status_soon(key)
        self.retraining.begin()
        metrics.LEADER.set(1)
        self._started.set()
        log.info("controller started with %d workers", self.worker_count)

    async def stop(self) -> None:
        if self._leading is not None:
            self._leading.cancel()
            await asyncio.gather(self._leading, return_exceptions=True)
        await self.retraining.stop()
        tasks = [*self._tasks, *self._analysis_tasks.values(), *self._policy_writes.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.events.stop()
        for timer in self._timers.values():
            timer.cancel()
        if self.elector is not None:
            await self.elector.release()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self.reconcile_key(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except NotLeader:
                # The Lease is lost and the process ends: the new leader reconciles it.
                log.warning("%s/%s not reconciled: this replica lost the leader Lease", *key)
            except KubeError as exc:
                if exc.namespace_gone or key not in self.mdeps:
                    # Its namespace or itself was deleted meanwhile: nothing left to converge.
                    log.debug("%s/%s is being deleted: %s", *key, exc)
                    self._failures.pop(key, None)
                    continue
                self._retry(key, exc)
            except Exception as exc:
                self._retry(key, exc)
            finally:
                self._active.discard(key)
                if key in self.mdeps:
                    self._reconciled.add(key)
                if key in self._queued:
                    self._queue.put_nowait(key, seen=key in self._reconciled)

    def _retry(self, key: Key, exc: Exception) -> None:
        if isinstance(exc, KubeError) and exc.status == 409:
            # A conflict is a stale read, not a failure: retried soon, never backed off.
            log.debug("conflict on %s/%s, retrying: %s", *key, exc)
            self.enqueue_after(key, 0.2)
            return
        failures = self._failures[key] = self._failures[key] + 1
        delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 10))
        log.error("reconcile of %s/%s failed; retry in %.1fs", *key, delay, exc_info=exc)
        metrics.RECONCILE_ERRORS.labels("ModelDeployment").inc()
        self.enqueue_after(key, delay)

    # --- reconcile ---------------------------------------------------------------------------
    def _policy_for(self, mdep: ModelDeployment) -> tuple[RolloutPolicySpec | None, str | None]:
        rollout = mdep.spec.rollout
        if rollout is None:
            return None, None
        if rollout.policy is not None:
            return rollout.policy, None
        if rollout.policy_ref is None:
            return None, None
        ref = (mdep.metadata.namespace, rollout.policy_ref.name)
        body = self.policies.get(ref)
        if body is None:
            return None, f"RolloutPolicy {rollout.policy_ref.name!r} not found"
        try:
            return RolloutPolicySpec.model_validate(body.get("spec") or {}), None
        except ValidationError as exc:
            return None, f"RolloutPolicy {rollout.policy_ref.name!r} is invalid: {exc}"

    def build_input(self, key: Key) -> ReconcileInput | None:
        body = self.mdeps.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        mdep = ModelDeployment.model_validate(body)
        retrained = None
        candidate = self.retraining.candidate(mdep)
        if candidate is not None:
            # Served in place of spec.model: the rollout treats it as a change of the spec.
            model, owner = candidate
            mdep = mdep.model_copy(update={"spec": with_model(mdep.spec, model)})
            assert owner.status.candidate is not None
            retrained = RetrainedStatus(
                retraining=owner.metadata.name,
                run=owner.status.candidate.run,
                model_version=model.version,
                model_uri=model.uri,
                replaces_version=owner.status.candidate.replaces.version,
            )
        policy, policy_error = self._policy_for(mdep)
        revisions = {
            name: observe_deployment(
                dep,
                self.pods_of(key, (dep["metadata"].get("labels") or {}).get(LABEL_REVISION, "")),
            )
            for name, dep in self.children["Deployment"].get(key, {}).items()
        }
        hpas = frozenset(self.children["HorizontalPodAutoscaler"].get(key, {}))
        routed = frozenset(
            ChildRef(resource.api_version, resource.kind, name)
            for resource in ROUTER_RESOURCES
            for name in self.children[resource.kind].get(key, {})
        )
        return ReconcileInput(
            mdep=mdep,
            revisions=revisions,
            hpas=hpas,
            routed=routed,
            now=self.clock(),
            settings=self.settings,
            policy=policy,
            policy_error=policy_error,
            retrained=retrained,
        )

    def due_analysis(self, key: Key, inp: ReconcileInput) -> DueAnalysis | None:
        """The analysis interval to measure now, if one is due (the state machine decides
        when, purely)."""
        r_inp = rollout_input(inp)
        analysis = inp.policy.analysis if inp.policy else None
        if analysis is None or not analysis_due(r_inp):
            return None
        status = inp.mdep.status
        name = inp.mdep.metadata.name
        if status.stable is None or not status.stable.name:
            return None  # analysis_due checked it; for the type checker
        stable: str | None
        if status.canary is not None and status.canary.name == r_inp.desired:
            canary, stable = status.canary.name, status.stable.name
        else:  # the bake of a promoted revision, compared with the one it replaced
            canary = status.stable.name
            stable = status.previous.name if status.previous and status.previous.name else None
        target = AnalysisTarget(
            namespace=key[0],
            deployment=name,
            canary_revision_hash=hash_of_revision(name, canary),
            stable_revision_hash=hash_of_revision(name, stable) if stable else None,
            canary_revision_name=canary,
            stable_revision_name=stable,
            interval_seconds=analysis.interval_seconds,
        )
        first = status.analysis is None or status.analysis.last_run_time is None
        return DueAnalysis(analysis, target, first)

    async def measure(self, key: Key, due: DueAnalysis) -> MeasuredWindow:
        """One analysis interval: the first snapshot of a window (a baseline), or the window
        that just ended measured (reconcile judges it with the evidence in status)."""
        provider = self.providers.provider_for(due.analysis.provider)
        now = self.clock()
        if due.first:
            await provider.baseline(due.target)  # the first window starts now
            return MeasuredWindow(now, None)
        result = await provider.measure(due.target)
        custom = (
            await provider.custom_values(due.analysis, due.target)
            if provider.runs_custom_checks
            else None
        )
        if result.errors:
            log.warning("analysis of %s/%s: %s", *key, "; ".join(result.errors))
        return MeasuredWindow(now, result, custom)

    async def analyse(self, key: Key, inp: ReconcileInput) -> ReconcileInput:
        """Measure one analysis interval now when one is due; the window goes into the
        reconcile input."""
        due = self.due_analysis(key, inp)
        if due is None:
            return inp
        window = await self.measure(key, due)
        return replace(inp, now=window.time, analysis_window=window)

    def with_analysis(self, key: Key, inp: ReconcileInput) -> ReconcileInput:
        """The reconcile input with the interval measured since the last reconcile, if it
        still applies; an interval that is due starts measuring in its own task, so that a
        slow metrics provider never holds up a reconcile worker (the finished run queues the
        ModelDeployment again)."""
        due = self.due_analysis(key, inp)
        finished = self._analysis_runs.get(key)
        if due is not None and finished is not None and finished[0] == due:
            # Kept until its judgement is written (consumed()): a reconcile that fails to
            # write the status judges the same window again, never a re-measured one.
            return replace(inp, analysis_window=finished[1])
        self._analysis_runs.pop(key, None)  # for an interval that no longer applies
        if due is None:
            return inp
        if key not in self._analysis_tasks:
            self._analysis_tasks[key] = asyncio.create_task(
                self._analysis_task(key, due), name=f"canarium-analysis-{key[0]}-{key[1]}"
            )
        return inp

    async def _analysis_task(self, key: Key, due: DueAnalysis) -> None:
        timeout = self.settings.analysis_timeout_seconds
        try:
            async with self._analysis_slots:
                window: MeasuredWindow | None = await asyncio.wait_for(
                    self.measure(key, due), timeout=timeout
                )
        except TimeoutError:
            log.warning("analysis of %s/%s: no answer within %.0fs", *key, timeout)
            # A window that did not start is tried again; a window whose numbers did not come
            # is no data, which holds the rollout and never fails it.
            window = None if due.first else unanswered(self.clock(), timeout)
        except Exception:
            log.exception("analysis of %s/%s failed", *key)
            window = None
        finally:
            self._analysis_tasks.pop(key, None)
        if window is not None and key in self.mdeps:
            self._analysis_runs[key] = (due, window)
            self.enqueue(key)

    def with_monitoring(self, key: Key, inp: ReconcileInput) -> ReconcileInput:
        """The reconcile input with the stable revision's window measured since the last
        reconcile; a window that is due starts measuring in its own task (spec.monitoring)."""
        spec = inp.mdep.spec.monitoring
        finished = self._monitoring_runs.get(key)
        revision = monitored_revision(inp.mdep.status)
        if spec is not None and finished is not None and finished.revision == revision:
            return replace(inp, monitoring_window=finished)  # kept until consumed()
        self._monitoring_runs.pop(key, None)
        if spec is None or revision is None:
            return inp
        action, _ = monitoring.due(spec, inp.mdep.status.monitoring, revision, inp.now)
        if action is not None and key not in self._monitoring_tasks:
            target = AnalysisTarget(
                namespace=key[0],
                deployment=key[1],
                canary_revision_hash=hash_of_revision(key[1], revision),
                stable_revision_hash=None,
                canary_revision_name=revision,
                stable_revision_name=None,
                interval_seconds=spec.interval_seconds,
            )
            self._monitoring_tasks[key] = asyncio.create_task(
                self._monitoring_task(key, spec.provider, target, action == "baseline"),
                name=f"canarium-monitoring-{key[0]}-{key[1]}",
            )
        return inp

    async def _monitoring_task(
        self, key: Key, provider_spec: MetricsProvider, target: AnalysisTarget, first: bool
    ) -> None:
        provider = self.providers.provider_for(provider_spec)
        revision = target.canary_revision_name
        window: MonitoringWindow | None = None
        try:
            async with self._analysis_slots:
                now = self.clock()
                if first:
                    await asyncio.wait_for(
                        provider.baseline(target), self.settings.analysis_timeout_seconds
                    )
                    window = MonitoringWindow(revision, now, None)
                else:
                    result = await asyncio.wait_for(
                        provider.measure(target), self.settings.analysis_timeout_seconds
                    )
                    if result.errors:
                        log.warning("monitoring of %s/%s: %s", *key, "; ".join(result.errors))
                    window = MonitoringWindow(revision, now, result.canary)
        except TimeoutError:
            log.warning("monitoring of %s/%s: no answer; the window is tried again", *key)
        except Exception:
            log.exception("monitoring of %s/%s failed", *key)
        finally:
            self._monitoring_tasks.pop(key, None)
        if window is not None and key in self.mdeps:
            self._monitoring_runs[key] = window
            self.enqueue(key)

    async def reconcile_key(self, key: Key) -> None:
        started = time.perf_counter()
        inp = self.build_input(key)
        if inp is None:
            return
        inp = self.with_analysis(key, inp)
        inp = self.with_monitoring(key, inp)
        plan = reconcile(inp)
        await self.execute(key, plan)
        self.consumed(key, inp)
        if inp.analysis_window is not None:
            self.judged(key, inp.analysis_window, plan)
            if plan.status.get("analysis"):
                await self.record_window(key, inp)
        if (
            not plan.status.get("canary")
            and not plan.status.get("previous")
            and inp.mdep.spec.monitoring is None
        ):
            # No analysis or monitoring goes on: drop what the providers kept (baselines).
            self.providers.analysis_ended(*key)
        metrics.RECONCILE_TOTAL.labels("ModelDeployment").inc()
        metrics.RECONCILE_SECONDS.labels("ModelDeployment").observe(time.perf_counter() - started)

    def consumed(self, key: Key, inp: ReconcileInput) -> None:
        """The measured windows this reconcile judged are in the status now: drop them (a
        window measured meanwhile for a later interval is kept)."""
        run = self._analysis_runs.get(key)
        if run is not None and run[1] is inp.analysis_window:
            del self._analysis_runs[key]
        if inp.monitoring_window is not None and self._monitoring_runs.get(key) is (
            inp.monitoring_window
        ):
            del self._monitoring_runs[key]

    async def record_window(self, key: Key, inp: ReconcileInput) -> None:
        """Add the judged window to the ModelDeployment's analysis recording (a ConfigMap it
        owns; `kubectl canarium recording NAME`), so a policy can be replayed on its traffic.
        A failure to record is logged; the rollout does not depend on it."""
        window = inp.analysis_window
        due = self.due_analysis(key, inp)
        if window is None or due is None:
            return
        status = inp.mdep.status
        traffic = Traffic(100.0, 100.0)  # a bake: the promoted revision takes everything
        canary = status.canary
        if canary is not None and canary.name == due.target.canary_revision_name:
            traffic = Traffic(
                float(canary.weight or 0),
                float(canary.effective_weight or 0),
                canary.replicas,
                canary.ready_replicas,
            )
        ref = ObjectRef("v1", "ConfigMap", key[0], recording_name(key[1]))
        try:
            body = await self.kube.get(ref)
            text = ((body or {}).get("data") or {}).get(RECORDING_KEY)
            old = Recording.model_validate_json(text) if text else None
            recording = appended(
                old,
                due.target.canary_revision_name,
                due.target.stable_revision_name,
                window_to_record(window, traffic),
            )
            recording.metadata.namespace, recording.metadata.name = key
            serving = inp.mdep.spec.serving
            recording.replicas = None if serving.autoscaling else serving.replicas
            await self.kube.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": object_metadata(inp.mdep, ref.name),
                    "data": {RECORDING_KEY: fitted(recording)},
                }
            )
        except (KubeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            log.warning("analysis recording of %s/%s not written: %s", *key, exc)

    def judged(self, key: Key, window: MeasuredWindow, plan: Plan) -> None:
        """Log and count an interval that reconcile judged."""
        analysis = plan.status.get("analysis") or {}
        verdict = analysis.get("lastVerdict")
        if window.result is None or verdict is None:
            return
        metrics.ANALYSIS_RUNS.labels(*key, verdict).inc()
        checks = "; ".join(
            f"{m.get('check')}: {m.get('verdict')} ({m.get('reason')})"
            for m in analysis.get("measurements", [])
        )
        log.info("analysis of %s/%s: %s: %s", *key, verdict, checks)

    async def execute(self, key: Key, plan: Plan) -> None:
        """Carry out a plan: children, status, events, and when to look again."""
        body = self.mdeps.get(key)
        if body is None:  # deleted while it was analysed: its children go with it
            return
        await self.write_children(key, plan)
        if not await self.write_status(key, body, plan.status):
            return  # deleted meanwhile: its children go with it
        metrics.observe_status(key, plan.status)
        self.record_events(key, body, plan.events)
        if plan.requeue_after is not None:
            delay = plan.requeue_after
            if key in self._analysis_tasks or key in self._monitoring_tasks:
                # The interval being measured is due: its end queues the key, and until then
                # a timer for it would only spin.
                delay = max(delay, MEASURING_REQUEUE)
            self.enqueue_after(key, delay)

    async def write_children(self, key: Key, plan: Plan) -> None:
        applies = []
        for manifest in plan.apply:
            manifest["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED] = manifest_hash(
                manifest
            )
            cached = self.children[manifest["kind"]].get(key, {}).get(manifest["metadata"]["name"])
            if cached is not None and covers(cached, manifest) and not contested(cached, manifest):
                continue  # unchanged since our last apply and nobody else took a field
            applies.append(self.kube.apply(manifest))
        for result in await asyncio.gather(*applies):
            # Our own write, cached before its watch event arrives; no reconcile for it.
            self.on_child("MODIFIED", result, own_write=True)
        for ref in plan.delete:
            await self.kube.delete(ObjectRef(ref.api_version, ref.kind, key[0], ref.name))

    async def write_status(self, key: Key, body: dict[str, Any], status: dict[str, Any]) -> bool:
        """Patch the status where it changed; False when the object is gone."""
        patch = merge_patch(body.get("status") or {}, status)
        if patch is None:
            return True
        try:
            updated = await self.kube.patch_status(
                ObjectRef(*MDEP, *key), patch, body["metadata"]["resourceVersion"]
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        if self.own_writes.wrote(("ModelDeployment", *key), updated):
            self.mdeps[key] = _slim(updated)
        self.retraining.on_mdep(key)  # its retraining reads the status (drift, outcomes)
        return True

    def record_events(self, key: Key, body: dict[str, Any], events: list[Event]) -> None:
        for event in events:
            if event.reason in ("RolledBack", "Aborted"):
                metrics.ROLLBACKS.labels(*key, event.reason).inc()
            self.events.record(body, event)
