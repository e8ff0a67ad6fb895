"""kopf wiring. Thin on purpose: every handler hands the raw object to the Controller.

Only raw watch events are used (`kopf.on.event`), so kopf writes nothing to the objects: no
finalizers, no progress or diff-base annotations, nothing in `status`. Desired state is derived
from the current objects each time (level-triggered), which makes a restart change nothing.
The event handlers are coroutines: kopf runs plain functions on worker threads, and the
Controller's caches and queue belong to the event loop (they only touch memory, never block).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from canarium.controller import Controller, api_threads
from canarium.kube import Kube
from canarium.leader import LeaderElector, LeaseConfig
from canarium.render import LABEL_MANAGED_BY, MANAGER
from canarium.resources import CORE_CHILDREN
from canarium.routers import ROUTER_RESOURCES
from canarium.settings import Settings

GROUP, VERSION = "canarium.dev", "v1alpha1"
MANAGED = {LABEL_MANAGED_BY: MANAGER}


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds the "essence" of every watched object at every event (a deep copy of the
    body) for the diffs of change handlers; with event handlers only, nothing reads it, and at
    thousands of children that copy was a tenth of the operator's CPU."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's progress bookkeeping, if a handler ever needs it, goes to annotations, never to
    # status; the diff base is never built (NoDiffBase).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    # Reconnect watches that go quiet (kopf #585, #1276): the server closes each watch within
    # 5 minutes, the client gives up a little later, and a stream with no event at all for
    # longer than that is restarted too.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # The handlers only update caches and queue a key: kopf's per-object worker need not wait
    # 5 s for another event before it exits, holding memory for every object of a burst
    # (bench-operator, N = 1,000: peak RSS 182 -> 171 MiB).
    settings.queueing.idle_timeout = 0.2
    # Only the children the operator made are watched (server-side label selectors).
    for _group, _version, plural in (*CHILDREN, POD, JOB):
        settings.watching.label_selectors[plural] = f"{LABEL_MANAGED_BY}={MANAGER}"

    workers = int(memo.get("workers") or 8)
    kube = Kube.from_environment(pool_size=api_threads(workers))
    lease: LeaseConfig | None = memo.get("lease")
    controller = Controller(
        kube,
        Settings.from_env(),
        namespaces=memo.get("namespaces") or None,
        workers=workers,
        elector=LeaderElector(kube, lease) if lease is not None else None,
    )
    memo["controller"] = controller
    await controller.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()


def _controller(memo: kopf.Memo) -> Controller:
    controller: Controller = memo["controller"]
    return controller


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def modeldeployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).on_mdep(event["type"], dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "rolloutpolicies")
async def rolloutpolicy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).on_policy(event["type"], dict(event["object"]))


@kopf.on.event(GROUP, VERSION, "modelretrainings")
async def modelretraining_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).retraining.on_retraining(event["type"], dict(event["object"]))


# Retraining runs: the Jobs the operator makes for ModelRetrainings.
JOB = ("batch", "v1", "jobs")


@kopf.on.event(*JOB, labels=MANAGED, id="jobs-event")
async def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).retraining.on_job(event["type"], dict(event["object"]))


# The children the operator makes: every event of one goes to its ModelDeployment.
CHILDREN = tuple(
    (resource.group, resource.version, resource.plural)
    for resource in (*CORE_CHILDREN, *ROUTER_RESOURCES)  # an HTTPRoute: where the API is installed
)


async def child_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).on_child(event["type"], dict(event["object"]))


for _group, _version, _plural in CHILDREN:
    kopf.on.event(_group, _version, _plural, labels=MANAGED, id=f"{_plural}-event")(child_event)


# The serving pods (they carry the revision's labels): why a revision does not start.
POD = ("", "v1", "pods")


@kopf.on.event(*POD, labels=MANAGED, id="pods-event")
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _controller(memo).on_pod(event["type"], dict(event["object"]))
