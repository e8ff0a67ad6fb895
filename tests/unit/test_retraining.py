"""The ModelRetraining logic (canarium.retraining): triggers, runs, validation of candidates,
the candidate's life on its ModelDeployment, cooldown and backoff. Pure: no cluster."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from canarium.api import ModelDeployment, ModelSpec
from canarium.api.modelretraining import ModelRetraining, next_schedule_time
from canarium.reconcile import reconcile
from canarium.retraining import (
    JobObservation,
    RetrainingInput,
    RetrainingPlan,
    candidate_for,
    candidate_revision,
    candidate_version,
    plan_retraining,
    run_name,
    with_model,
)
from canarium_serving import contract
from canarium_serving.manifest import TrainingResult
from pydantic import ValidationError

from tests.unit.operator_fixtures import NOW, inp, mdep, name_of, observed

OUTPUT = "s3://models/iris/retrained"
SHA_A = "a" * 64
SHA_B = "b" * 64
POLICY = {"steps": [{"setWeight": 50}, {"pause": {"duration": "1m"}}]}


def retraining(status: dict[str, Any] | None = None, **spec: Any) -> ModelRetraining:
    body: dict[str, Any] = {
        "deploymentRef": {"name": "iris"},
        "jobTemplate": {
            "metadata": {"labels": {"team": "ml"}},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "train",
                                "image": "canarium-training:dev",
                                "env": [
                                    {"name": "EPOCHS", "value": "3"},
                                    {"name": "CANARIUM_OUTPUT_URI", "value": "s3://elsewhere"},
                                ],
                            }
                        ]
                    }
                }
            },
        },
        "output": {"uri": OUTPUT},
        **spec,
    }
    return ModelRetraining.model_validate(
        {
            "apiVersion": "canarium.dev/v1alpha1",
            "kind": "ModelRetraining",
            "metadata": {
                "name": "iris-retrain",
                "namespace": "ml",
                "uid": "uid-r",
                "generation": 1,
                "resourceVersion": "5",
                "creationTimestamp": "2026-11-23T11:00:00Z",
            },
            "spec": body,
            "status": status or {},
        }
    )


def with_annotations(obj: ModelRetraining, **annotations: str) -> ModelRetraining:
    data = obj.model_dump(by_alias=True, mode="json")
    data["metadata"]["annotations"] = annotations
    return ModelRetraining.model_validate(data)


def after(obj: ModelRetraining, plan: RetrainingPlan) -> ModelRetraining:
    """The ModelRetraining with the plan's status written."""
    data = obj.model_dump(by_alias=True, mode="json")
    data["status"] = plan.status
    return ModelRetraining.model_validate(data)


def drifted_mdep(**status: Any) -> ModelDeployment:
    """iris 1.0.0, Healthy, its stable revision Drifted."""
    healthy = mdep("1.0.0")
    stable = name_of(healthy)
    return mdep(
        "1.0.0",
        status={
            "phase": "Healthy",
            "stable": {"name": stable, "modelVersion": "1.0.0"},
            "monitoring": {
                "revision": stable,
                "consecutiveDrifted": 2,
                "lastVerdict": "Drifted",
                "message": "petal_length PSI 0.41 > 0.25",
                "findings": [
                    {
                        "kind": "input",
                        "name": "petal_length",
                        "psi": 0.41,
                        "allowed": 0.25,
                        "observations": 800,
                    }
                ],
            },
            "conditions": [
                {
                    "type": "Drifted",
                    "status": "True",
                    "reason": "Drifted",
                    "message": "petal_length PSI 0.41 > 0.25",
                    "lastTransitionTime": "2026-11-23T11:50:00Z",
                }
            ],
            **status,
        },
        monitoring={"dataDrift": {"maxPSI": 0.25}},
    )


def plan(
    obj: ModelRetraining,
    dep: ModelDeployment | None,
    jobs: dict[str, JobObservation] | None = None,
    now: datetime = NOW,
    claimed_by: str | None = None,
) -> RetrainingPlan:
    return plan_retraining(RetrainingInput(obj, dep, jobs or {}, now, claimed_by))


def result(run: str = "iris-retrain-1", accuracy: float = 0.97, base: float = 0.93) -> str:
    return TrainingResult(
        name="iris",
        version="1.0.0-rt1",
        model_uri=f"{OUTPUT}/{run}/model.onnx",
        sha256=SHA_B,
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
        base_metrics={"accuracy": base, "f1_macro": base},
    ).dump()


def started(obj: ModelRetraining | None = None) -> tuple[ModelRetraining, RetrainingPlan]:
    obj = obj or retraining()
    first = plan(obj, drifted_mdep())
    return after(obj, first), first


def succeeded(obj: ModelRetraining, text: str | None, now: datetime = NOW) -> RetrainingPlan:
    job = JobObservation("iris-retrain-1", "Succeeded", completion_time=now, result=text)
    return plan(obj, drifted_mdep(), {"iris-retrain-1": job}, now=now)


def env_of(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names  # the run's own names win, once
    return {e["name"]: e["value"] for e in container["env"]}


# --- triggers ---------------------------------------------------------------------------------


def test_sustained_drift_starts_a_run_whose_job_carries_what_the_run_needs() -> None:
    obj, first = started()
    assert [j["metadata"]["name"] for j in first.create] == ["iris-retrain-1"]
    job = first.create[0]
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"] == {
        "team": "ml",
        "app.kubernetes.io/managed-by": "canarium",
        "canarium.dev/retraining": "iris-retrain",
        "canarium.dev/run": "iris-retrain-1",
    }
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ModelRetraining",
        "iris-retrain",
        "uid-r",
        True,
    )
    # Kubernetes' defaults of a Job retry a failing pod 6 times: a run fails once here.
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    env = env_of(job)
    assert env[contract.TRAINING_ENV_OUTPUT_URI] == f"{OUTPUT}/iris-retrain-1"
    assert env[contract.ENV_MODEL_NAME] == "iris"
    assert env[contract.ENV_MODEL_VERSION] == "1.0.0-rt1"
    assert env[contract.TRAINING_ENV_BASE_MODEL_URI] == "https://models.example.org/iris/1.0.0.onnx"
    assert env[contract.TRAINING_ENV_BASE_MODEL_VERSION] == "1.0.0"
    assert contract.TRAINING_ENV_BASE_MODEL_SHA256 not in env  # the spec names none
    assert env[contract.TRAINING_ENV_TRIGGER] == "drift"
    assert env[contract.TRAINING_ENV_RESULT_FILE] == "/dev/termination-log"
    assert env["EPOCHS"] == "3"  # the template's own env stays
    report = json.loads(env[contract.TRAINING_ENV_DRIFT_REPORT])
    assert report["findings"][0]["name"] == "petal_length"
    assert report["findings"][0]["psi"] == 0.41
    run = obj.status.runs[0]
    assert (run.name, run.trigger, run.phase) == ("iris-retrain-1", "drift", "Running")
    assert run.reason == "petal_length PSI 0.41 > 0.25"
    assert run.base is not None
    assert run.base.version == "1.0.0"
    assert obj.status.phase == "Training"
    assert obj.status.runs_started == 1
    assert [e.reason for e in first.events] == ["RetrainingStarted"]
    reconciling = next(c for c in obj.status.conditions if c.type == "Reconciling")
    assert reconciling.status == "True"


def test_no_drift_no_run_and_a_running_job_is_not_started_twice() -> None:
    calm = mdep("1.0.0", status={"phase": "Healthy", "stable": {"name": name_of(mdep())}})
    idle = plan(retraining(), calm)
    assert idle.create == []
    assert idle.status["phase"] == "Idle"
    obj, _ = started()
    running = JobObservation("iris-retrain-1", "Active")
    again = plan(obj, drifted_mdep(), {"iris-retrain-1": running})
    assert again.create == []
    assert again.status["runs"][0]["phase"] == "Running"


def test_drift_does_not_start_a_run_when_on_drift_is_off_or_suspended() -> None:
    assert plan(retraining(triggers={"onDrift": False}), drifted_mdep()).create == []
    suspended = plan(retraining(suspend=True), drifted_mdep())
    assert suspended.create == []
    assert suspended.status["phase"] == "Suspended"


def test_drift_of_a_revision_that_no_longer_serves_starts_nothing() -> None:
    dep = drifted_mdep(stable={"name": "iris-otherrev", "modelVersion": "1.0.0"})
    assert plan(retraining(), dep).create == []


def test_a_second_retraining_of_the_same_deployment_stalls_and_runs_nothing() -> None:
    p = plan(retraining(), drifted_mdep(), claimed_by="older")
    assert p.create == []
    assert p.status["phase"] == "Stalled"
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "DeploymentClaimed"
    assert "older" in p.status["message"]


def test_a_missing_deployment_stalls() -> None:
    p = plan(retraining(), None)
    assert p.create == []
    assert p.status["phase"] == "Stalled"
    assert p.status["message"] == "ModelDeployment 'iris' not found"
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


# --- results and validation ---------------------------------------------------------------


def test_a_valid_result_becomes_the_candidate_the_deployment_rolls_out() -> None:
    obj, _ = started()
    done = succeeded(obj, result())
    obj = after(obj, done)
    run = obj.status.runs[0]
    assert run.phase == "Canarying"
    assert run.metrics["accuracy"] == 0.97
    assert run.base_metrics["accuracy"] == 0.93
    assert run.completion_time == NOW
    candidate = obj.status.candidate
    assert candidate is not None
    assert candidate.approved
    assert candidate.model.uri == f"{OUTPUT}/iris-retrain-1/model.onnx"
    assert candidate.model.sha256 == SHA_B
    assert candidate.replaces.version == "1.0.0"
    assert done.candidate_changed
    assert [e.reason for e in done.events] == ["CandidateAccepted"]
    assert "accuracy 0.97, the model it replaces 0.93" in done.events[0].message
    assert obj.status.phase == "Canarying"

    dep = drifted_mdep()
    model = candidate_for(dep, obj)
    assert model == ModelSpec(uri=candidate.model.uri, version="1.0.0-rt1", sha256=SHA_B)
    # The revision the run records is the one the ModelDeployment makes for it.
    swapped = dep.model_copy(update={"spec": with_model(dep.spec, model)})
    assert run.revision == name_of(swapped) == candidate_revision(dep, candidate.model)
    assert run.revision != name_of(dep)


def test_a_candidate_worse_than_the_model_it_replaces_is_rejected_and_never_served() -> None:
    obj, _ = started()
    done = succeeded(obj, result(accuracy=0.90, base=0.93))
    obj = after(obj, done)
    run = obj.status.runs[0]
    assert run.phase == "Rejected"
    assert run.message == (
        "candidate 1.0.0-rt1 rejected: held-out accuracy 0.9 is worse than the model it "
        "replaces (0.93 on the same rows; tolerance 0)"
    )
    assert obj.status.candidate is None
    assert candidate_for(drifted_mdep(), obj) is None
    assert [e.reason for e in done.events] == ["CandidateRejected"]
    assert obj.status.consecutive_failures == 1
    # The cooldown after a failure is doubled: 2h.
    assert obj.status.cooldown_until == NOW + timedelta(hours=2)
    ready = next(c for c in obj.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "RunRejected")


def test_a_tolerance_lets_a_slightly_worse_candidate_through() -> None:
    obj, _ = started(retraining(validation={"tolerance": 0.05}))
    assert (
        after(obj, succeeded(obj, result(accuracy=0.90, base=0.93))).status.runs[0].phase
        == "Canarying"
    )


def test_a_minimum_score_rejects_and_lower_is_better_for_mae() -> None:
    obj, _ = started(retraining(validation={"minimum": 0.98}))
    run = after(obj, succeeded(obj, result(accuracy=0.97, base=0.9))).status.runs[0]
    assert run.phase == "Rejected"
    assert run.message is not None
    assert run.message.endswith("held-out accuracy 0.97, the policy wants at least 0.98")

    def regressor(mae: float, base: float, **validation: Any) -> str:
        obj, _ = started(retraining(validation={"metric": "mae", **validation}))
        text = TrainingResult(
            name="iris",
            version="1.0.0-rt1",
            model_uri=f"{OUTPUT}/iris-retrain-1/model.onnx",
            sha256=SHA_B,
            metrics={"mae": mae},
            base_metrics={"mae": base},
        ).dump()
        return after(obj, succeeded(obj, text)).status.runs[0].phase

    assert regressor(0.4, 0.5) == "Canarying"  # lower mae: better
    assert regressor(0.6, 0.5) == "Rejected"
    assert regressor(0.4, 0.5, minimum=0.3) == "Rejected"  # for mae the minimum is a ceiling
    assert regressor(0.2, 0.5, minimum=0.3) == "Canarying"


def test_a_result_without_the_metric_is_rejected_unless_nothing_needs_it() -> None:
    obj, _ = started(retraining(validation={"metric": "r2"}))
    run = after(obj, succeeded(obj, result())).status.runs[0]
    assert run.phase == "Rejected"
    assert run.message is not None
    assert "reported no held-out r2" in run.message
    assert "accuracy, f1_macro" in run.message
    lax = retraining(validation={"metric": "r2", "notWorseThanBase": False})
    obj, _ = started(lax)
    assert after(obj, succeeded(obj, result())).status.runs[0].phase == "Canarying"


def test_a_model_outside_the_runs_folder_is_rejected() -> None:
    obj, _ = started()
    elsewhere = result().replace(f"{OUTPUT}/iris-retrain-1/", "s3://other/bucket/")
    run = after(obj, succeeded(obj, elsewhere)).status.runs[0]
    assert run.phase == "Rejected"
    assert run.message is not None
    assert "is not in the run's folder" in run.message


def test_a_job_that_succeeds_without_a_result_or_with_garbage_fails_the_run() -> None:
    obj, _ = started()
    run = after(obj, succeeded(obj, None)).status.runs[0]
    assert run.phase == "Failed"
    assert run.message is not None
    assert "reported no model" in run.message
    assert "report_result" in run.message
    run = after(obj, succeeded(obj, '{"format": "nope"}')).status.runs[0]
    assert run.phase == "Failed"
    assert run.message is not None
    assert "not a Canarium training result" in run.message


def test_a_failed_job_fails_the_run_and_backs_off_without_a_storm() -> None:
    obj, _ = started()
    failed = JobObservation("iris-retrain-1", "Failed", "BackoffLimitExceeded: Job has reached")
    p = plan(obj, drifted_mdep(), {"iris-retrain-1": failed})
    obj = after(obj, p)
    assert obj.status.runs[0].phase == "Failed"
    assert obj.status.runs[0].message == "its Job failed: BackoffLimitExceeded: Job has reached"
    assert [e.reason for e in p.events] == ["RetrainingFailed"]
    assert p.create == []  # still drifted, but cooling down
    assert obj.status.phase == "CoolingDown"
    assert obj.status.cooldown_until == NOW + timedelta(hours=2)
    assert p.requeue_after == pytest.approx(7200.5)
    # Still drifted an hour later: nothing; after the cooldown: the next run.
    later = plan(obj, drifted_mdep(), {"iris-retrain-1": failed}, now=NOW + timedelta(hours=1))
    assert later.create == []
    due = NOW + timedelta(hours=2)
    again = plan(obj, drifted_mdep(), {"iris-retrain-1": failed}, now=due)
    assert [j["metadata"]["name"] for j in again.create] == ["iris-retrain-2"]
    # Two failures in a row: 4h.
    obj = after(obj, again)
    failed2 = JobObservation("iris-retrain-2", "Failed", "DeadlineExceeded")
    obj = after(obj, plan(obj, drifted_mdep(), {"iris-retrain-2": failed2}, now=due))
    assert obj.status.consecutive_failures == 2
    assert obj.status.cooldown_until == due + timedelta(hours=4)


def test_the_backoff_stops_doubling_at_sixteen_cooldowns() -> None:
    obj = retraining(status={"consecutiveFailures": 9, "runsStarted": 9})
    obj, _ = started(obj)
    failed = JobObservation("iris-retrain-10", "Failed", "x")
    obj = after(obj, plan(obj, drifted_mdep(), {"iris-retrain-10": failed}))
    assert obj.status.cooldown_until == NOW + timedelta(hours=16)


def test_a_job_deleted_before_it_ended_fails_the_run() -> None:
    obj, _ = started()
    run = after(obj, plan(obj, drifted_mdep(), {})).status.runs[0]
    assert (run.phase, run.message) == ("Failed", "its Job is gone (deleted before it ended)")


# --- the candidate on its ModelDeployment ----------------------------------------------------


def canarying() -> ModelRetraining:
    obj, _ = started()
    return after(obj, succeeded(obj, result()))


def test_promotion_of_the_candidate_ends_the_run_and_resets_the_backoff() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    dep = drifted_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    p = plan(obj, dep)
    obj = after(obj, p)
    assert obj.status.runs[0].phase == "Promoted"
    assert obj.status.runs[0].message == "candidate 1.0.0-rt1 promoted: it serves all traffic"
    assert [e.reason for e in p.events] == ["CandidatePromoted"]
    assert obj.status.consecutive_failures == 0
    assert obj.status.cooldown_until == NOW + timedelta(hours=1)
    # It keeps serving: the candidate stays while spec.model is the one it replaces.
    assert candidate_for(dep, obj) is not None
    # A later run starts from it, and names its version after Git's.
    later = NOW + timedelta(hours=2)
    drift_again = drifted_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    drift_again.status.monitoring.revision = revision  # type: ignore[union-attr]
    nxt = plan(obj, drift_again, now=later)
    env = env_of(nxt.create[0])
    assert env[contract.TRAINING_ENV_BASE_MODEL_URI] == f"{OUTPUT}/iris-retrain-1/model.onnx"
    assert env[contract.TRAINING_ENV_BASE_MODEL_SHA256] == SHA_B
    assert env[contract.ENV_MODEL_VERSION] == "1.0.0-rt2"


def test_a_rolled_back_candidate_is_withdrawn_and_counts_as_a_failure() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    assert revision is not None
    dep = drifted_mdep(
        history=[
            {
                "revision": revision,
                "modelVersion": "1.0.0-rt1",
                "outcome": "RolledBack",
                "time": "2026-11-23T12:00:00Z",
                "reason": "errorRate 0.2 > 0.01",
                "cause": "AnalysisFailed",
            }
        ],
        aborted={
            "revision": revision,
            "cause": "AnalysisFailed",
            "message": "errorRate 0.2 > 0.01",
            "time": "2026-11-23T12:00:00Z",
        },
    )
    p = plan(obj, dep)
    obj = after(obj, p)
    assert obj.status.candidate is None
    assert obj.status.runs[0].phase == "RolledBack"
    assert obj.status.runs[0].message == "candidate 1.0.0-rt1 rolled back: errorRate 0.2 > 0.01"
    assert p.candidate_changed
    assert [e.reason for e in p.events] == ["CandidateRolledBack"]
    assert obj.status.consecutive_failures == 1
    assert candidate_for(dep, obj) is None
    assert p.create == []  # drift persists, but a cooldown of 2h follows


def test_an_older_rollback_of_the_same_revision_is_not_this_candidates() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    dep = drifted_mdep(
        history=[
            {
                "revision": revision,
                "outcome": "RolledBack",
                "time": "2026-11-23T10:00:00Z",
                "reason": "long ago",
            }
        ]
    )
    assert after(obj, plan(obj, dep)).status.runs[0].phase == "Canarying"


def test_a_change_of_spec_model_in_git_supersedes_the_candidate() -> None:
    obj = canarying()
    moved = mdep("2.0.0", status=drifted_mdep().status.to_dict())
    p = plan(obj, moved)
    obj = after(obj, p)
    assert obj.status.candidate is None
    assert obj.status.runs[0].phase == "Superseded"
    assert obj.status.runs[0].message == (
        "spec.model changed in Git (to 2.0.0): Git wins over candidate 1.0.0-rt1"
    )
    assert candidate_for(moved, canarying()) is None  # even before the status says so


def test_pinning_the_candidate_in_git_keeps_the_same_revision() -> None:
    """Writing the candidate into spec.model supersedes it without a new rollout: the revision
    of the pinned spec is the one that already serves it."""
    obj = canarying()
    candidate = obj.status.candidate
    assert candidate is not None
    dep = drifted_mdep()
    pinned = dep.model_copy(
        update={
            "spec": with_model(
                dep.spec,
                ModelSpec(uri=candidate.model.uri, version="1.0.0-rt1", sha256=SHA_B),
            )
        }
    )
    assert name_of(pinned) == obj.status.runs[0].revision


def test_manual_approval_holds_the_candidate_until_a_person_approves() -> None:
    obj, _ = started(retraining(approval="Manual"))
    obj = after(obj, succeeded(obj, result()))
    assert obj.status.runs[0].phase == "AwaitingApproval"
    assert obj.status.phase == "AwaitingApproval"
    assert obj.status.candidate is not None
    assert not obj.status.candidate.approved
    assert candidate_for(drifted_mdep(), obj) is None  # nothing rolls out yet
    assert "kubectl canarium retrain iris-retrain --approve" in (obj.status.message or "")
    # Approving another run changes nothing.
    p = plan(
        with_annotations(obj, **{"canarium.dev/approve-run": "iris-retrain-9"}), drifted_mdep()
    )
    assert p.status["runs"][0]["phase"] == "AwaitingApproval"
    approved = with_annotations(obj, **{"canarium.dev/approve-run": "iris-retrain-1"})
    p = plan(approved, drifted_mdep())
    obj = after(approved, p)
    assert obj.status.runs[0].phase == "Canarying"
    assert p.candidate_changed
    assert candidate_for(drifted_mdep(), obj) is not None


def test_a_discarded_candidate_goes_back_to_spec_model() -> None:
    obj = canarying()
    discarded = with_annotations(obj, **{"canarium.dev/discard-run": "iris-retrain-1"})
    p = plan(discarded, drifted_mdep())
    obj = after(discarded, p)
    assert obj.status.candidate is None
    assert obj.status.runs[0].phase == "Discarded"
    assert [e.reason for e in p.events] == ["CandidateDiscarded"]
    assert obj.status.consecutive_failures == 0  # a person's choice is no failure


def test_a_newer_candidate_supersedes_the_older_and_keeps_what_git_has() -> None:
    obj = canarying()
    data = obj.model_dump(by_alias=True, mode="json")
    data["status"]["runs"].insert(
        0,
        {
            "name": "iris-retrain-2",
            "trigger": "manual",
            "phase": "Running",
            "startTime": "2026-11-23T12:00:01Z",
        },
    )
    obj = ModelRetraining.model_validate(data)
    text = result(run="iris-retrain-2").replace("1.0.0-rt1", "1.0.0-rt2")
    job = JobObservation("iris-retrain-2", "Succeeded", result=text)
    obj = after(obj, plan(obj, drifted_mdep(), {"iris-retrain-2": job}))
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {"iris-retrain-2": "Canarying", "iris-retrain-1": "Superseded"}
    assert obj.status.candidate is not None
    assert obj.status.candidate.run == "iris-retrain-2"
    assert obj.status.candidate.replaces.version == "1.0.0"


# --- manual and scheduled runs -------------------------------------------------------------


def test_a_persons_request_runs_once_even_in_cooldown_and_waits_while_busy() -> None:
    cooling = retraining(status={"cooldownUntil": "2026-11-23T18:00:00Z"})
    calm = mdep("1.0.0", status={"phase": "Healthy", "stable": {"name": name_of(mdep())}})
    asked = with_annotations(cooling, **{"canarium.dev/retrain-requested-at": "2026-11-23T12:00Z"})
    p = plan(asked, calm)
    assert [j["metadata"]["name"] for j in p.create] == ["iris-retrain-1"]
    assert env_of(p.create[0])[contract.TRAINING_ENV_TRIGGER] == "manual"
    assert contract.TRAINING_ENV_DRIFT_REPORT not in env_of(p.create[0])
    obj = after(asked, p)
    assert obj.status.handled_request == "2026-11-23T12:00Z"
    assert obj.status.runs[0].reason == "requested at 2026-11-23T12:00Z"
    # The same request again: nothing. A new one while the first runs: it waits.
    running = {"iris-retrain-1": JobObservation("iris-retrain-1", "Active")}
    assert plan(obj, calm, running).create == []
    newer = with_annotations(obj, **{"canarium.dev/retrain-requested-at": "2026-11-23T12:05Z"})
    p = plan(newer, calm, running)
    assert p.create == []
    assert p.status["handledRequest"] == "2026-11-23T12:00Z"
    done = {"iris-retrain-1": JobObservation("iris-retrain-1", "Failed", "x")}
    p = plan(newer, calm, done)
    assert [j["metadata"]["name"] for j in p.create] == ["iris-retrain-2"]


def test_max_concurrent_allows_runs_side_by_side() -> None:
    calm = mdep("1.0.0", status={"phase": "Healthy", "stable": {"name": name_of(mdep())}})
    two = retraining(maxConcurrent=2)
    first = with_annotations(two, **{"canarium.dev/retrain-requested-at": "a"})
    obj = after(first, plan(first, calm))
    second = with_annotations(obj, **{"canarium.dev/retrain-requested-at": "b"})
    running = {"iris-retrain-1": JobObservation("iris-retrain-1", "Active")}
    assert [j["metadata"]["name"] for j in plan(second, calm, running).create] == ["iris-retrain-2"]


def test_no_run_starts_while_the_deployment_rolls_out() -> None:
    rolling = drifted_mdep(canary={"name": "iris-newrev", "modelVersion": "2.0.0"})
    asked = with_annotations(retraining(), **{"canarium.dev/retrain-requested-at": "x"})
    assert plan(asked, rolling).create == []


def test_the_schedule_fires_once_per_time_and_skips_a_time_while_busy() -> None:
    nightly = retraining(triggers={"onDrift": False, "schedule": "0 3 * * *"})
    calm = mdep("1.0.0", status={"phase": "Healthy", "stable": {"name": name_of(mdep())}})
    # Created 11:00 on the 23rd: the first time is 03:00 on the 24th.
    p = plan(nightly, calm)
    assert p.create == []
    assert p.status["nextScheduleTime"] == "2026-11-24T03:00:00Z"
    assert p.requeue_after == pytest.approx(15 * 3600 + 0.5)
    at = datetime.fromisoformat("2026-11-24T03:00:00+00:00")
    p = plan(nightly, calm, now=at)
    assert [j["metadata"]["name"] for j in p.create] == ["iris-retrain-1"]
    assert env_of(p.create[0])[contract.TRAINING_ENV_TRIGGER] == "schedule"
    obj = after(nightly, p)
    assert obj.status.last_schedule_time == at
    assert plan(obj, calm, {"iris-retrain-1": JobObservation("iris-retrain-1", "Active")},
                now=at + timedelta(minutes=5)).create == []  # fmt: skip
    # Three days later, still running: one skipped time (not three), and no run.
    late = at + timedelta(days=3, minutes=1)
    busy = {"iris-retrain-1": JobObservation("iris-retrain-1", "Active")}
    p = plan(obj, calm, busy, now=late)
    assert p.create == []
    assert [e.reason for e in p.events] == ["ScheduleSkipped"]
    assert p.status["lastScheduleTime"] == "2026-11-27T03:00:00Z"


def test_cron_macros_and_invalid_schedules() -> None:
    after_ = datetime.fromisoformat("2026-11-23T12:30:00+00:00")
    assert next_schedule_time("@hourly", after_).isoformat() == "2026-11-23T13:00:00+00:00"
    assert next_schedule_time("@weekly", after_).isoformat() == "2026-11-29T00:00:00+00:00"
    with pytest.raises(ValidationError, match="invalid cron schedule '61 \\* \\* \\* \\*'"):
        retraining(triggers={"schedule": "61 * * * *"})


def test_a_template_without_containers_is_refused() -> None:
    with pytest.raises(ValidationError, match="must list a container"):
        retraining(jobTemplate={"spec": {"template": {"spec": {}}}})


def test_finished_jobs_beyond_the_history_limit_are_deleted_newest_kept() -> None:
    runs = [
        {
            "name": f"iris-retrain-{i}",
            "trigger": "manual",
            "phase": "Failed",
            "startTime": f"2026-11-23T0{i}:00:00Z",
        }
        for i in range(1, 6)
    ]
    obj = retraining(status={"runs": runs, "runsStarted": 5}, historyLimit=2)
    jobs = {r["name"]: JobObservation(r["name"], "Failed", "x") for r in runs}
    p = plan(obj, mdep("1.0.0"), jobs)
    assert sorted(p.delete) == ["iris-retrain-1", "iris-retrain-2", "iris-retrain-3"]


def test_names_and_versions_fit_kubernetes_limits() -> None:
    assert run_name("a" * 70, 12) == "a" * 60 + "-12"
    assert len(run_name("a" * 70, 12)) == 63
    assert candidate_version("1.4.0", 3) == "1.4.0-rt3"
    long = candidate_version("v" + "1" * 62, 7)
    assert len(long) == 63
    assert long.endswith("-rt7")


# --- the ModelDeployment's side: reconcile with the candidate swapped in ---------------------


def test_the_deployment_canaries_the_candidate_and_returns_to_git_when_it_is_withdrawn() -> None:
    policy = {"rollout": {"policy": POLICY}}
    base = mdep("1.0.0", **policy)
    stable = observed(base)
    healthy = reconcile(inp(base, stable)).status
    base = mdep("1.0.0", status=healthy, **policy)
    model = ModelSpec(uri=f"{OUTPUT}/iris-retrain-1/model.onnx", version="1.0.0-rt1", sha256=SHA_B)
    swapped = base.model_copy(update={"spec": with_model(base.spec, model)})
    p = reconcile(inp(swapped, stable))
    assert p.status["canary"]["name"] == name_of(swapped)
    assert p.status["canary"]["modelVersion"] == "1.0.0-rt1"
    assert p.status["stable"]["name"] == stable.name
    canary = next(m for m in p.apply if m["metadata"]["name"] == name_of(swapped))
    env = {
        e["name"]: e.get("value")
        for e in canary["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env[contract.ENV_MODEL_URI] == model.uri
    assert env[contract.ENV_MODEL_SHA256] == SHA_B
    # The candidate withdrawn (rolled back, discarded, superseded): back to spec.model, the
    # canary dropped, Healthy on the stable revision.
    during = mdep("1.0.0", status=p.status, **policy)
    back = reconcile(inp(during, stable, observed(swapped, role="canary")))
    assert back.status["phase"] == "Healthy"
    assert "canary" not in back.status
    assert back.status["stable"]["name"] == stable.name


# --- a second candidate after a promoted one -------------------------------------------------


def promoted_then_second() -> tuple[ModelRetraining, str]:
    """Run 1 promoted (serving), run 2's candidate accepted; and run 1's revision."""
    obj = canarying()
    first_revision = obj.status.runs[0].revision
    assert first_revision is not None
    serving = drifted_mdep(stable={"name": first_revision, "modelVersion": "1.0.0-rt1"})
    obj = after(obj, plan(obj, serving))
    asked = with_annotations(obj, **{"canarium.dev/retrain-requested-at": "now"})
    obj = after(asked, plan(asked, serving))
    assert obj.status.runs[0].name == "iris-retrain-2"
    text = result(run="iris-retrain-2").replace("1.0.0-rt1", "1.0.0-rt2")
    job = JobObservation("iris-retrain-2", "Succeeded", result=text)
    obj = after(obj, plan(obj, serving, {"iris-retrain-2": job}))
    return obj, first_revision


def test_a_second_candidate_remembers_the_promoted_one_it_follows() -> None:
    obj, _ = promoted_then_second()
    candidate = obj.status.candidate
    assert candidate is not None
    assert candidate.run == "iris-retrain-2"
    assert candidate.fallback_run == "iris-retrain-1"
    assert candidate.fallback_model is not None
    assert candidate.fallback_model.version == "1.0.0-rt1"
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {"iris-retrain-2": "Canarying", "iris-retrain-1": "Promoted"}


def test_a_rolled_back_second_candidate_falls_back_to_the_promoted_one_not_to_git() -> None:
    obj, first_revision = promoted_then_second()
    second_revision = obj.status.runs[0].revision
    dep = drifted_mdep(
        stable={"name": first_revision, "modelVersion": "1.0.0-rt1"},
        history=[
            {
                "revision": second_revision,
                "outcome": "RolledBack",
                "time": "2026-11-23T12:00:00Z",
                "reason": "predictionDrift PSI 0.9 > 0.25",
            }
        ],
    )
    p = plan(obj, dep)
    obj = after(obj, p)
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {"iris-retrain-2": "RolledBack", "iris-retrain-1": "Promoted"}
    candidate = obj.status.candidate
    assert candidate is not None
    assert candidate.run == "iris-retrain-1"
    assert candidate.model.version == "1.0.0-rt1"
    assert candidate.replaces.version == "1.0.0"  # still tied to Git's model
    assert candidate.fallback_run is None
    model = candidate_for(dep, obj)
    assert model is not None
    assert model.version == "1.0.0-rt1"
    assert obj.status.consecutive_failures == 1


def test_promoting_the_second_candidate_retires_the_first() -> None:
    obj, _ = promoted_then_second()
    second_revision = obj.status.runs[0].revision
    dep = drifted_mdep(stable={"name": second_revision, "modelVersion": "1.0.0-rt2"})
    obj = after(obj, plan(obj, dep))
    runs = {r.name: r for r in obj.status.runs}
    assert runs["iris-retrain-2"].phase == "Promoted"
    assert runs["iris-retrain-1"].phase == "Superseded"
    assert runs["iris-retrain-1"].message == "replaced by run iris-retrain-2"
    assert obj.status.candidate is not None
    assert obj.status.candidate.fallback_run is None


def test_git_moving_drops_the_fallback_too() -> None:
    obj, _ = promoted_then_second()
    moved = mdep("2.0.0", status=drifted_mdep().status.to_dict())
    obj = after(obj, plan(obj, moved))
    assert obj.status.candidate is None


def test_after_a_rolled_back_candidate_the_deployment_is_healthy_on_what_served() -> None:
    """The rollback holds the ModelDeployment Degraded while its desired revision is the rolled
    back one; once the candidate is withdrawn, the desired revision is the stable one again."""
    policy = {"rollout": {"policy": POLICY}}
    base = mdep("1.0.0", **policy)
    stable = observed(base)
    model = ModelSpec(uri=f"{OUTPUT}/iris-retrain-1/model.onnx", version="1.0.0-rt1", sha256=SHA_B)
    swapped = base.model_copy(update={"spec": with_model(base.spec, model)})
    held = reconcile(inp(base, stable)).status
    held["aborted"] = {
        "revision": name_of(swapped),
        "cause": "AnalysisFailed",
        "message": "predictionDrift",
        "time": "2026-11-23T12:00:00Z",
    }
    held["phase"] = "Degraded"
    back = reconcile(inp(mdep("1.0.0", status=held, **policy), stable))
    assert back.status["phase"] == "Healthy"
    assert back.status["stable"]["name"] == stable.name
    conditions = {c["type"]: c["status"] for c in back.status["conditions"]}
    assert (conditions["Ready"], conditions["Degraded"], conditions["Stalled"]) == (
        "True",
        "False",
        "False",
    )
