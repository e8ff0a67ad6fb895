from __future__ import annotations

from datetime import timedelta

from canarium.api import ModelDeployment
from canarium.reconcile import ChildRef, effective_weights, reconcile

from tests.unit.operator_fixtures import (
    NOW,
    crashloop_pod,
    inp,
    mdep,
    name_of,
    observed,
    pod,
    waiting_pod,
)


def kinds(plan_apply: list[dict]) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(m["kind"], m["metadata"]["name"]) for m in plan_apply]


def with_status(obj: ModelDeployment, status: dict) -> ModelDeployment:  # type: ignore[type-arg]
    data = obj.model_dump(by_alias=True, mode="json")
    data["status"] = status
    return ModelDeployment.model_validate(data)


def test_first_reconcile_creates_the_revision_and_services() -> None:
    obj = mdep()
    plan = reconcile(inp(obj))
    rev = name_of(obj)
    assert kinds(plan.apply) == [
        ("Deployment", rev),
        ("Service", "iris"),
        ("Service", "iris-stable"),
        ("Service", "iris-canary"),
    ]
    assert plan.delete == []
    assert plan.status["phase"] == "Progressing"
    assert plan.status["stable"]["name"] == rev
    assert plan.status["ready"] == "0/3"
    ready = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert ready == {"Ready": "False", "Progressing": "True", "Degraded": "False"}


def test_ready_revision_makes_it_healthy_and_ready() -> None:
    obj = mdep()
    first = reconcile(inp(obj))
    obj = with_status(obj, first.status)
    plan = reconcile(inp(obj, observed(obj)))
    assert plan.status["phase"] == "Healthy"
    assert plan.status["ready"] == "3/3"
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 1
    assert plan.status["observedGeneration"] == 1
    assert plan.status["endpoint"] == "http://iris.ml.svc:80/v2/models/iris"


def test_reconcile_is_idempotent() -> None:
    obj = mdep()
    obj = with_status(obj, reconcile(inp(obj)).status)
    once = reconcile(inp(obj, observed(obj)))
    obj = with_status(obj, once.status)
    twice = reconcile(inp(obj, observed(obj), now=NOW + timedelta(minutes=5)))
    assert twice.status == once.status  # transition times do not move without a transition
    assert twice.apply == once.apply
    assert twice.events == []


def test_new_version_runs_beside_the_old_until_ready_then_replaces_it() -> None:
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1))).status)
    old = observed(v1)
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    new_rev = name_of(v2)

    # Not ready yet: both revisions are applied, nothing deleted, old keeps serving.
    plan = reconcile(inp(v2, old, observed(v2, ready=1)))
    assert kinds(plan.apply)[:2] == [("Deployment", old.name), ("Deployment", new_rev)]
    old_manifest = plan.apply[0]
    assert old_manifest["metadata"]["annotations"]["canarium.dev/model-version"] == "1.0.0"
    assert plan.delete == []
    assert plan.status["phase"] == "Progressing"
    assert plan.status["stable"]["name"] == old.name
    assert plan.status["canary"]["name"] == new_rev
    assert plan.status["stable"]["effectiveWeight"] == 75.0
    assert plan.status["canary"]["effectiveWeight"] == 25.0

    # Ready: the new revision becomes stable and the old one is deleted in the same plan.
    v2 = with_status(v2, plan.status)
    plan = reconcile(inp(v2, old, observed(v2)))
    assert plan.status["stable"]["name"] == new_rev
    assert "canary" not in plan.status
    assert plan.status["phase"] == "Healthy"
    assert ChildRef("apps/v1", "Deployment", old.name) in plan.delete
    assert plan.events[0].reason == "Replaced"
    assert plan.status["history"][0]["outcome"] == "Replaced"
    assert plan.status["history"][0]["revision"] == old.name
    assert plan.status["history"][0]["modelVersion"] == "1.0.0"


def test_a_newer_version_replaces_an_unfinished_one() -> None:
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1))).status)
    v2 = mdep("2.0.0", generation=2)
    v3 = with_status(mdep("3.0.0", generation=3), v1.status.to_dict())
    plan = reconcile(inp(v3, observed(v1), observed(v2, ready=0)))
    assert ChildRef("apps/v1", "Deployment", name_of(v2)) in plan.delete
    assert plan.status["canary"]["name"] == name_of(v3)
    assert plan.status["stable"]["name"] == name_of(v1)


def test_reverting_to_the_stable_version_drops_the_new_revision() -> None:
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1))).status)
    v2 = mdep("2.0.0", generation=2)
    back = with_status(mdep("1.0.0", generation=3), v1.status.to_dict())
    plan = reconcile(inp(back, observed(v1), observed(v2, ready=0)))
    assert plan.delete == [ChildRef("apps/v1", "Deployment", name_of(v2))]
    assert plan.status["phase"] == "Healthy"
    assert "canary" not in plan.status


def test_a_revision_that_never_gets_ready_is_degraded_and_traffic_stays() -> None:
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1))).status)
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=0, deadline=True)))
    assert plan.status["phase"] == "Degraded"
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert conditions["Ready"]["status"] == "False"
    assert plan.status["stable"]["name"] == name_of(v1)
    assert plan.status["stable"]["effectiveWeight"] == 100.0
    assert plan.delete == []
    assert any(e.type == "Warning" for e in plan.events)


def test_a_deleted_child_is_applied_again() -> None:
    obj = mdep()
    obj = with_status(obj, reconcile(inp(obj, observed(obj))).status)
    plan = reconcile(inp(obj))  # its Deployment is gone from the cluster
    assert ("Deployment", name_of(obj)) in kinds(plan.apply)
    assert plan.status["stable"]["name"] == name_of(obj)


def test_autoscaling_renders_an_hpa_and_dropping_it_deletes_the_hpa() -> None:
    scaled = mdep(serving={"autoscaling": {"minReplicas": 2, "maxReplicas": 5}})
    plan = reconcile(inp(scaled))
    assert ("HorizontalPodAutoscaler", name_of(scaled)) in kinds(plan.apply)
    plain = mdep()
    plan = reconcile(inp(plain, hpas=frozenset({name_of(plain)})))
    assert ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", name_of(plain)) in plan.delete


def test_effective_weights_follow_ready_pods() -> None:
    assert effective_weights(3, 1) == (75.0, 25.0)
    assert effective_weights(2, 1) == (66.67, 33.33)
    assert effective_weights(0, 0) == (0.0, 0.0)
    assert effective_weights(0, 2) == (0.0, 100.0)


def test_contested_fields_are_those_another_manager_owns_among_ours() -> None:
    from canarium.controller import contested

    manifest = {
        "metadata": {"annotations": {"canarium.dev/applied-hash": "x"}},
        "spec": {"selector": {"canarium.dev/deployment": "iris"}, "ports": [{"port": 80}]},
    }

    def observed_with(fields: dict) -> dict:  # type: ignore[type-arg]
        return {"metadata": {"managedFields": [{"manager": "kubectl-patch", "fieldsV1": fields}]}}

    # The Deployment controller's revision annotation: not one of ours.
    controller_annotation = {
        "f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}
    }
    assert not contested(observed_with(controller_annotation), manifest)
    # A hand edit of the atomic selector map: ours.
    assert contested(observed_with({"f:spec": {"f:selector": {}}}), manifest)
    # A claim inside a list the operator sets.
    assert contested(observed_with({"f:spec": {"f:ports": {'k:{"port":80}': {}}}}), manifest)
    assert not contested({"metadata": {}}, manifest)


# --- Pods that fail to start, without a rollout policy ---------------------------------------
def test_a_new_revision_whose_model_does_not_load_is_degraded_at_once_and_traffic_stays() -> None:
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1))).status)
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    new_rev = name_of(v2)
    failing = observed(v2, ready=0, pods=[crashloop_pod(new_rev)])
    plan = reconcile(inp(v2, observed(v1), failing))
    assert plan.status["phase"] == "Degraded"
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Degraded"]["reason"] == "ModelLoadFailed"
    assert conditions["Degraded"]["message"].startswith(
        f"revision {new_rev}: model failed to load in pod {new_rev}-7c9d8b6f4-x2x9q"
    )
    assert "sha256 mismatch" in conditions["Degraded"]["message"]
    assert conditions["Degraded"]["message"].endswith(f"traffic stays on {name_of(v1)}")
    assert plan.status["stable"]["name"] == name_of(v1)
    assert plan.status["stable"]["effectiveWeight"] == 100.0
    assert plan.delete == []
    assert any(e.type == "Warning" and "sha256 mismatch" in e.message for e in plan.events)


def test_a_first_revision_that_cannot_pull_its_image_is_degraded_until_it_can() -> None:
    obj = mdep()
    rev = name_of(obj)
    obj = with_status(obj, reconcile(inp(obj)).status)
    image = waiting_pod(rev, "ImagePullBackOff", 'Back-off pulling image "acme/serving:nope"')
    plan = reconcile(inp(obj, observed(obj, ready=0, pods=[image])))
    assert plan.status["phase"] == "Degraded"
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Degraded"]["reason"] == "RevisionFailed"
    assert "cannot pull its image (ImagePullBackOff)" in conditions["Degraded"]["message"]
    obj = with_status(obj, plan.status)
    plan = reconcile(inp(obj, observed(obj, pods=[pod(rev, ready=True)])))
    assert plan.status["phase"] == "Healthy"


def test_one_failing_pod_beside_ready_ones_is_reported_not_degraded() -> None:
    obj = mdep()
    rev = name_of(obj)
    obj = with_status(obj, reconcile(inp(obj)).status)
    pods = [pod(rev, "aaaaa", ready=True), pod(rev, "bbbbb", ready=True), crashloop_pod(rev)]
    plan = reconcile(inp(obj, observed(obj, ready=2, pods=pods)))
    assert plan.status["phase"] == "Progressing"
    assert plan.status["message"].startswith(f"revision {rev} 2/3 ready; model failed to load")
