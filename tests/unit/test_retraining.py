"""The ModelRetraining logic (canarium.retraining): triggers, runs, validation of candidates,
the candidate's life on its ModelDeployment, cooldown and backoff. Pure: no cluster."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from canarium.api import ModelDeployment, ModelSpec
from canarium.api.modelretraining import ModelRetraining, RetrainingRun, next_schedule_time
from canarium.reconcile import reconcile
from canarium.retraining import (
    JobObservation,
    RetrainingInput,
    RetrainingPlan,
    candidate_for,
    candidate_revision,
    candidate_version,
    check_candidate,
    drift_report,
    output_folder,
    plan_retraining,
    render_job,
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
    # A run is not the spec being applied: kstatus must not read it as InProgress (a Flux
    # `wait` would hold for the whole training).
    reconciling = next(c for c in obj.status.conditions if c.type == "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("False", "Training")


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


# --- exact behaviour, piece by piece --------------------------------------------------------


def calm_mdep() -> ModelDeployment:
    """iris 1.0.0, Healthy on its stable revision, no drift."""
    return mdep("1.0.0", status={"phase": "Healthy", "stable": {"name": name_of(mdep())}})


def with_status(obj: ModelRetraining, **status: Any) -> ModelRetraining:
    data = obj.model_dump(by_alias=True, mode="json")
    data["status"] = {**data["status"], **status}
    return ModelRetraining.model_validate(data)


def with_spec(obj: ModelRetraining, **spec: Any) -> ModelRetraining:
    data = obj.model_dump(by_alias=True, mode="json")
    data["spec"] = {**data["spec"], **spec}
    return ModelRetraining.model_validate(data)


def with_spec_model(dep: ModelDeployment, **model: Any) -> ModelDeployment:
    """`dep` with its spec.model changed (as a change in Git would)."""
    changed = dep.spec.model.model_copy(update=model)
    return dep.model_copy(update={"spec": with_model(dep.spec, changed)})


def run_of(name: str = "iris-retrain-1", **fields: Any) -> RetrainingRun:
    return RetrainingRun.model_validate(
        {
            "name": name,
            "trigger": "manual",
            "phase": "Running",
            "startTime": "2026-11-23T12:00:00Z",
            **fields,
        }
    )


def training_result(
    metrics: dict[str, float],
    base_metrics: dict[str, float] | None = None,
    uri: str = f"{OUTPUT}/iris-retrain-1/model.onnx",
) -> TrainingResult:
    return TrainingResult(
        name="iris",
        version="1.0.0-rt1",
        model_uri=uri,
        sha256=SHA_B,
        metrics=metrics,
        base_metrics=base_metrics or {},
    )


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """type: (status, reason, lastTransitionTime, message, observedGeneration)."""
    return {
        c["type"]: (
            c["status"],
            c["reason"],
            c["lastTransitionTime"],
            c["message"],
            c["observedGeneration"],
        )
        for c in status["conditions"]
    }


def events_of(p: RetrainingPlan) -> list[tuple[str, str, str]]:
    return [(e.type, e.reason, e.message) for e in p.events]


def asked(obj: ModelRetraining, request: str = "r1") -> ModelRetraining:
    return with_annotations(obj, **{"canarium.dev/retrain-requested-at": request})


def test_candidate_for_needs_its_deployment_an_approved_candidate_and_gits_model() -> None:
    obj = canarying()
    dep = drifted_mdep()
    model = ModelSpec(uri=f"{OUTPUT}/iris-retrain-1/model.onnx", version="1.0.0-rt1", sha256=SHA_B)
    assert candidate_for(dep, obj) == model
    assert candidate_for(dep, None) is None
    rose = dep.model_copy(update={"metadata": dep.metadata.model_copy(update={"name": "rose"})})
    assert candidate_for(rose, obj) is None  # another ModelDeployment's retraining
    assert candidate_for(dep, retraining()) is None  # no candidate
    candidate = obj.status.candidate
    assert candidate is not None
    waiting = with_status(obj, candidate={**candidate.to_dict(), "approved": False})
    assert candidate_for(dep, waiting) is None
    # Any part of spec.model changed in Git: uri, version or sha256.
    assert candidate_for(with_spec_model(dep, sha256=SHA_A), obj) is None
    assert candidate_for(with_spec_model(dep, uri="s3://models/iris/1.0.0.onnx"), obj) is None
    assert candidate_for(with_spec_model(dep, version="1.0.1"), obj) is None


def test_with_model_of_none_is_the_spec_itself() -> None:
    dep = drifted_mdep()
    assert with_model(dep.spec, None) is dep.spec


def test_candidate_versions_and_run_names_are_cut_at_a_clean_character() -> None:
    assert candidate_version("1.4.0", 3) == "1.4.0-rt3"
    assert candidate_version("v" * 70, 10) == "v" * 58 + "-rt10"
    # A cut that ends on separators drops them all.
    assert candidate_version("v" * 56 + "-._" + "w" * 9, 7) == "v" * 56 + "-rt7"
    assert candidate_version("v" * 58 + "_" + "w" * 9, 7) == "v" * 58 + "-rt7"
    assert candidate_version("v" * 58 + "." + "w" * 9, 7) == "v" * 58 + "-rt7"
    assert candidate_version("v" * 59, 7) == "v" * 59 + "-rt7"  # exactly 63
    assert candidate_version("v" * 60, 7) == "v" * 59 + "-rt7"
    assert candidate_version("1.0X", 2) == "1.0X-rt2"  # only separators are stripped
    assert candidate_version("1.0.", 2) == "1.0-rt2"
    assert run_name("iris-retrain", 1) == "iris-retrain-1"
    assert run_name("a" * 70, 12) == "a" * 60 + "-12"
    assert run_name("a" * 58 + "-." + "b" * 9, 12) == "a" * 58 + "-12"
    assert run_name("a" * 61, 12) == "a" * 60 + "-12"
    assert run_name("a" * 60, 12) == "a" * 60 + "-12"  # exactly 63
    assert run_name("abX", 1) == "abX-1"


def test_output_folder_joins_with_one_slash() -> None:
    assert output_folder("s3://models/iris/", "run-1") == "s3://models/iris/run-1"
    assert output_folder("s3://models/iris", "run-1") == "s3://models/iris/run-1"
    assert output_folder("s3://models/irisX/", "run-1") == "s3://models/irisX/run-1"


def test_check_candidate_the_runs_folder_and_a_missing_metric() -> None:
    run = run_of()
    good = training_result({"accuracy": 0.9})
    assert check_candidate(retraining(), run, good) is None  # no base metric: nothing to compare
    # The run's folder with its slash: iris-retrain-10's folder is not iris-retrain-1's.
    elsewhere = training_result({"accuracy": 0.9}, uri=f"{OUTPUT}/iris-retrain-10/model.onnx")
    assert check_candidate(retraining(), run, elsewhere) == (
        f"its model {OUTPUT}/iris-retrain-10/model.onnx is not in the run's folder "
        f"{OUTPUT}/iris-retrain-1/"
    )
    assert check_candidate(retraining(output={"uri": OUTPUT + "/"}), run, good) is None
    # No metric: refused when a floor or the base comparison needs it; the others sorted.
    assert check_candidate(retraining(), run, training_result({})) == (
        "it reported no held-out accuracy (it reported: none)"
    )
    others = training_result({"r2": 0.5, "f1_macro": 0.8})
    floor = retraining(validation={"minimum": 0.5, "notWorseThanBase": False})
    assert check_candidate(floor, run, others) == (
        "it reported no held-out accuracy (it reported: f1_macro, r2)"
    )
    lax = retraining(validation={"notWorseThanBase": False})
    assert check_candidate(lax, run, others) is None


def test_check_candidate_the_floor_and_the_ceiling_include_the_bound() -> None:
    run = run_of()
    floor = retraining(validation={"minimum": 0.9, "notWorseThanBase": False})
    assert check_candidate(floor, run, training_result({"accuracy": 0.9})) is None
    assert check_candidate(floor, run, training_result({"accuracy": 0.123456})) == (
        "held-out accuracy 0.1235, the policy wants at least 0.9"
    )
    ceiling = retraining(validation={"metric": "mae", "minimum": 0.25})
    assert check_candidate(ceiling, run, training_result({"mae": 0.25})) is None
    assert check_candidate(ceiling, run, training_result({"mae": 0.125})) is None
    assert check_candidate(ceiling, run, training_result({"mae": 0.5})) == (
        "held-out mae 0.5, the policy wants at most 0.25"
    )


def test_check_candidate_against_the_base_with_its_tolerance() -> None:
    run = run_of()
    tolerant = retraining(validation={"tolerance": 0.25})
    assert (
        check_candidate(tolerant, run, training_result({"accuracy": 0.5}, {"accuracy": 0.75}))
        is None
    )
    assert check_candidate(
        tolerant, run, training_result({"accuracy": 0.25}, {"accuracy": 0.75})
    ) == (
        "held-out accuracy 0.25 is worse than the model it replaces (0.75 on the same rows; "
        "tolerance 0.25)"
    )
    # Better than the base passes, the base's metric missing passes, the check off passes.
    strict = retraining()
    assert (
        check_candidate(strict, run, training_result({"accuracy": 0.8}, {"accuracy": 0.5})) is None
    )
    assert check_candidate(strict, run, training_result({"accuracy": 0.5}, {"r2": 0.9})) is None
    lax = retraining(validation={"notWorseThanBase": False})
    assert check_candidate(lax, run, training_result({"accuracy": 0.5}, {"accuracy": 0.9})) is None
    mae = retraining(validation={"metric": "mae", "tolerance": 0.25})
    assert check_candidate(mae, run, training_result({"mae": 1.0}, {"mae": 0.75})) is None
    assert check_candidate(mae, run, training_result({"mae": 0.5}, {"mae": 0.75})) is None
    assert check_candidate(mae, run, training_result({"mae": 1.5}, {"mae": 0.75})) == (
        "held-out mae 1.5 is worse than the model it replaces (0.75 on the same rows; "
        "tolerance 0.25)"
    )


def test_drift_report_is_the_monitoring_window_or_nothing() -> None:
    dep = drifted_mdep()
    assert dep.status.monitoring is not None
    assert drift_report(dep) == dep.status.monitoring.to_dict()
    assert drift_report(calm_mdep()) == {}


def test_the_jobs_env_is_exact_and_in_order() -> None:
    _, first = started()
    container = first.create[0]["spec"]["template"]["spec"]["containers"][0]
    monitoring = drifted_mdep().status.monitoring
    assert monitoring is not None
    assert container["env"] == [
        {"name": "CANARIUM_OUTPUT_URI", "value": f"{OUTPUT}/iris-retrain-1"},
        {"name": "CANARIUM_MODEL_NAME", "value": "iris"},
        {"name": "CANARIUM_MODEL_VERSION", "value": "1.0.0-rt1"},
        {"name": "CANARIUM_BASE_MODEL_URI", "value": "https://models.example.org/iris/1.0.0.onnx"},
        {"name": "CANARIUM_BASE_MODEL_VERSION", "value": "1.0.0"},
        {"name": "CANARIUM_TRAINING_TRIGGER", "value": "drift"},
        {"name": "CANARIUM_DEPLOYMENT", "value": "iris"},
        {"name": "CANARIUM_NAMESPACE", "value": "ml"},
        {"name": "CANARIUM_RESULT_FILE", "value": "/dev/termination-log"},
        {
            "name": "CANARIUM_DRIFT_REPORT",
            "value": json.dumps(monitoring.to_dict(), separators=(",", ":")),
        },
        {"name": "EPOCHS", "value": "3"},
    ]
    assert first.create[0]["spec"]["template"]["metadata"] == {
        "labels": {"canarium.dev/run": "iris-retrain-1"}
    }


def test_the_env_of_a_run_from_a_model_with_a_digest_in_a_namespaceless_deployment() -> None:
    dep = with_spec_model(calm_mdep(), sha256=SHA_A)
    dep.metadata.namespace = None
    p = plan(asked(retraining()), dep)
    env = env_of(p.create[0])
    assert env["CANARIUM_BASE_MODEL_SHA256"] == SHA_A
    assert env["CANARIUM_NAMESPACE"] == ""
    assert env["CANARIUM_TRAINING_TRIGGER"] == "manual"
    assert "CANARIUM_DRIFT_REPORT" not in env


def test_render_job_keeps_what_the_template_sets_and_adds_the_rest() -> None:
    template = {
        "metadata": {
            "labels": {"team": "ml", "canarium.dev/run": "mine"},
            "annotations": {"owner": "ana", "canarium.dev/trigger": "mine"},
        },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": {"app": "trainer"}, "annotations": {"a": "b"}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {"name": "train", "env": [{"name": "X", "value": "1"}]},
                        {"name": "sidecar"},
                    ],
                    "initContainers": [{"name": "init"}],
                },
            },
        },
    }
    obj = retraining(jobTemplate=template)
    run = run_of(trigger="schedule")
    env = {"A": "1", "X": "2"}
    job = render_job(obj, drifted_mdep(), run, env)
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "iris-retrain-1",
            "namespace": "ml",
            "labels": {
                "team": "ml",
                "app.kubernetes.io/managed-by": "canarium",
                "canarium.dev/retraining": "iris-retrain",
                "canarium.dev/run": "iris-retrain-1",
            },
            "annotations": {
                "owner": "ana",
                "canarium.dev/trigger": "schedule",
                "canarium.dev/deployment": "iris",
            },
            "ownerReferences": [
                {
                    "apiVersion": "canarium.dev/v1alpha1",
                    "kind": "ModelRetraining",
                    "name": "iris-retrain",
                    "uid": "uid-r",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {
                    "labels": {"app": "trainer", "canarium.dev/run": "iris-retrain-1"},
                    "annotations": {"a": "b"},
                },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "train",
                            "env": [{"name": "A", "value": "1"}, {"name": "X", "value": "2"}],
                        },
                        {
                            "name": "sidecar",
                            "env": [{"name": "A", "value": "1"}, {"name": "X", "value": "2"}],
                        },
                    ],
                    "initContainers": [{"name": "init"}],
                },
            },
        },
    }
    # The template itself is not touched.
    assert obj.spec.job_template.spec == template["spec"]
    assert obj.spec.job_template.metadata == template["metadata"]


def test_render_job_of_a_bare_template() -> None:
    obj = retraining(jobTemplate={"spec": {"template": {"spec": {"containers": [{"name": "t"}]}}}})
    job = render_job(obj, drifted_mdep(), run_of(), {})
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "canarium",
        "canarium.dev/retraining": "iris-retrain",
        "canarium.dev/run": "iris-retrain-1",
    }
    assert job["metadata"]["annotations"] == {
        "canarium.dev/trigger": "manual",
        "canarium.dev/deployment": "iris",
    }
    assert job["spec"] == {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"canarium.dev/run": "iris-retrain-1"}},
            "spec": {"containers": [{"name": "t", "env": []}], "restartPolicy": "Never"},
        },
    }


# --- following the Jobs -----------------------------------------------------------------------


def test_a_failed_job_without_a_reason_or_an_end_time() -> None:
    obj, _ = started()
    failed = JobObservation("iris-retrain-1", "Failed")
    p = plan(obj, drifted_mdep(), {"iris-retrain-1": failed}, now=NOW + timedelta(minutes=5))
    run = after(obj, p).status.runs[0]
    assert (run.phase, run.message) == ("Failed", "its Job failed: no reason given")
    assert run.completion_time == NOW + timedelta(minutes=5)
    assert events_of(p) == [
        ("Warning", "RetrainingFailed", "run iris-retrain-1: its Job failed: no reason given")
    ]


def test_a_jobs_completion_time_is_the_runs() -> None:
    obj, _ = started()
    ended = NOW + timedelta(minutes=3)
    later = NOW + timedelta(minutes=5)
    failed = JobObservation("iris-retrain-1", "Failed", "OOMKilled", completion_time=ended)
    p = plan(obj, drifted_mdep(), {"iris-retrain-1": failed}, now=later)
    assert after(obj, p).status.runs[0].completion_time == ended
    done = JobObservation("iris-retrain-1", "Succeeded", completion_time=ended, result=result())
    p = plan(obj, drifted_mdep(), {"iris-retrain-1": done}, now=later)
    assert after(obj, p).status.runs[0].completion_time == ended
    done = JobObservation("iris-retrain-1", "Succeeded", result=result())
    p = plan(obj, drifted_mdep(), {"iris-retrain-1": done}, now=later)
    assert after(obj, p).status.runs[0].completion_time == later


def test_a_job_gone_is_a_warning() -> None:
    obj, _ = started()
    p = plan(obj, drifted_mdep(), {})
    assert events_of(p) == [("Warning", "RetrainingFailed", "run iris-retrain-1: its Job is gone")]


def test_every_running_run_is_followed_whatever_comes_before_it() -> None:
    runs = [
        {"name": "iris-retrain-2", "trigger": "manual", "phase": "Failed",
         "startTime": "2026-11-23T11:30:00Z"},
        {"name": "iris-retrain-1", "trigger": "manual", "phase": "Running",
         "startTime": "2026-11-23T11:00:00Z"},
    ]  # fmt: skip
    obj = retraining(status={"runs": runs, "runsStarted": 2})
    jobs = {"iris-retrain-1": JobObservation("iris-retrain-1", "Failed", "x")}
    phases = {r.name: r.phase for r in after(obj, plan(obj, calm_mdep(), jobs)).status.runs}
    assert phases == {"iris-retrain-2": "Failed", "iris-retrain-1": "Failed"}


def test_a_job_without_a_result_fails_the_run_with_the_whole_message() -> None:
    obj, _ = started()
    p = succeeded(obj, None)
    message = (
        "its Job succeeded but reported no model: the training container must end with "
        "canarium_serving.packaging's TrainingContext.report_result (it writes "
        "CANARIUM_RESULT_FILE, the termination message)"
    )
    assert after(obj, p).status.runs[0].message == message
    assert events_of(p) == [("Warning", "RetrainingFailed", f"run iris-retrain-1: {message}")]


def test_a_garbled_result_fails_the_run_and_names_it() -> None:
    obj, _ = started()
    p = succeeded(obj, "{not json")
    message = after(obj, p).status.runs[0].message
    assert message is not None
    assert message.startswith("run iris-retrain-1's result: not JSON: ")
    assert events_of(p) == [("Warning", "RetrainingFailed", message)]
    obj = after(obj, p)
    assert obj.status.consecutive_failures == 1


def test_a_result_when_the_deployment_is_gone_fails_the_run() -> None:
    obj, _ = started()
    job = JobObservation("iris-retrain-1", "Succeeded", result=result())
    p = plan(obj, None, {"iris-retrain-1": job})
    obj = after(obj, p)
    run = obj.status.runs[0]
    assert (run.phase, run.message) == ("Failed", "its ModelDeployment is gone")
    assert run.model is not None
    assert obj.status.candidate is None
    assert obj.status.consecutive_failures == 1
    assert obj.status.cooldown_until == NOW + timedelta(hours=2)
    assert p.events == []
    assert not p.candidate_changed


def test_an_accepted_candidate_the_run_and_the_event_in_full() -> None:
    dep = with_spec_model(drifted_mdep(), sha256=SHA_A)
    obj = after(retraining(), plan(retraining(), dep))  # the run starts from this spec.model
    job = JobObservation("iris-retrain-1", "Succeeded", completion_time=NOW, result=result())
    p = plan(obj, dep, {"iris-retrain-1": job})
    obj = after(obj, p)
    run = obj.status.runs[0]
    model = {"uri": f"{OUTPUT}/iris-retrain-1/model.onnx", "version": "1.0.0-rt1", "sha256": SHA_B}
    assert run.model is not None
    assert run.model.to_dict() == model
    assert run.message == (
        "candidate 1.0.0-rt1 (held-out accuracy 0.97, the model it replaces 0.93) is rolled out "
        "as the canary"
    )
    assert run.revision == candidate_revision(dep, run.model)
    assert events_of(p) == [
        (
            "Normal",
            "CandidateAccepted",
            "run iris-retrain-1: 1.0.0-rt1 (held-out accuracy 0.97, the model it replaces 0.93) "
            "is the next canary of iris",
        )
    ]
    assert p.status["candidate"] == {
        "run": "iris-retrain-1",
        "model": model,
        "replaces": {
            "uri": "https://models.example.org/iris/1.0.0.onnx",
            "version": "1.0.0",
            "sha256": SHA_A,
        },
        "approved": True,
        "acceptedTime": "2026-11-23T12:00:00Z",
    }
    # Accepted is no end: no cooldown, no failure count.
    assert obj.status.cooldown_until is None
    assert obj.status.consecutive_failures == 0
    # The digest of spec.model is part of what it replaces: it stays next time.
    assert after(obj, plan(obj, dep)).status.candidate is not None


def test_an_accepted_candidate_without_the_metric_nor_a_base() -> None:
    lax = retraining(validation={"metric": "r2", "notWorseThanBase": False})
    obj, _ = started(lax)
    p = succeeded(obj, result())
    assert after(obj, p).status.runs[0].message == (
        "candidate 1.0.0-rt1 (no held-out r2) is rolled out as the canary"
    )
    text = TrainingResult(
        name="iris",
        version="1.0.0-rt1",
        model_uri=f"{OUTPUT}/iris-retrain-1/model.onnx",
        sha256=SHA_B,
        metrics={"accuracy": 0.97},
    ).dump()
    obj, _ = started()
    p = succeeded(obj, text)
    assert after(obj, p).status.runs[0].message == (
        "candidate 1.0.0-rt1 (held-out accuracy 0.97) is rolled out as the canary"
    )


def test_a_rejected_candidate_is_a_warning_with_the_reason() -> None:
    obj, _ = started()
    p = succeeded(obj, result(accuracy=0.90, base=0.93))
    assert events_of(p) == [
        (
            "Warning",
            "CandidateRejected",
            "run iris-retrain-1: candidate 1.0.0-rt1 rejected: held-out accuracy 0.9 is worse "
            "than the model it replaces (0.93 on the same rows; tolerance 0)",
        )
    ]
    run = after(obj, p).status.runs[0]
    assert run.model is not None  # what it made is kept, for the record
    assert run.metrics == {"accuracy": 0.9, "f1_macro": 0.9}


def test_a_candidate_awaiting_approval_in_full() -> None:
    obj, _ = started(retraining(approval="Manual"))
    p = succeeded(obj, result())
    obj = after(obj, p)
    run = obj.status.runs[0]
    assert run.message == (
        "candidate 1.0.0-rt1 (held-out accuracy 0.97, the model it replaces 0.93) waits for "
        "`kubectl canarium retrain iris-retrain --approve`"
    )
    assert run.model is not None
    assert run.revision == candidate_revision(drifted_mdep(), run.model)
    assert events_of(p) == [
        (
            "Normal",
            "CandidateAwaitingApproval",
            "run iris-retrain-1: 1.0.0-rt1 (held-out accuracy 0.97, the model it replaces 0.93)",
        )
    ]
    assert p.candidate_changed
    assert obj.status.message == run.message
    approved = with_annotations(obj, **{"canarium.dev/approve-run": "iris-retrain-1"})
    p = plan(approved, drifted_mdep())
    obj = after(approved, p)
    assert obj.status.runs[0].message == "candidate 1.0.0-rt1 approved; rolled out as the canary"
    assert obj.status.runs[0].revision == run.revision
    assert obj.status.candidate is not None
    assert obj.status.candidate.approved
    assert events_of(p) == [("Normal", "CandidateApproved", "run iris-retrain-1 approved")]
    # Approved: the next pass leaves it as it is.
    again = plan(obj, drifted_mdep())
    assert again.events == []
    assert not again.candidate_changed


def test_a_newer_candidate_supersedes_a_canarying_one_without_falling_back_to_it() -> None:
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
    runs = {r.name: r for r in obj.status.runs}
    assert runs["iris-retrain-1"].message == "a newer candidate came from run iris-retrain-2"
    candidate = obj.status.candidate
    assert candidate is not None
    assert (candidate.fallback_run, candidate.fallback_model) == (None, None)
    # A superseded run is no failure; its end starts the cooldown.
    assert obj.status.consecutive_failures == 0
    assert obj.status.cooldown_until == NOW + timedelta(hours=1)


def test_a_newer_candidate_inherits_the_fallback_of_the_one_it_supersedes() -> None:
    obj, first_revision = promoted_then_second()
    candidate = obj.status.candidate
    assert candidate is not None
    data = obj.model_dump(by_alias=True, mode="json")
    data["status"]["runs"].insert(
        0,
        {
            "name": "iris-retrain-3",
            "trigger": "manual",
            "phase": "Running",
            "startTime": "2026-11-23T12:00:01Z",
        },
    )
    obj = ModelRetraining.model_validate(data)
    serving = drifted_mdep(stable={"name": first_revision, "modelVersion": "1.0.0-rt1"})
    text = result(run="iris-retrain-3").replace("1.0.0-rt1", "1.0.0-rt3")
    job = JobObservation("iris-retrain-3", "Succeeded", result=text)
    obj = after(obj, plan(obj, serving, {"iris-retrain-3": job}))
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {
        "iris-retrain-3": "Canarying",
        "iris-retrain-2": "Superseded",
        "iris-retrain-1": "Promoted",
    }
    third = obj.status.candidate
    assert third is not None
    assert third.run == "iris-retrain-3"
    assert (third.fallback_run, third.fallback_model) == (
        "iris-retrain-1",
        candidate.fallback_model,
    )


def test_a_fallback_run_without_its_model_is_no_fallback() -> None:
    obj, _ = promoted_then_second()
    candidate = obj.status.candidate
    assert candidate is not None
    data = obj.model_dump(by_alias=True, mode="json")
    del data["status"]["candidate"]["fallbackModel"]
    data["status"]["runs"].insert(
        0,
        {
            "name": "iris-retrain-3",
            "trigger": "manual",
            "phase": "Running",
            "startTime": "2026-11-23T12:00:01Z",
        },
    )
    obj = ModelRetraining.model_validate(data)
    text = result(run="iris-retrain-3").replace("1.0.0-rt1", "1.0.0-rt3")
    job = JobObservation("iris-retrain-3", "Succeeded", result=text)
    third = after(obj, plan(obj, drifted_mdep(), {"iris-retrain-3": job})).status.candidate
    assert third is not None
    assert (third.fallback_run, third.fallback_model) == (None, None)


def test_git_moving_while_the_next_run_trains_supersedes_what_it_makes() -> None:
    """The candidate of a run that ends with Git moved in the same pass replaces what the
    candidate before it replaced: Git wins over it at once."""
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
    moved = mdep("2.0.0", status=drifted_mdep().status.to_dict())
    text = result(run="iris-retrain-2").replace("1.0.0-rt1", "1.0.0-rt2")
    job = JobObservation("iris-retrain-2", "Succeeded", result=text)
    p = plan(obj, moved, {"iris-retrain-2": job})
    obj = after(obj, p)
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {"iris-retrain-2": "Superseded", "iris-retrain-1": "Superseded"}
    assert obj.status.candidate is None


# --- the candidate's life ---------------------------------------------------------------------


def test_git_moving_supersedes_with_a_normal_event_and_keeps_the_failure_count() -> None:
    obj = with_status(canarying(), consecutiveFailures=2)
    moved = mdep("2.0.0", status=drifted_mdep().status.to_dict())
    p = plan(obj, moved)
    message = "spec.model changed in Git (to 2.0.0): Git wins over candidate 1.0.0-rt1"
    assert events_of(p) == [("Normal", "CandidateSuperseded", message)]
    assert p.candidate_changed
    obj = after(obj, p)
    assert obj.status.consecutive_failures == 2
    assert obj.status.cooldown_until == NOW + timedelta(hours=4)


def test_discarding_in_full_and_the_failure_count_stays() -> None:
    obj = with_status(canarying(), consecutiveFailures=2)
    discarded = with_annotations(obj, **{"canarium.dev/discard-run": "iris-retrain-1"})
    p = plan(discarded, drifted_mdep())
    message = "candidate 1.0.0-rt1 discarded by a person: back to spec.model 1.0.0"
    assert events_of(p) == [("Normal", "CandidateDiscarded", message)]
    assert p.candidate_changed
    obj = after(discarded, p)
    assert obj.status.runs[0].message == message
    assert obj.status.consecutive_failures == 2
    assert obj.status.cooldown_until == NOW + timedelta(hours=4)
    # Discarding another run changes nothing.
    other = with_annotations(canarying(), **{"canarium.dev/discard-run": "iris-retrain-9"})
    p = plan(other, drifted_mdep())
    assert p.events == []
    assert after(other, p).status.runs[0].phase == "Canarying"


def test_discarding_a_promoted_candidate_ends_its_run() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    serving = drifted_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    obj = after(obj, plan(obj, serving))
    discarded = with_annotations(obj, **{"canarium.dev/discard-run": "iris-retrain-1"})
    obj = after(discarded, plan(discarded, serving))
    assert obj.status.runs[0].phase == "Discarded"
    assert obj.status.candidate is None


def test_discarding_the_second_candidate_falls_back_to_the_promoted_one() -> None:
    obj, first_revision = promoted_then_second()
    serving = drifted_mdep(stable={"name": first_revision, "modelVersion": "1.0.0-rt1"})
    discarded = with_annotations(obj, **{"canarium.dev/discard-run": "iris-retrain-2"})
    p = plan(discarded, serving, now=NOW + timedelta(minutes=1))
    assert p.candidate_changed
    assert p.status["candidate"] == {
        "run": "iris-retrain-1",
        "model": {
            "uri": f"{OUTPUT}/iris-retrain-1/model.onnx",
            "version": "1.0.0-rt1",
            "sha256": SHA_B,
        },
        "replaces": {"uri": "https://models.example.org/iris/1.0.0.onnx", "version": "1.0.0"},
        "approved": True,
        "acceptedTime": "2026-11-23T12:01:00Z",
    }
    phases = {r["name"]: r["phase"] for r in p.status["runs"]}
    assert phases == {"iris-retrain-2": "Discarded", "iris-retrain-1": "Promoted"}


def test_a_candidate_whose_run_left_the_history_is_kept_or_discarded_without_it() -> None:
    obj = canarying()
    kept = with_status(obj, runs=[])
    p = plan(kept, calm_mdep())
    assert p.status["candidate"]["run"] == "iris-retrain-1"
    assert p.events == []
    discarded = with_annotations(kept, **{"canarium.dev/discard-run": "iris-retrain-1"})
    p = plan(discarded, calm_mdep())
    assert "candidate" not in p.status
    assert p.status["runs"] == []
    assert p.status["consecutiveFailures"] == 0
    assert p.status.get("cooldownUntil") is None


def test_a_candidate_stays_while_its_deployment_is_missing() -> None:
    obj = canarying()
    p = plan(obj, None)
    assert p.status["candidate"] == obj.status.to_dict()["candidate"]
    assert p.status["runs"][0]["phase"] == "Canarying"
    assert p.events == []


def test_a_rollback_names_the_reason_of_the_history_entry_or_its_outcome() -> None:
    obj, first_revision = promoted_then_second()
    second_revision = obj.status.runs[0].revision

    def rolled_back(**entry: Any) -> RetrainingPlan:
        dep = drifted_mdep(
            stable={"name": first_revision, "modelVersion": "1.0.0-rt1"},
            history=[{"revision": second_revision, "time": "2026-11-23T12:00:00Z", **entry}],
        )
        return plan(obj, dep)

    p = rolled_back(outcome="RolledBack", reason="predictionDrift PSI 0.9 > 0.25")
    message = "candidate 1.0.0-rt2 rolled back: predictionDrift PSI 0.9 > 0.25"
    assert events_of(p) == [("Warning", "CandidateRolledBack", f"run iris-retrain-2: {message}")]
    assert p.status["runs"][0]["message"] == message
    p = rolled_back(outcome="Aborted")
    assert p.status["runs"][0]["message"] == "candidate 1.0.0-rt2 rolled back: Aborted"
    assert p.status["runs"][0]["phase"] == "RolledBack"
    p = rolled_back(outcome="Promoted")
    assert p.status["runs"][0]["phase"] == "Canarying"
    assert p.events == []


def test_an_abort_names_its_message_or_its_cause_and_only_its_revision() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    aborted = {"revision": revision, "cause": "AnalysisFailed", "time": "2026-11-23T11:00:00Z"}
    p = plan(obj, drifted_mdep(aborted=aborted))
    assert p.status["runs"][0]["message"] == "candidate 1.0.0-rt1 rolled back: AnalysisFailed"
    other = {**aborted, "revision": "iris-otherrev", "message": "not this one"}
    p = plan(obj, drifted_mdep(aborted=other))
    assert p.status["runs"][0]["phase"] == "Canarying"
    assert p.events == []


def test_a_promoted_candidate_rolled_back_in_its_bake_is_withdrawn() -> None:
    obj = canarying()
    revision = obj.status.runs[0].revision
    serving = drifted_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    obj = after(obj, plan(obj, serving))
    assert obj.status.runs[0].phase == "Promoted"
    baked = drifted_mdep(
        stable={"name": name_of(mdep()), "modelVersion": "1.0.0"},
        history=[
            {
                "revision": revision,
                "outcome": "RolledBack",
                "time": "2026-11-23T12:00:00Z",
                "reason": "bake failed",
            }
        ],
    )
    p = plan(obj, baked)
    obj = after(obj, p)
    assert obj.status.runs[0].phase == "RolledBack"
    assert obj.status.runs[0].message == "candidate 1.0.0-rt1 rolled back: bake failed"
    assert obj.status.candidate is None
    assert obj.status.consecutive_failures == 1


def test_promotion_in_full_resets_the_failures() -> None:
    obj = with_status(canarying(), consecutiveFailures=3)
    revision = obj.status.runs[0].revision
    serving = drifted_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    # Still a canary beside it: not promoted yet.
    rolling = drifted_mdep(
        stable={"name": revision, "modelVersion": "1.0.0-rt1"},
        canary={"name": "iris-newrev", "modelVersion": "2.0.0"},
    )
    assert plan(obj, rolling).status["runs"][0]["phase"] == "Canarying"
    p = plan(obj, serving)
    message = "candidate 1.0.0-rt1 promoted: it serves all traffic"
    assert events_of(p) == [("Normal", "CandidatePromoted", f"run iris-retrain-1: {message}")]
    assert not p.candidate_changed  # the model served stays the same
    obj = after(obj, p)
    assert obj.status.consecutive_failures == 0
    assert obj.status.cooldown_until == NOW + timedelta(hours=1)
    # Promoted once: the next pass changes nothing.
    again = plan(obj, serving)
    assert again.events == []
    assert again.status["runs"][0]["message"] == message


def test_promoting_the_second_candidate_drops_its_fallback_entirely() -> None:
    obj, _ = promoted_then_second()
    second_revision = obj.status.runs[0].revision
    dep = drifted_mdep(stable={"name": second_revision, "modelVersion": "1.0.0-rt2"})
    p = plan(obj, dep)
    assert "fallbackRun" not in p.status["candidate"]
    assert "fallbackModel" not in p.status["candidate"]
    assert p.status["candidate"]["run"] == "iris-retrain-2"


# --- new runs -----------------------------------------------------------------------------------


def test_a_run_started_in_full() -> None:
    p = plan(asked(retraining(), "2026-11-23T11:59Z"), calm_mdep())
    assert events_of(p) == [
        (
            "Normal",
            "RetrainingStarted",
            "run iris-retrain-1 (manual: requested at 2026-11-23T11:59Z)",
        )
    ]
    assert p.status["runs"] == [
        {
            "name": "iris-retrain-1",
            "trigger": "manual",
            "reason": "requested at 2026-11-23T11:59Z",
            "phase": "Running",
            "message": "Job iris-retrain-1 trains 1.0.0-rt1",
            "startTime": "2026-11-23T12:00:00Z",
            "base": {"uri": "https://models.example.org/iris/1.0.0.onnx", "version": "1.0.0"},
            "metrics": {},
            "baseMetrics": {},
        }
    ]
    assert p.status["handledRequest"] == "2026-11-23T11:59Z"
    assert p.status["runsStarted"] == 1
    assert p.requeue_after is None  # nothing to wait for: the Job's end wakes it


def test_a_long_drift_message_is_cut_for_the_run_and_the_event() -> None:
    long = "x" * 2000
    dep = drifted_mdep(
        conditions=[
            {
                "type": "Drifted",
                "status": "True",
                "reason": "Drifted",
                "message": long,
                "lastTransitionTime": "2026-11-23T11:50:00Z",
            }
        ]
    )
    p = plan(retraining(), dep)
    assert p.status["runs"][0]["reason"] == "x" * 1024
    assert events_of(p) == [
        ("Normal", "RetrainingStarted", ("run iris-retrain-1 (drift: " + long)[:1024])
    ]


def test_drift_counts_only_when_its_condition_is_true_and_watched_on_the_stable() -> None:
    def drifted(**status: Any) -> list[dict[str, Any]]:
        return plan(retraining(), drifted_mdep(**status)).create

    assert [j["metadata"]["name"] for j in drifted()] == ["iris-retrain-1"]
    false = {"type": "Drifted", "status": "False", "reason": "NoDrift", "message": "",
             "lastTransitionTime": "2026-11-23T11:50:00Z"}  # fmt: skip
    assert drifted(conditions=[false]) == []
    assert drifted(conditions=[]) == []
    assert drifted(monitoring=None) == []
    assert drifted(stable=None) == []


def test_busy_says_why_when_the_schedule_fires() -> None:
    nightly = {"onDrift": False, "schedule": "0 3 * * *"}
    at = datetime.fromisoformat("2026-11-24T03:00:00+00:00")

    def skipped(obj: ModelRetraining, dep: ModelDeployment, *jobs: str) -> RetrainingPlan:
        p = plan(obj, dep, {n: JobObservation(n, "Active") for n in jobs}, now=at)
        assert p.create == []
        assert [(e.type, e.reason) for e in p.events] == [("Normal", "ScheduleSkipped")]
        return p

    running = [
        {"name": f"iris-retrain-{i}", "trigger": "manual", "phase": "Running",
         "startTime": "2026-11-23T11:00:00Z"}
        for i in (1, 2)
    ]  # fmt: skip
    two = retraining(status={"runs": running, "runsStarted": 2}, triggers=nightly, maxConcurrent=2)
    p = skipped(two, calm_mdep(), "iris-retrain-1", "iris-retrain-2")
    assert p.events[0].message == "the schedule fired while 2 run(s) under way (maxConcurrent 2)"
    p = skipped(with_spec(canarying(), triggers=nightly), drifted_mdep())
    assert p.events[0].message == (
        "the schedule fired while candidate 1.0.0-rt1 of run iris-retrain-1 is Canarying"
    )
    rolling = drifted_mdep(canary={"name": "iris-newrev", "modelVersion": "2.0.0"})
    p = skipped(retraining(triggers=nightly), rolling)
    assert p.events[0].message == "the schedule fired while iris is rolling out"


def test_the_schedule_wins_over_drift_and_a_request_over_both() -> None:
    nightly = {"schedule": "0 3 * * *"}
    at = datetime.fromisoformat("2026-11-24T03:00:00+00:00")
    p = plan(retraining(triggers=nightly), drifted_mdep(), now=at)
    assert p.status["runs"][0]["trigger"] == "schedule"
    assert p.status["runs"][0]["reason"] == "schedule 0 3 * * *"
    p = plan(asked(retraining(triggers=nightly), "x"), drifted_mdep(), now=at)
    assert p.status["runs"][0]["trigger"] == "manual"
    assert p.status["lastScheduleTime"] == "2026-11-24T03:00:00Z"  # consumed all the same
    # An empty request is none.
    assert plan(asked(retraining(), ""), calm_mdep()).create == []


def test_the_schedule_counts_from_its_last_time_or_from_now_without_a_creation_time() -> None:
    nightly = {"onDrift": False, "schedule": "0 3 * * *"}
    last = retraining(status={"lastScheduleTime": "2026-11-24T03:00:00Z"}, triggers=nightly)
    p = plan(last, calm_mdep(), now=datetime.fromisoformat("2026-11-24T12:00:00+00:00"))
    assert p.create == []
    assert p.status["nextScheduleTime"] == "2026-11-25T03:00:00Z"
    assert p.status["lastScheduleTime"] == "2026-11-24T03:00:00Z"
    assert p.requeue_after == 15 * 3600 + 0.5
    fresh = retraining(triggers=nightly)
    fresh.metadata.creation_timestamp = None
    at = datetime.fromisoformat("2026-11-24T03:00:00+00:00")
    p = plan(fresh, calm_mdep(), now=at)
    assert p.create == []  # strictly after now
    assert p.status["nextScheduleTime"] == "2026-11-25T03:00:00Z"
    assert "lastScheduleTime" not in p.status


def test_the_schedule_keeps_its_times_when_nothing_may_start_and_forgets_them_when_removed() -> (
    None
):
    nightly = {"onDrift": False, "schedule": "0 3 * * *"}
    at = datetime.fromisoformat("2026-11-24T03:00:00+00:00")
    for p in (
        plan(retraining(triggers=nightly), None, now=at),
        plan(retraining(triggers=nightly, suspend=True), calm_mdep(), now=at),
        plan(retraining(triggers=nightly), calm_mdep(), now=at, claimed_by="older"),
    ):
        assert p.create == []
        assert p.events == []
        assert p.status["lastScheduleTime"] == "2026-11-24T03:00:00Z"
        assert p.status["nextScheduleTime"] == "2026-11-25T03:00:00Z"
    removed = retraining(
        status={
            "lastScheduleTime": "2026-11-24T03:00:00Z",
            "nextScheduleTime": "2026-11-25T03:00:00Z",
        }
    )
    p = plan(removed, calm_mdep(), now=at)
    assert "lastScheduleTime" not in p.status
    assert "nextScheduleTime" not in p.status


def test_requeue_waits_for_the_cooldown_only_when_drift_waits_for_it() -> None:
    cooling = retraining(status={"cooldownUntil": "2026-11-23T13:00:00Z"})
    assert plan(cooling, drifted_mdep()).requeue_after == 3600.5
    assert plan(cooling, calm_mdep()).requeue_after is None
    soon = retraining(status={"cooldownUntil": "2026-11-23T12:00:00.250000Z"})
    assert plan(soon, drifted_mdep()).requeue_after == 0.75


def test_a_cooldown_ending_now_lets_drift_start_a_run() -> None:
    ending = retraining(status={"cooldownUntil": "2026-11-23T12:00:00Z"})
    assert [j["metadata"]["name"] for j in plan(ending, drifted_mdep()).create] == [
        "iris-retrain-1"
    ]


def test_backoff_doubles_per_failure_up_to_sixteen_times() -> None:
    for failures, hours in ((0, 2), (1, 4), (2, 8), (3, 16), (4, 16)):
        obj = retraining(status={"consecutiveFailures": failures})
        obj, _ = started(obj)
        failed = {"iris-retrain-1": JobObservation("iris-retrain-1", "Failed", "x")}
        obj = after(obj, plan(obj, drifted_mdep(), failed))
        assert obj.status.consecutive_failures == failures + 1
        assert obj.status.cooldown_until == NOW + timedelta(hours=hours), failures
    short = retraining(cooldown="30m")
    short, _ = started(short)
    failed = {"iris-retrain-1": JobObservation("iris-retrain-1", "Failed", "x")}
    assert after(short, plan(short, drifted_mdep(), failed)).status.cooldown_until == (
        NOW + timedelta(hours=1)
    )


# --- the history ---------------------------------------------------------------------------------


def test_pruning_deletes_the_oldest_finished_jobs_first_and_never_a_running_one() -> None:
    runs = [
        {
            "name": f"iris-retrain-{i}",
            "trigger": "manual",
            "phase": "Running" if i == 1 else "Failed",
            "startTime": f"2026-11-23T0{i}:00:00Z",
        }
        for i in range(1, 6)
    ]
    obj = retraining(status={"runs": runs, "runsStarted": 5}, historyLimit=1, maxConcurrent=2)
    jobs = {
        r["name"]: JobObservation(r["name"], "Active" if r["phase"] == "Running" else "Failed", "x")
        for r in runs
        if r["name"] != "iris-retrain-3"  # already gone
    }
    p = plan(obj, calm_mdep(), jobs)
    assert p.delete == ["iris-retrain-4", "iris-retrain-2"]
    none = retraining(status={"runs": runs, "runsStarted": 5}, historyLimit=0, maxConcurrent=2)
    assert plan(none, calm_mdep(), jobs).delete == [
        "iris-retrain-5",
        "iris-retrain-4",
        "iris-retrain-2",
    ]


def test_runs_are_kept_newest_first_ten_at_most_the_number_breaking_ties() -> None:
    runs = [
        {"name": f"iris-retrain-{i}", "trigger": "manual", "phase": "Failed",
         "startTime": "2026-11-23T10:00:00Z"}
        for i in range(1, 11)
    ]  # fmt: skip
    obj = retraining(status={"runs": runs, "runsStarted": 10})
    p = plan(obj, calm_mdep())
    assert [r["name"] for r in p.status["runs"]] == [f"iris-retrain-{i}" for i in range(10, 0, -1)]
    p = plan(asked(obj), calm_mdep())  # the eleventh: the oldest goes
    names = [r["name"] for r in p.status["runs"]]
    assert names == ["iris-retrain-11"] + [f"iris-retrain-{i}" for i in range(10, 1, -1)]
    odd = [
        {"name": "manual-run", "trigger": "manual", "phase": "Failed",
         "startTime": "2026-11-23T10:00:00Z"},
        {"name": "iris-retrain-1", "trigger": "manual", "phase": "Failed",
         "startTime": "2026-11-23T10:00:00Z"},
    ]  # fmt: skip
    p = plan(retraining(status={"runs": odd, "runsStarted": 1}), calm_mdep())
    assert [r["name"] for r in p.status["runs"]] == ["iris-retrain-1", "manual-run"]


# --- phase, message and conditions -----------------------------------------------------------


def conditions(
    ready: tuple[str, str], reconciling: tuple[str, str], stalled: tuple[str, str], message: str
) -> dict[str, tuple[Any, ...]]:
    """The three conditions as `conditions_of` gives them, all changed now, generation 1."""
    at = "2026-11-23T12:00:00Z"
    return {
        "Ready": (*ready, at, message, 1),
        "Reconciling": (*reconciling, at, message, 1),
        "Stalled": (*stalled, at, message, 1),
    }


def test_idle_without_a_run() -> None:
    p = plan(retraining(), calm_mdep())
    assert (p.status["phase"], p.status["message"]) == ("Idle", "no run yet")
    assert conditions_of(p.status) == conditions(
        ("True", "Idle"), ("False", "Idle"), ("False", "AsExpected"), "no run yet"
    )
    assert p.status["observedGeneration"] == 1
    assert p.requeue_after is None
    assert (p.create, p.delete, p.events, p.candidate_changed) == ([], [], [], False)


def test_idle_after_a_failed_run_is_not_ready() -> None:
    obj = after(asked(retraining()), plan(asked(retraining()), calm_mdep()))
    failed = {"iris-retrain-1": JobObservation("iris-retrain-1", "Failed", "x")}
    p = plan(obj, calm_mdep(), failed)
    message = "last run iris-retrain-1: Failed (its Job failed: x)"
    assert (p.status["phase"], p.status["message"]) == ("Idle", message)
    assert conditions_of(p.status) == conditions(
        ("False", "RunFailed"), ("False", "Idle"), ("False", "AsExpected"), message
    )


def test_idle_after_a_run_without_a_message() -> None:
    runs = [{"name": "iris-retrain-1", "trigger": "manual", "phase": "Superseded",
             "startTime": "2026-11-23T10:00:00Z"}]  # fmt: skip
    p = plan(retraining(status={"runs": runs, "runsStarted": 1}), calm_mdep())
    assert p.status["message"] == "last run iris-retrain-1: Superseded"
    assert conditions_of(p.status)["Ready"][:2] == ("True", "Idle")


def test_a_long_message_is_cut() -> None:
    runs = [{"name": "iris-retrain-1", "trigger": "manual", "phase": "Failed",
             "message": "y" * 1024, "startTime": "2026-11-23T10:00:00Z"}]  # fmt: skip
    p = plan(retraining(status={"runs": runs, "runsStarted": 1}), calm_mdep())
    expected = ("last run iris-retrain-1: Failed (" + "y" * 1024)[:1024]
    assert p.status["message"] == expected
    assert conditions_of(p.status)["Ready"][3] == expected


def test_training_conditions_and_the_newest_running_run() -> None:
    _, first = started()
    message = "run iris-retrain-1: Job iris-retrain-1 trains 1.0.0-rt1"
    assert conditions_of(first.status) == conditions(
        ("True", "Training"), ("False", "Training"), ("False", "AsExpected"), message
    )
    two = retraining(maxConcurrent=2)
    obj = after(asked(two, "a"), plan(asked(two, "a"), calm_mdep()))
    running = {"iris-retrain-1": JobObservation("iris-retrain-1", "Active")}
    p = plan(asked(obj, "b"), calm_mdep(), running, now=NOW + timedelta(seconds=1))
    assert p.status["message"] == "run iris-retrain-2: Job iris-retrain-2 trains 1.0.0-rt2"
    # Suspended while a run is under way: it is Training still.
    suspended = with_spec(obj, suspend=True)
    assert plan(suspended, calm_mdep(), running).status["phase"] == "Training"


def test_awaiting_approval_and_canarying_are_ready_and_not_reconciling() -> None:
    """A run and its candidate are not the spec being applied: Reconciling stays False (its
    reason the phase), and so keeps the time it became False."""
    obj, _ = started(retraining(approval="Manual"))
    p = succeeded(obj, result(), now=NOW + timedelta(minutes=5))
    message = p.status["message"]
    assert p.status["phase"] == "AwaitingApproval"
    assert conditions_of(p.status) == conditions(
        ("True", "AwaitingApproval"),
        ("False", "AwaitingApproval"),
        ("False", "AsExpected"),
        message,
    )
    obj, _ = started()
    p = succeeded(obj, result(), now=NOW + timedelta(minutes=5))
    message = p.status["message"]
    assert conditions_of(p.status) == conditions(
        ("True", "Canarying"), ("False", "Canarying"), ("False", "AsExpected"), message
    )


def test_a_candidate_run_without_a_message_gives_an_empty_one() -> None:
    obj = canarying()
    data = obj.model_dump(by_alias=True, mode="json")
    del data["status"]["runs"][0]["message"]
    p = plan(ModelRetraining.model_validate(data), drifted_mdep())
    assert (p.status["phase"], p.status["message"]) == ("Canarying", "")
    assert conditions_of(p.status)["Ready"][3] == ""


def test_stalled_conditions() -> None:
    p = plan(retraining(), None)
    message = "ModelDeployment 'iris' not found"
    assert conditions_of(p.status) == conditions(
        ("False", "Stalled"), ("False", "Stalled"), ("True", "DeploymentNotFound"), message
    )
    # Stalled wins over a failed last run.
    failed = [{"name": "iris-retrain-1", "trigger": "manual", "phase": "Failed",
               "startTime": "2026-11-23T10:00:00Z"}]  # fmt: skip
    p = plan(retraining(status={"runs": failed, "runsStarted": 1}), None)
    assert conditions_of(p.status)["Ready"][:2] == ("False", "Stalled")
    p = plan(retraining(), drifted_mdep(), claimed_by="older")
    message = (
        "ModelDeployment 'iris' is retrained by ModelRetraining 'older' (the older one); "
        "this one does nothing"
    )
    assert p.status["message"] == message
    assert conditions_of(p.status) == conditions(
        ("False", "Stalled"), ("False", "Stalled"), ("True", "DeploymentClaimed"), message
    )


def test_suspended_and_cooling_down() -> None:
    p = plan(retraining(suspend=True), calm_mdep())
    assert (p.status["phase"], p.status["message"]) == ("Suspended", "suspended: no new runs")
    assert conditions_of(p.status) == conditions(
        ("True", "Suspended"), ("False", "Suspended"), ("False", "AsExpected"),
        "suspended: no new runs",
    )  # fmt: skip
    cooling = retraining(status={"cooldownUntil": "2026-11-23T14:00:00Z"})
    p = plan(cooling, drifted_mdep())
    message = "drifted; the next run may start at 2026-11-23T14:00:00Z"
    assert (p.status["phase"], p.status["message"]) == ("CoolingDown", message)
    assert conditions_of(p.status) == conditions(
        ("True", "CoolingDown"), ("False", "CoolingDown"), ("False", "AsExpected"), message
    )
    # Cooling without drift is idle.
    assert plan(cooling, calm_mdep()).status["phase"] == "Idle"


def test_a_cooldown_ending_now_is_over() -> None:
    """Drift, the cooldown ending this very second, and the ModelDeployment busy rolling out:
    Idle, not CoolingDown."""
    ending = retraining(status={"cooldownUntil": "2026-11-23T12:00:00Z"})
    rolling = drifted_mdep(canary={"name": "iris-newrev", "modelVersion": "2.0.0"})
    p = plan(ending, rolling)
    assert p.create == []
    assert p.status["phase"] == "Idle"


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    before = "2026-11-23T09:00:00Z"
    old = [
        {"type": t, "status": v, "reason": r, "message": "", "lastTransitionTime": before}
        for t, v, r in (
            ("Ready", "True", "Idle"),
            ("Reconciling", "False", "Idle"),
            ("Stalled", "False", "AsExpected"),
        )
    ]
    obj = retraining(status={"conditions": old})
    obj.metadata.generation = 4
    p = plan(obj, calm_mdep())
    assert p.status["observedGeneration"] == 4
    assert conditions_of(p.status) == {
        "Ready": ("True", "Idle", before, "no run yet", 4),
        "Reconciling": ("False", "Idle", before, "no run yet", 4),
        "Stalled": ("False", "AsExpected", before, "no run yet", 4),
    }
    p = plan(obj, None)
    now = "2026-11-23T12:00:00Z"
    message = "ModelDeployment 'iris' not found"
    assert conditions_of(p.status) == {
        "Ready": ("False", "Stalled", now, message, 4),
        "Reconciling": ("False", "Stalled", before, message, 4),
        "Stalled": ("True", "DeploymentNotFound", now, message, 4),
    }


# --- found by mutation testing: Git moving mid-run, a fallback out of the list, NaN ------------


def test_git_moving_while_the_first_run_trains_supersedes_what_it_makes() -> None:
    """No candidate before: the run trained from 1.0.0; Git now says 2.0.0. Its model must not
    stand in for 2.0.0 (it was trained from, and scored against, 1.0.0)."""
    obj, _ = started()
    moved = with_spec_model(drifted_mdep(), version="2.0.0", uri="https://m.example.org/2.onnx")
    p = succeeded_on(obj, moved, result())
    obj = after(obj, p)
    run = obj.status.runs[0]
    assert run.phase == "Superseded"
    assert run.message == (
        "candidate 1.0.0-rt1 superseded: it was trained from 1.0.0, and 2.0.0 serves now"
    )
    assert obj.status.candidate is None
    assert candidate_for(moved, obj) is None
    assert events_of(p) == [
        (
            "Normal",
            "CandidateSuperseded",
            "run iris-retrain-1: candidate 1.0.0-rt1 superseded: it was trained from 1.0.0, "
            "and 2.0.0 serves now",
        )
    ]
    assert obj.status.consecutive_failures == 0  # Git's choice is no failure of the run


def succeeded_on(obj: ModelRetraining, dep: ModelDeployment, text: str) -> RetrainingPlan:
    job = JobObservation("iris-retrain-1", "Succeeded", completion_time=NOW, result=text)
    return plan(obj, dep, {"iris-retrain-1": job})


def test_a_promoted_candidate_whose_run_left_the_list_is_still_the_fallback() -> None:
    obj, _ = promoted_then_second()
    data = obj.model_dump(by_alias=True, mode="json")
    # Run 1 (promoted, serving) fell out of status.runs; run 2 is back to running.
    data["status"]["runs"] = [
        {**r, "phase": "Running"} for r in data["status"]["runs"] if r["name"] == "iris-retrain-2"
    ]
    data["status"]["candidate"] = {
        **data["status"]["candidate"],
        "run": "iris-retrain-1",
        "model": data["status"]["candidate"]["fallbackModel"],
    }
    for key in ("fallbackRun", "fallbackModel"):
        data["status"]["candidate"].pop(key)
    obj = ModelRetraining.model_validate(data)
    text = result(run="iris-retrain-2").replace("1.0.0-rt1", "1.0.0-rt2")
    job = JobObservation("iris-retrain-2", "Succeeded", result=text)
    obj = after(obj, plan(obj, drifted_mdep(), {"iris-retrain-2": job}))
    candidate = obj.status.candidate
    assert candidate is not None
    assert candidate.run == "iris-retrain-2"
    assert candidate.fallback_run == "iris-retrain-1"
    assert candidate.fallback_model is not None
    assert candidate.fallback_model.version == "1.0.0-rt1"


def test_git_moving_retires_the_promoted_fallback_too() -> None:
    obj, _ = promoted_then_second()
    moved = mdep("2.0.0", status=drifted_mdep().status.to_dict())
    obj = after(obj, plan(obj, moved))
    phases = {r.name: r.phase for r in obj.status.runs}
    assert phases == {"iris-retrain-2": "Superseded", "iris-retrain-1": "Superseded"}
    first = next(r for r in obj.status.runs if r.name == "iris-retrain-1")
    assert first.message == (
        "spec.model changed in Git (to 2.0.0): Git wins over candidate 1.0.0-rt2"
    )


@pytest.mark.parametrize("where", ["metrics", "baseMetrics"])
def test_a_result_with_a_metric_that_is_not_a_number_fails_the_run(where: str) -> None:
    obj, _ = started()
    data = json.loads(result())
    data[where]["accuracy"] = float("nan")
    run = after(obj, succeeded(obj, json.dumps(data))).status.runs[0]  # json writes NaN
    assert run.phase == "Failed"
    assert run.message is not None
    assert "invalid training result" in run.message
    assert f"{where}.accuracy" in run.message
    assert obj.status.candidate is None
