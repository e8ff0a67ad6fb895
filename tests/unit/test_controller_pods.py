"""The controller's pod cache: serving pods reach the revision observation, and only a change
in what they say about failing to start queues a reconcile. No cluster, no event loop."""

from __future__ import annotations

from typing import Any, cast

from canarium.controller import Controller
from canarium.kube import Kube
from canarium.render import render_revision, revision_hash

from tests.unit.operator_fixtures import SETTINGS, crashloop_pod, mdep, name_of, pod

KEY = ("ml", "iris")


def _controller() -> tuple[Controller, str]:
    controller = Controller(cast(Kube, object()), SETTINGS)
    obj = mdep()
    body = obj.model_dump(by_alias=True, mode="json")
    controller.on_mdep("ADDED", body)
    deployment: dict[str, Any] = render_revision(
        obj,
        revision_hash(obj.spec),
        spec=obj.spec,
        replicas=3,
        role="stable",
        created_as="stable",
        settings=SETTINGS,
    )
    deployment["metadata"]["resourceVersion"] = "11"
    deployment["status"] = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 0}
    controller.on_child("ADDED", deployment)
    controller._queued.clear()
    return controller, name_of(obj)


def _queued(controller: Controller) -> bool:
    queued = KEY in controller._queued
    controller._queued.clear()
    return queued


def _with_version(body: dict[str, Any], version: str) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "resourceVersion": version}}


def test_failing_pods_reach_the_observation_and_queue_a_reconcile() -> None:
    controller, rev = _controller()
    starting = _with_version(pod(rev), "100")
    controller.on_pod("ADDED", starting)
    assert not _queued(controller), "a starting pod says nothing new"
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.revisions[rev].failure is None

    controller.on_pod("MODIFIED", _with_version(crashloop_pod(rev, restarts=2), "101"))
    assert _queued(controller)
    inp = controller.build_input(KEY)
    assert inp is not None
    observation = inp.revisions[rev]
    assert observation.failed
    assert observation.failure is not None
    assert observation.failure.cause == "ModelLoadFailed"
    assert observation.failure.pod == f"{rev}-7c9d8b6f4-x2x9q"
    assert observation.failure.restart_count == 2

    # Nothing new about failing (another status write of the same state): no reconcile.
    controller.on_pod("MODIFIED", _with_version(crashloop_pod(rev, restarts=2), "102"))
    assert not _queued(controller)
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.revisions[rev].failure is not None

    controller.on_pod("DELETED", _with_version(crashloop_pod(rev, restarts=2), "103"))
    assert _queued(controller), "the failing pod is gone"
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.revisions[rev].failure is None


def test_pods_of_other_revisions_and_unmanaged_pods_do_not_count() -> None:
    controller, rev = _controller()
    other = crashloop_pod("iris-0123456789")
    controller.on_pod("ADDED", other)
    unmanaged = crashloop_pod(rev, "zzzzz")
    del unmanaged["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    controller.on_pod("ADDED", unmanaged)
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.revisions[rev].failure is None
    assert f"{rev}-7c9d8b6f4-zzzzz" not in controller.pods.get(KEY, {})


def test_deleting_the_model_deployment_forgets_its_pods() -> None:
    controller, rev = _controller()
    controller.on_pod("ADDED", crashloop_pod(rev))
    assert controller.pods[KEY]
    body = mdep().model_dump(by_alias=True, mode="json")
    controller.on_mdep("DELETED", body)
    assert KEY not in controller.pods


def test_the_operator_watches_only_its_own_serving_pods() -> None:
    import canarium.handlers
    import kopf

    handlers = [
        h
        for h in kopf.get_default_registry()._watching.get_all_handlers()
        if (h.selector.plural or h.selector.any_name) == "pods"
    ]
    assert len(handlers) == 1
    assert handlers[0].fn is canarium.handlers.pod_event
    assert handlers[0].labels == {"app.kubernetes.io/managed-by": "canarium"}
