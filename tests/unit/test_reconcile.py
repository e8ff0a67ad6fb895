from __future__ import annotations

import dataclasses
from datetime import timedelta

from canarium.api import ModelDeployment, RolloutPolicySpec
from canarium.reconcile import (
    ChildRef,
    RevisionObservation,
    observe_deployment,
    reconcile,
)
from canarium.render import render_revision, revision_hash
from canarium.rollout import Event

from tests.unit.operator_fixtures import (
    NOW,
    SETTINGS,
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
    assert plan.status["stable"] == {
        "name": rev,
        "modelVersion": "1.0.0",
        "replicas": 3,
        "readyReplicas": 0,
        "weight": 100,
        "effectiveWeight": 0.0,
    }
    assert plan.status["ready"] == "0/3"
    ready = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert ready == {
        "Ready": "False",
        "Progressing": "True",
        "Degraded": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }


def test_ready_revision_makes_it_healthy_and_ready() -> None:
    obj = mdep()
    first = reconcile(inp(obj))
    obj = with_status(obj, first.status)
    plan = reconcile(inp(obj, observed(obj)))
    assert plan.status["phase"] == "Healthy"
    assert plan.status["ready"] == "3/3"
    assert plan.status["stable"] == {
        "name": name_of(obj),
        "modelVersion": "1.0.0",
        "replicas": 3,
        "readyReplicas": 3,
        "weight": 100,
        "effectiveWeight": 100.0,
    }
    assert "canary" not in plan.status
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == 1
    assert plan.status["observedGeneration"] == 1
    assert plan.status["endpoint"] == "http://iris.ml.svc:80/v2/models/iris"
    assert plan.status["grpcEndpoint"] == "iris.ml.svc:8081"


def test_the_status_names_the_rest_and_grpc_ports_the_services_carry() -> None:
    data = mdep().model_dump(by_alias=True, mode="json")
    data["metadata"].update(name="digits", namespace="team-b")
    obj = ModelDeployment.model_validate(data)
    plan = reconcile(inp(obj))
    # Set from the first reconcile on, for the ModelDeployment's own name and namespace.
    assert plan.status["endpoint"] == "http://digits.team-b.svc:80/v2/models/digits"
    assert plan.status["grpcEndpoint"] == "digits.team-b.svc:8081"
    services = [m for m in plan.apply if m["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in services] == [
        "digits",
        "digits-stable",
        "digits-canary",
    ]
    for service in services:
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
             "appProtocol": "http"},
            {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "kubernetes.io/h2c"},
        ]  # fmt: skip
    (deployment,) = [m for m in plan.apply if m["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert {"name": "CANARIUM_GRPC_PORT", "value": "8081"} in container["env"]


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


# --- Reading a revision's Deployment -----------------------------------------------------------
def _deployment_body(
    *,
    generation: int | None = 1,
    status: dict | None = None,
    **spec: object,  # type: ignore[type-arg]
) -> dict:  # type: ignore[type-arg]
    meta: dict = {  # type: ignore[type-arg]
        "name": "iris-abc",
        "labels": {"canarium.dev/revision": "abc"},
        "annotations": {"canarium.dev/created-as": "canary"},
    }
    if generation is not None:
        meta["generation"] = generation
    return {"metadata": meta, "spec": spec, "status": status}


def test_observe_deployment_reads_what_the_api_server_returns() -> None:
    body = _deployment_body(
        generation=3,
        replicas=4,
        status={"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 3},
    )
    seen = observe_deployment(body)
    assert (seen.name, seen.rev_hash, seen.created_as) == ("iris-abc", "abc", "canary")
    assert (seen.replicas, seen.ready_replicas, seen.updated_replicas) == (4, 2, 3)
    assert seen.up_to_date is True
    assert seen.deadline_exceeded is False
    assert seen.spec is None  # no revision-spec annotation
    assert (seen.failure, seen.failing_pods) == (None, 0)


def test_observe_deployment_of_a_bare_object_uses_kubernetes_defaults() -> None:
    seen = observe_deployment({})
    assert (seen.name, seen.rev_hash, seen.spec) == ("", "", None)
    assert seen.created_as == "stable"  # Deployments made before the annotation existed
    assert (seen.replicas, seen.ready_replicas, seen.updated_replicas) == (1, 0, 0)
    assert seen.up_to_date is False  # no status yet: the Deployment controller has not seen it
    assert seen.deadline_exceeded is False
    seen = observe_deployment({"metadata": {"labels": None, "annotations": None}, "status": None})
    assert (seen.rev_hash, seen.created_as) == ("", "stable")


def test_a_deployment_is_up_to_date_once_its_controller_saw_the_latest_generation() -> None:
    def up_to_date(generation: int | None, observed: int | None) -> bool:
        status = {} if observed is None else {"observedGeneration": observed}
        return observe_deployment(_deployment_body(generation=generation, status=status)).up_to_date

    assert up_to_date(2, 2) is True
    assert up_to_date(2, 3) is True
    assert up_to_date(3, 2) is False
    assert up_to_date(None, 1) is True  # a generation starts at 1
    assert up_to_date(1, None) is False


def test_only_a_false_progressing_condition_for_the_deadline_is_a_missed_deadline() -> None:
    def deadline(*conditions: dict) -> bool:  # type: ignore[type-arg]
        body = _deployment_body(status={"conditions": list(conditions)})
        return observe_deployment(body).deadline_exceeded

    missed = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    assert deadline(missed) is True
    assert deadline({"type": "Available", "status": "True"}, missed) is True
    assert deadline({**missed, "status": "True"}) is False
    assert deadline({**missed, "type": "Available"}) is False
    assert deadline({**missed, "reason": "ReplicaSetUpdated"}) is False
    assert deadline() is False


def test_observe_deployment_summarises_failing_pods() -> None:
    obj = mdep()
    rev = name_of(obj)
    seen = observed(obj, ready=0, pods=[crashloop_pod(rev, "aaaaa"), crashloop_pod(rev, "bbbbb")])
    assert seen.failing_pods == 2
    assert seen.failure is not None
    assert seen.failure.pod == f"{rev}-7c9d8b6f4-aaaaa"


# --- The issue's reconcile items: policy errors, a lost stable Deployment, lagging Deployments --
def _healthy(version: str = "1.0.0", **spec: object) -> ModelDeployment:
    """A ModelDeployment whose revision of `version` was reconciled Ready (its status set)."""
    obj = mdep(version, **spec)  # type: ignore[arg-type]
    return with_status(obj, reconcile(inp(obj, observed(obj))).status)


def test_a_missing_policy_is_reported_and_a_new_version_waits_for_it() -> None:
    v1 = _healthy(rollout={"policyRef": {"name": "safe"}})
    error = "RolloutPolicy 'safe' not found"
    plan = reconcile(inp(v1, observed(v1), policy_error=error))
    assert plan.status["phase"] == "Healthy"
    assert plan.status["message"] == (
        f"RolloutPolicy 'safe' not found; a new version waits for it. "
        f"model 1.0.0 served by {name_of(v1)}"
    )
    conditions = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    assert conditions == {
        "Ready": ("True", "PolicyNotFound"),
        "Progressing": ("False", "PolicyNotFound"),
        "Degraded": ("False", "PolicyNotFound"),
        "Reconciling": ("False", "PolicyNotFound"),
        "Stalled": ("False", "PolicyNotFound"),
    }
    # A new version is not started without its policy (tests/unit/test_policy_changes.py).
    v2 = with_status(
        mdep("2.0.0", generation=2, rollout={"policyRef": {"name": "safe"}}), plan.status
    )
    plan = reconcile(inp(v2, observed(v1), policy_error=error))
    assert [m["metadata"]["name"] for m in plan.apply if m["kind"] == "Deployment"] == [name_of(v1)]
    assert plan.status["phase"] == "Progressing"
    assert plan.status["message"] == (
        "RolloutPolicy 'safe' not found; the rollout holds. model 2.0.0 waits for it"
    )
    assert plan.status["conditions"][1]["reason"] == "PolicyNotFound"
    # GitOps tools may apply the policy later: it waits (kstatus InProgress), not Stalled.
    conditions = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert (conditions["Reconciling"], conditions["Stalled"]) == ("True", "False")


def test_an_invalid_policy_is_reported_as_invalid() -> None:
    v1 = _healthy(rollout={"policyRef": {"name": "safe"}})
    error = "RolloutPolicy 'safe' is invalid: 1 validation error for RolloutPolicySpec\nsteps\n..."
    plan = reconcile(inp(v1, observed(v1), policy_error=error))
    assert {c["reason"] for c in plan.status["conditions"]} == {"PolicyInvalid"}
    assert plan.status["message"].startswith(f"{error}; a new version waits for it. ")


def test_an_invalid_policy_whose_bad_value_reads_not_found_is_still_invalid() -> None:
    # The validation error quotes the user's input, which may say anything.
    v1 = _healthy(rollout={"policyRef": {"name": "safe"}})
    error = (
        "RolloutPolicy 'safe' is invalid: 1 validation error for RolloutPolicySpec\n"
        "analysis.interval\n  String should match pattern '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$' "
        "[type=string_pattern_mismatch, input_value='not found', input_type=str]\n"
        "    For further information visit "
        "https://errors.pydantic.dev/2.14/v/string_pattern_mismatch"
    )
    plan = reconcile(inp(v1, observed(v1), policy_error=error))
    assert {c["reason"] for c in plan.status["conditions"]} == {"PolicyInvalid"}


def test_a_lost_stable_deployment_starts_over_from_the_spec_without_a_policy() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    # The stable revision's Deployment is gone (deleted by hand): nothing knows its spec.
    plan = reconcile(inp(v2, observed(v2, ready=0)))
    assert kinds(plan.apply)[0] == ("Deployment", name_of(v2))
    assert [k for k in kinds(plan.apply) if k[0] == "Deployment"] == [("Deployment", name_of(v2))]
    assert plan.status["stable"]["name"] == name_of(v2)
    assert plan.status["stable"]["modelVersion"] == "2.0.0"
    assert "canary" not in plan.status
    assert plan.status["phase"] == "Progressing"
    assert plan.status["ready"] == "0/3"
    # And nothing at all observed: the same, the revision is created again.
    plan = reconcile(inp(v2))
    assert [k for k in kinds(plan.apply) if k[0] == "Deployment"] == [("Deployment", name_of(v2))]
    assert plan.status["stable"]["name"] == name_of(v2)
    # Once the new revision is Ready, it is Healthy: its Deployment is the one observed.
    plan = reconcile(inp(v2, observed(v2)))
    assert plan.status["phase"] == "Healthy"
    assert plan.status["stable"]["readyReplicas"] == 3
    assert plan.status["stable"]["effectiveWeight"] == 100.0


def test_a_lost_stable_deployment_starts_over_from_the_spec_with_a_policy() -> None:
    policy = RolloutPolicySpec.model_validate({"steps": [{"setWeight": 50}]})
    v1 = mdep("1.0.0")
    v1 = with_status(v1, reconcile(inp(v1, observed(v1), policy=policy)).status)
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v2), policy=policy))
    assert [k for k in kinds(plan.apply) if k[0] == "Deployment"] == [("Deployment", name_of(v2))]
    assert plan.status["stable"]["name"] == name_of(v2)
    assert "canary" not in plan.status
    assert plan.status["phase"] == "Healthy"


def _lagging(obj: ModelDeployment) -> RevisionObservation:
    """`obj`'s revision Deployment changed (generation 2) but its controller still reports the
    previous generation's pods: all ready and updated, for a template that is no more."""
    body = render_revision(
        obj,
        revision_hash(obj.spec),
        spec=obj.spec,
        replicas=3,
        role="stable",
        created_as="stable",
        settings=SETTINGS,
    )
    body["metadata"]["generation"] = 2
    body["status"] = {
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 3,
        "updatedReplicas": 3,
    }
    return observe_deployment(body)


def test_a_revision_is_not_ready_before_its_controller_saw_its_latest_generation() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), _lagging(v2)))
    assert plan.delete == []
    assert plan.status["stable"]["name"] == name_of(v1)
    assert plan.status["canary"]["name"] == name_of(v2)
    assert plan.status["phase"] == "Progressing"
    # Once it has: it replaces the old revision.
    plan = reconcile(inp(v2, observed(v1), observed(v2)))
    assert plan.delete == [ChildRef("apps/v1", "Deployment", name_of(v1))]
    # A lagging stable revision alone is not Healthy either.
    plan = reconcile(inp(v1, _lagging(v1)))
    assert plan.status["phase"] == "Progressing"
    assert plan.status["conditions"][0]["status"] == "False"


# --- Without a rollout policy, through a Gateway API HTTPRoute --------------------------------
GATEWAY = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "edge"}]}}


def _route_weights(plan_apply: list[dict]) -> dict[str, int]:  # type: ignore[type-arg]
    (route,) = [m for m in plan_apply if m["kind"] == "HTTPRoute"]
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}


def test_the_route_stays_on_the_old_revision_until_the_new_one_replaces_it() -> None:
    v1 = _healthy(traffic=GATEWAY)
    assert _route_weights(reconcile(inp(v1, observed(v1))).apply) == {
        "iris-stable": 100,
        "iris-canary": 0,
    }
    v2 = with_status(mdep("2.0.0", generation=2, traffic=GATEWAY), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=1)))
    # One of three new pods is ready: the old revision keeps serving everything, as said.
    assert _route_weights(plan.apply) == {"iris-stable": 100, "iris-canary": 0}
    assert plan.status["message"].endswith(f"; {name_of(v1)} keeps serving")
    assert plan.status["stable"]["effectiveWeight"] == 100.0
    assert plan.status["canary"]["effectiveWeight"] == 0.0
    assert plan.status["ready"] == "4/6"
    # Half ready on each side: still all on the old revision, and so reported.
    plan = reconcile(inp(v2, observed(v1, ready=1), observed(v2, ready=1)))
    assert _route_weights(plan.apply) == {"iris-stable": 100, "iris-canary": 0}
    assert (plan.status["stable"]["effectiveWeight"], plan.status["canary"]["effectiveWeight"]) == (
        100.0,
        0.0,
    )
    # Ready: it replaces the old one; the stable Service now selects it.
    plan = reconcile(inp(v2, observed(v1), observed(v2)))
    assert _route_weights(plan.apply) == {"iris-stable": 100, "iris-canary": 0}
    stable_service = next(m for m in plan.apply if m["metadata"]["name"] == "iris-stable")
    assert stable_service["spec"]["selector"]["canarium.dev/revision"] == revision_hash(v2.spec)


def test_the_route_goes_to_the_new_revision_while_it_alone_has_ready_pods() -> None:
    v1 = _healthy(traffic=GATEWAY)
    v2 = with_status(mdep("2.0.0", generation=2, traffic=GATEWAY), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1, ready=0), observed(v2, ready=1)))
    assert _route_weights(plan.apply) == {"iris-stable": 0, "iris-canary": 100}
    assert plan.status["stable"]["effectiveWeight"] == 0.0
    assert plan.status["canary"]["effectiveWeight"] == 100.0
    # Nothing ready anywhere: nothing delivered, the route stays on the old revision.
    plan = reconcile(inp(v2, observed(v1, ready=0), observed(v2, ready=0)))
    assert _route_weights(plan.apply) == {"iris-stable": 100, "iris-canary": 0}
    assert (plan.status["stable"]["effectiveWeight"], plan.status["canary"]["effectiveWeight"]) == (
        0.0,
        0.0,
    )


# --- What the status and the events say while a new version replaces the old -----------------
def test_a_starting_revision_reports_its_ready_pods_and_who_keeps_serving() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=1)))
    assert plan.status["message"] == (
        f"revision {name_of(v2)} (model 2.0.0) 1/3 ready; {name_of(v1)} keeps serving"
    )
    assert plan.status["stable"] == {
        "name": name_of(v1),
        "modelVersion": "1.0.0",
        "replicas": 3,
        "readyReplicas": 3,
        "weight": 0,
        "effectiveWeight": 75.0,
    }
    assert plan.status["canary"] == {
        "name": name_of(v2),
        "modelVersion": "2.0.0",
        "replicas": 3,
        "readyReplicas": 1,
        "weight": 100,
        "effectiveWeight": 25.0,
    }
    assert plan.status["ready"] == "4/6"
    assert plan.events == [
        Event("Normal", "Progressing", plan.status["message"]),
    ]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    assert conditions == {
        "Ready": ("False", "NewRevisionNotReady"),
        "Progressing": ("True", "NewRevisionNotReady"),
        "Degraded": ("False", "NewRevisionNotReady"),
        "Reconciling": ("True", "NewRevisionNotReady"),
        "Stalled": ("False", "NewRevisionNotReady"),
    }
    services = {m["metadata"]["name"]: m["spec"]["selector"] for m in plan.apply[2:5]}
    assert services == {
        "iris": {"canarium.dev/deployment": "iris"},
        "iris-stable": {
            "canarium.dev/deployment": "iris",
            "canarium.dev/revision": revision_hash(v1.spec),
        },
        "iris-canary": {
            "canarium.dev/deployment": "iris",
            "canarium.dev/revision": revision_hash(v2.spec),
        },
    }
    # Both Deployments at full size, the new one made as what it becomes: the stable one.
    (old_dep, new_dep) = plan.apply[:2]
    assert (old_dep["spec"]["replicas"], new_dep["spec"]["replicas"]) == (3, 3)
    assert old_dep["metadata"]["labels"]["canarium.dev/role"] == "stable"
    assert new_dep["metadata"]["labels"]["canarium.dev/role"] == "stable"
    assert new_dep["metadata"]["annotations"]["canarium.dev/created-as"] == "stable"


def test_the_replacement_is_announced_and_recorded() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    v2 = with_status(v2, reconcile(inp(v2, observed(v1), observed(v2, ready=1))).status)
    plan = reconcile(inp(v2, observed(v1), observed(v2), now=NOW + timedelta(minutes=1)))
    assert plan.events == [
        Event(
            "Normal",
            "Replaced",
            f"revision {name_of(v2)} (model 2.0.0) is Ready and replaces {name_of(v1)}",
        ),
        Event("Normal", "Healthy", f"model 2.0.0 served by {name_of(v2)}"),
    ]
    (entry,) = plan.status["history"]
    assert entry == {
        "revision": name_of(v1),
        "modelVersion": "1.0.0",
        "outcome": "Replaced",
        "time": "2026-11-23T12:01:00Z",
        "reason": f"replaced by {name_of(v2)}",
    }
    assert plan.status["ready"] == "3/3"
    assert plan.delete == [ChildRef("apps/v1", "Deployment", name_of(v1))]


def test_a_new_revision_past_its_deadline_is_degraded_with_the_deadline_in_the_message() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=0, deadline=True)))
    message = (
        f"revision {name_of(v2)} did not become Ready within 600s; traffic stays on {name_of(v1)}"
    )
    assert plan.status["message"] == message
    assert plan.events == [Event("Warning", "Degraded", message)]
    # The deadline is the operator's setting, not a constant.
    shorter = dataclasses.replace(SETTINGS, progress_deadline_seconds=120)
    plan = reconcile(
        dataclasses.replace(
            inp(v2, observed(v1), observed(v2, ready=0, deadline=True)), settings=shorter
        )
    )
    assert "did not become Ready within 120s" in plan.status["message"]


def test_conditions_keep_their_transition_time_until_their_status_changes() -> None:
    obj = mdep()
    first = reconcile(inp(obj))
    times = {c["type"]: c["lastTransitionTime"] for c in first.status["conditions"]}
    types = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")
    assert times == dict.fromkeys(types, "2026-11-23T12:00:00Z")
    obj = with_status(obj, first.status)
    later = NOW + timedelta(minutes=5)
    plan = reconcile(inp(obj, observed(obj), now=later))
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert [c["type"] for c in plan.status["conditions"]] == list(types)
    assert conditions["Ready"]["lastTransitionTime"] == "2026-11-23T12:05:00Z"  # False -> True
    assert conditions["Progressing"]["lastTransitionTime"] == "2026-11-23T12:05:00Z"
    assert conditions["Degraded"]["lastTransitionTime"] == "2026-11-23T12:00:00Z"  # still False
    assert conditions["Degraded"]["message"] == f"model 1.0.0 served by {name_of(obj)}"
    assert conditions["Degraded"]["reason"] == "Available"


def test_conditions_follow_the_generation_they_describe() -> None:
    obj = mdep(generation=7)
    plan = reconcile(inp(obj, observed(obj)))
    assert {c["observedGeneration"] for c in plan.status["conditions"]} == {7}
    assert plan.status["observedGeneration"] == 7


def test_a_command_without_a_policy_is_used_up() -> None:
    v1 = _healthy()
    data = v1.model_dump(by_alias=True, mode="json")
    data["metadata"]["annotations"] = {"canarium.dev/command": "promote@7"}
    plan = reconcile(inp(ModelDeployment.model_validate(data), observed(v1)))
    assert plan.status["lastCommand"] == "promote@7"
    # The last command stays recorded once the annotation is gone.
    v1 = with_status(v1, plan.status)
    assert reconcile(inp(v1, observed(v1))).status["lastCommand"] == "promote@7"


def test_autoscaled_revisions_leave_their_size_to_their_hpas() -> None:
    scaled = {"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}
    v1 = _healthy(serving=scaled)
    v2 = with_status(mdep("2.0.0", generation=2, serving=scaled), v1.status.to_dict())
    old_hpa = "iris-0123456789"
    plan = reconcile(inp(v2, observed(v1), hpas=frozenset({name_of(v1), old_hpa})))
    deployments = [m for m in plan.apply if m["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == [name_of(v1), name_of(v2)]
    assert all("replicas" not in d["spec"] for d in deployments)
    hpas = [m["metadata"]["name"] for m in plan.apply if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpas == [name_of(v1), name_of(v2)]
    assert plan.delete == [ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", old_hpa)]
    # The sizes the HPAs chose, as observed; the new revision has none yet.
    assert plan.status["stable"]["replicas"] == 2
    assert "replicas" not in plan.status["canary"]
    assert plan.status["ready"] == "2/2"
    assert plan.status["message"] == (
        # Its HPA has not sized it yet.
        f"revision {name_of(v2)} (model 2.0.0) 0/? ready; {name_of(v1)} keeps serving"
    )
    # Its Deployment is there, at the size it has.
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=0)))
    assert plan.status["canary"]["replicas"] == 2
    assert plan.status["ready"] == "2/4"
    assert plan.status["message"].startswith(f"revision {name_of(v2)} (model 2.0.0) 0/2 ready;")


def test_children_no_revision_needs_are_deleted_in_name_order() -> None:
    v1 = _healthy()
    strays = [observed(mdep(v)) for v in ("9.0.0", "8.0.0", "7.0.0")]
    plan = reconcile(inp(v1, *strays, observed(v1), hpas=frozenset({"iris-b", "iris-a"})))
    assert plan.delete == [
        *(ChildRef("apps/v1", "Deployment", n) for n in sorted(s.name for s in strays)),
        ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", "iris-a"),
        ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", "iris-b"),
    ]
    assert plan.status["ready"] == "3/3"  # the strays' pods are not counted


def test_a_rollout_left_without_its_policy_drops_its_step_pause_bake_and_analysis() -> None:
    v1 = _healthy()
    v2 = mdep("2.0.0", generation=2)
    rollout_status = {
        **v1.status.to_dict(),
        "phase": "Paused",
        "currentStep": 1,
        "stepStartedAt": "2026-11-23T11:59:00Z",
        "pauseReason": "paused until promoted (kubectl canarium promote)",
        "bakeUntil": "2026-11-23T12:30:00Z",
        "previous": {"name": "iris-0000000000", "modelVersion": "0.9.0"},
        "analysis": {"intervals": 2, "failures": 1},
        "canary": {"name": name_of(v2), "modelVersion": "2.0.0", "weight": 25},
    }
    v2 = with_status(v2, rollout_status)
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=1, role="canary")))
    for gone in ("currentStep", "stepStartedAt", "pauseReason", "bakeUntil", "previous"):
        assert gone not in plan.status, gone
    assert "analysis" not in plan.status
    assert plan.status["phase"] == "Progressing"
    assert plan.status["canary"]["weight"] == 100
    # The canary's pods were made as a canary: they keep that role (no restart); the
    # Deployment's role label says what it is now.
    canary = next(m for m in plan.apply if m["metadata"]["name"] == name_of(v2))
    env = {
        e["name"]: e["value"] for e in canary["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["CANARIUM_ROLE"] == "canary"
    assert canary["metadata"]["annotations"]["canarium.dev/created-as"] == "canary"
    assert canary["metadata"]["labels"]["canarium.dev/role"] == "stable"


def test_a_starting_revision_with_a_failing_pod_beside_a_ready_one_says_why() -> None:
    v1 = _healthy()
    v2 = with_status(mdep("2.0.0", generation=2), v1.status.to_dict())
    rev = name_of(v2)
    pods = [pod(rev, "aaaaa", ready=True), crashloop_pod(rev, "bbbbb")]
    plan = reconcile(inp(v2, observed(v1), observed(v2, ready=1, pods=pods)))
    assert plan.status["phase"] == "Progressing"  # one ready pod: not failed (yet)
    assert plan.status["message"].startswith(
        f"revision {rev} (model 2.0.0) 1/3 ready; {name_of(v1)} keeps serving; "
        f"model failed to load in pod {rev}-7c9d8b6f4-bbbbb"
    )


def test_a_header_match_reaches_the_new_revision_only_while_there_is_one() -> None:
    traffic = {
        "router": "gatewayAPI",
        "gatewayAPI": {
            "parentRefs": [{"name": "edge"}],
            "headerMatch": {"name": "X-Canary", "value": "yes"},
        },
    }

    def rules(plan_apply: list[dict]) -> int:  # type: ignore[type-arg]
        (route,) = [m for m in plan_apply if m["kind"] == "HTTPRoute"]
        return len(route["spec"]["rules"])

    v1 = _healthy(traffic=traffic)
    assert rules(reconcile(inp(v1, observed(v1))).apply) == 1
    v2 = with_status(mdep("2.0.0", generation=2, traffic=traffic), v1.status.to_dict())
    assert rules(reconcile(inp(v2, observed(v1), observed(v2, ready=0))).apply) == 2


def test_during_an_autoscaled_rollout_only_the_stable_revision_has_an_hpa() -> None:
    policy = RolloutPolicySpec.model_validate({"steps": [{"setWeight": 50}, {"pause": {}}]})
    scaled = {"replicas": 4, "autoscaling": {"minReplicas": 4, "maxReplicas": 8}}
    v1 = mdep("1.0.0", serving=scaled)
    v1 = with_status(v1, reconcile(inp(v1, observed(v1), policy=policy)).status)
    v2 = with_status(mdep("2.0.0", generation=2, serving=scaled), v1.status.to_dict())
    plan = reconcile(inp(v2, observed(v1), policy=policy, hpas=frozenset({name_of(v1)})))
    assert plan.status["canary"]["name"] == name_of(v2)
    hpas = [m["metadata"]["name"] for m in plan.apply if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpas == [name_of(v1)]  # the canary is sized by its weight, not by an HPA
    canary = next(m for m in plan.apply if m["metadata"]["name"] == name_of(v2))
    assert canary["spec"]["replicas"] == 2
    assert plan.delete == []


def test_a_first_revision_without_its_policy_says_it_is_served_without_it() -> None:
    obj = mdep(rollout={"policyRef": {"name": "safe"}})
    plan = reconcile(inp(obj, policy_error="RolloutPolicy 'safe' not found"))
    assert plan.status["message"].startswith(
        "RolloutPolicy 'safe' not found; the first revision is served without it. "
    )
