"""The I/O side of ModelRetrainings: watch caches (ModelRetrainings, their Jobs), a queue,
and the executor of `plan_retraining`'s plans.

It sits beside the ModelDeployment controller and shares its client and its ModelDeployment
cache: a ModelDeployment's change (Drifted, a rollout's outcome) queues the ModelRetrainings
that name it, and a change of a candidate queues the ModelDeployment, whose reconcile asks
`candidate_for` which model to serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from canarium import metrics
from canarium.api import ModelDeployment, ModelSpec
from canarium.api.modelretraining import ModelRetraining
from canarium.events import EventRecorder
from canarium.kube import Kube, KubeError, NotLeader, ObjectRef, merge_patch
from canarium.render import LABEL_MANAGED_BY, MANAGER
from canarium.retraining import (
    LABEL_RETRAINING,
    JobObservation,
    JobState,
    RetrainingInput,
    candidate_for,
    plan_retraining,
)

log = logging.getLogger("canarium.retraining")

Key = tuple[str, str]  # (namespace, name)
RETRAINING = ("canarium.dev/v1alpha1", "ModelRetraining")
MDEP = ("canarium.dev/v1alpha1", "ModelDeployment")
JOB = ("batch/v1", "Job")
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"  # the Job controller puts it on its pods
MAX_BACKOFF = 300.0


def job_state(body: dict[str, Any]) -> tuple[JobState, str]:
    """A Job's state from its conditions (Complete/Failed True; SuccessCriteriaMet and
    FailureTarget come first in Kubernetes 1.31+ and mean the same), and why it failed."""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded", ""
        if condition.get("type") in ("Failed", "FailureTarget"):
            reason = condition.get("reason") or "Failed"
            message = condition.get("message") or ""
            return "Failed", f"{reason}: {message}" if message else reason
    return "Active", ""


def result_of_pods(pods: list[dict[str, Any]]) -> str | None:
    """The training result a Job's pods left in a container's termination message: the
    newest pod's that ended with one."""
    newest = sorted(
        pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True
    )
    for pod in newest:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if message and '"format"' in message:
                return str(message)
    return None


def _completion(body: dict[str, Any]) -> datetime | None:
    text = (body.get("status") or {}).get("completionTime")
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            text = text or condition.get("lastTransitionTime")
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class RetrainingController:
    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        mdeps: dict[Key, dict[str, Any]],
        enqueue_mdep: Callable[[Key], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.kube = kube
        self.events = events
        self.mdeps = mdeps  # the ModelDeployment controller's cache (read only)
        self.enqueue_mdep = enqueue_mdep
        self.clock = clock
        self.retrainings: dict[Key, dict[str, Any]] = {}
        self.jobs: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)  # by retraining
        self.results: dict[tuple[str, str], str | None] = {}  # (namespace, Job) -> result
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = defaultdict(int)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- watch events ------------------------------------------------------------------
    def on_retraining(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.retrainings.get(key)
        if event_type == "DELETED":
            self.retrainings.pop(key, None)
            self.jobs.pop(key, None)
            metrics.observe_retraining(key, None, None)
        else:
            self.retrainings[key] = body
            self._enqueue_soon(key)
        # The ModelDeployment it names reads its candidate: look again when that may change.
        for data in (old, body):
            name = ((data or {}).get("spec") or {}).get("deploymentRef", {}).get("name")
            if name and (key[0], name) in self.mdeps:
                self.enqueue_mdep((key[0], name))

    def on_job(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGER or LABEL_RETRAINING not in labels:
            return
        key = (meta["namespace"], labels[LABEL_RETRAINING])
        if event_type == "DELETED":
            self.jobs[key].pop(meta["name"], None)
            self.results.pop((meta["namespace"], meta["name"]), None)
        else:
            self.jobs[key][meta["name"]] = body
        self._enqueue_soon(key)

    def on_mdep(self, key: Key) -> None:
        """A ModelDeployment changed: the ModelRetrainings that name it look again."""
        for rkey, body in self.retrainings.items():
            if rkey[0] == key[0] and _deployment_of(body) == key[1]:
                self._enqueue_soon(rkey)

    # --- the ModelDeployment's side --------------------------------------------------------
    def owner_of(self, mdep_key: Key) -> ModelRetraining | None:
        """The ModelRetraining that retrains a ModelDeployment: the oldest naming it."""
        named = [
            body
            for rkey, body in self.retrainings.items()
            if rkey[0] == mdep_key[0] and _deployment_of(body) == mdep_key[1]
        ]
        if not named:
            return None
        named.sort(
            key=lambda b: (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"])
        )
        try:
            return ModelRetraining.model_validate(named[0])
        except ValidationError:
            return None

    def candidate(self, mdep: ModelDeployment) -> tuple[ModelSpec, ModelRetraining] | None:
        """The retrained model a ModelDeployment serves instead of spec.model, and whence."""
        owner = self.owner_of((mdep.metadata.namespace, mdep.metadata.name))
        model = candidate_for(mdep, owner)
        return None if model is None or owner is None else (model, owner)

    # --- queue -------------------------------------------------------------------------
    def _enqueue_soon(self, key: Key) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self.enqueue, key)

    def enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(delay, 0.0), self.enqueue, key)

    async def prime(self, scopes: list[str | None]) -> None:
        """Prime the caches from LISTs: a restart must not take a running Job for a gone
        one, nor a ModelDeployment for a missing one."""
        for ns in scopes:
            for item in await self.kube.list(*MDEP, ns):
                meta = item["metadata"]
                self.mdeps.setdefault((meta["namespace"], meta["name"]), item)
            for item in await self.kube.list(*RETRAINING, ns):
                item.setdefault("kind", RETRAINING[1])
                item.setdefault("apiVersion", RETRAINING[0])
                meta = item["metadata"]
                self.retrainings.setdefault((meta["namespace"], meta["name"]), item)
            for item in await self.kube.list(
                *JOB, ns, labels=f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_RETRAINING}"
            ):
                self.on_job("ADDED", item)

    def begin(self) -> None:
        """Start reconciling (the leader only): every ModelRetraining once, then by events."""
        self._loop = asyncio.get_running_loop()
        for key in list(self.retrainings):
            self.enqueue(key)
        self._task = asyncio.create_task(self._worker(), name="canarium-retraining")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self.reconcile_key(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except NotLeader:
                log.warning("retraining %s/%s not reconciled: the leader Lease is lost", *key)
            except Exception as exc:
                if isinstance(exc, KubeError) and exc.status == 409:
                    self.enqueue_after(key, 0.2)
                    continue
                if isinstance(exc, KubeError) and exc.namespace_gone:
                    continue
                failures = self._failures[key] = self._failures[key] + 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 10))
                log.error("retraining %s/%s failed; retry in %.1fs", *key, delay, exc_info=exc)
                metrics.RECONCILE_ERRORS.labels("ModelRetraining").inc()
                self.enqueue_after(key, delay)

    # --- reconcile ---------------------------------------------------------------------
    async def observe_jobs(self, key: Key) -> dict[str, JobObservation]:
        observed = {}
        for name, body in self.jobs.get(key, {}).items():
            state, message = job_state(body)
            result = None
            if state == "Succeeded":
                cache_key = (key[0], name)
                if self.results.get(cache_key) is None:
                    pods = await self.kube.list(
                        "v1", "Pod", key[0], labels=f"{LABEL_JOB_NAME}={name}"
                    )
                    self.results[cache_key] = result_of_pods(pods)
                result = self.results[cache_key]
            observed[name] = JobObservation(name, state, message, _completion(body), result)
        return observed

    async def build_input(self, key: Key) -> RetrainingInput | None:
        body = self.retrainings.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            retraining = ModelRetraining.model_validate(body)
        except ValidationError as exc:  # the CRD's schema refuses it first; an older CRD may not
            log.warning("ModelRetraining %s/%s is invalid: %s", *key, exc)
            return None
        mdep_key = (key[0], retraining.spec.deployment_ref.name)
        mdep_body = self.mdeps.get(mdep_key)
        owner = self.owner_of(mdep_key)
        return RetrainingInput(
            retraining=retraining,
            mdep=ModelDeployment.model_validate(mdep_body) if mdep_body else None,
            jobs=await self.observe_jobs(key),
            now=self.clock(),
            claimed_by=owner.metadata.name
            if owner is not None and owner.metadata.name != retraining.metadata.name
            else None,
        )

    async def reconcile_key(self, key: Key) -> None:
        inp = await self.build_input(key)
        if inp is None:
            return
        plan = plan_retraining(inp)
        # The Jobs first, then the status that records them: a conflict on the status (a newer
        # version came meanwhile) is retried, and the retry finds its Job made already (the
        # same name: the apply changes nothing).
        for manifest in plan.create:
            self.on_job("ADDED", await self.kube.apply(manifest))
        for name in plan.delete:
            await self.kube.delete(ObjectRef(*JOB, key[0], name))
        if not await self.write_status(key, plan.status):
            return
        body = self.retrainings[key]
        for event in plan.events:
            self.events.record(body, event)
        if plan.candidate_changed and inp.mdep is not None:
            self.enqueue_mdep((key[0], inp.mdep.metadata.name))
        if plan.requeue_after is not None:
            self.enqueue_after(key, plan.requeue_after)
        metrics.RECONCILE_TOTAL.labels("ModelRetraining").inc()

    async def write_status(self, key: Key, status: dict[str, Any]) -> bool:
        """Patch the status where it changed; False when the object is gone."""
        body = self.retrainings.get(key)
        if body is None:
            return False
        patch = merge_patch(body.get("status") or {}, status)
        if patch is None:
            return True
        try:
            updated = await self.kube.patch_status(
                ObjectRef(*RETRAINING, *key), patch, body["metadata"]["resourceVersion"]
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        metrics.observe_retraining(key, body.get("status"), status)
        self.retrainings[key] = updated
        return True


def _deployment_of(body: dict[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("deploymentRef") or {}
    name = ref.get("name")
    return str(name) if name else None
