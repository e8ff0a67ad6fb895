from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from canarium.api import RolloutPolicySpec
from canarium.statusview import (
    human_duration,
    list_row,
    policy_steps,
    render_list,
    render_status,
    table,
)

POLICY = RolloutPolicySpec.model_validate(
    {
        "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}],
        "analysis": {"failureLimit": 2, "checks": {"errorRate": {"max": 0.01}}},
    }
)


def obj(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"uri": "https://m.example.org/iris.onnx", "version": "2.0.0"}},
        "status": status,
    }


def test_paused_rollout_shows_steps_weights_and_analysis() -> None:
    text = render_status(
        obj(
            {
                "phase": "Paused",
                "pauseReason": "paused until promoted (kubectl canarium promote)",
                "currentStep": 1,
                "stable": {"name": "iris-a", "modelVersion": "1.0.0", "replicas": 4,
                           "readyReplicas": 4, "weight": 90, "effectiveWeight": 80.0},
                "canary": {"name": "iris-b", "modelVersion": "2.0.0", "replicas": 1,
                           "readyReplicas": 1, "weight": 10, "effectiveWeight": 20.0},
                "analysis": {
                    "intervals": 3,
                    "failures": 0,
                    "lastVerdict": "Passed",
                    "measurements": [
                        {"check": "errorRate", "value": 0.002, "threshold": "<= 0.01",
                         "verdict": "Passed", "time": "2026-11-23T12:00:00Z"},
                    ],
                },
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Paused",
                     "message": "", "lastTransitionTime": "2026-11-23T12:00:00Z"},
                ],
            }
        ),
        POLICY,
    )  # fmt: skip
    assert text.splitlines() == [
        "Name:       iris (namespace ml)",
        "Model:      2.0.0  https://m.example.org/iris.onnx",
        "Phase:      Paused",
        "Paused:     paused until promoted (kubectl canarium promote)",
        "Stable:     iris-a  model 1.0.0  4/4 ready  weight 90%  effective 80.00%",
        "Canary:     iris-b  model 2.0.0  1/1 ready  weight 10%  effective 20.00%",
        "Steps:",
        "  ✔ 1. setWeight 10",
        "  ⏸ 2. pause (until promoted)",
        "  · 3. setWeight 100",
        "Analysis:   3 intervals, failures 0/2, inconclusive in a row 0, last Passed at -",
        # One row per measurement: check, value, threshold, verdict.
        "  errorRate              0.002  <= 0.01     Passed",
        "Conditions: Ready=False (Paused)",
    ]


def test_degraded_shows_the_failed_check_and_history() -> None:
    text = render_status(
        obj(
            {
                "phase": "Degraded",
                "message": "rolled back: errorRate 0.4 (limit <= 0.01)",
                "stable": {"name": "iris-a", "modelVersion": "1.0.0", "replicas": 4,
                           "readyReplicas": 4, "weight": 100, "effectiveWeight": 100.0},
                "history": [{"revision": "iris-b", "modelVersion": "2.0.0",
                             "outcome": "RolledBack", "time": "2026-11-23T12:00:00Z",
                             "reason": "errorRate 0.4 (limit <= 0.01)"}],
            }
        ),
        None,
    )  # fmt: skip
    # No policy: no Steps section; no analysis, conditions or endpoints: none of their lines.
    assert text.splitlines() == [
        "Name:       iris (namespace ml)",
        "Model:      2.0.0  https://m.example.org/iris.onnx",
        "Phase:      Degraded  rolled back: errorRate 0.4 (limit <= 0.01)",
        "Stable:     iris-a  model 1.0.0  4/4 ready  weight 100%  effective 100.00%",
        "History:",
        "  2026-11-23T12:00:00Z  RolledBack iris-b (model 2.0.0) errorRate 0.4 (limit <= 0.01)",
    ]


def test_a_bake_shows_the_previous_revision_the_bake_end_and_missing_data() -> None:
    text = render_status(
        obj(
            {
                "phase": "Progressing",
                "stable": {"name": "iris-b", "modelVersion": "2.0.0", "replicas": 4,
                           "readyReplicas": 4, "weight": 100, "effectiveWeight": 100.0},
                "previous": {"name": "iris-a", "modelVersion": "1.0.0", "replicas": 0,
                             "readyReplicas": 0, "weight": 0},
                "bakeUntil": "2026-11-23T12:05:00Z",
                "analysis": {
                    "intervals": 1,
                    "failures": 0,
                    "consecutiveInconclusive": 1,
                    "lastVerdict": "Inconclusive",
                    "lastRunTime": "2026-11-23T12:01:00Z",
                    "measurements": [
                        {"check": "latencyP99", "value": None, "threshold": "<= 200ms",
                         "verdict": "Inconclusive", "reason": "no requests",
                         "time": "2026-11-23T12:01:00Z"},
                    ],
                },
                "endpoint": "http://iris.ml.svc:80/v2/models/iris",
                "grpcEndpoint": "iris.ml.svc:8081",
            }
        ),
        POLICY,
    )  # fmt: skip
    assert text.splitlines() == [
        "Name:       iris (namespace ml)",
        "Model:      2.0.0  https://m.example.org/iris.onnx",
        "Phase:      Progressing",
        "Stable:     iris-b  model 2.0.0  4/4 ready  weight 100%  effective 100.00%",
        "Previous:   iris-a  model 1.0.0  0/0 ready  weight 0%  effective -",
        "Bake until: 2026-11-23T12:05:00Z",
        # No canary: no step is current.
        "Steps:",
        "    1. setWeight 10",
        "    2. pause (until promoted)",
        "    3. setWeight 100",
        "Analysis:   1 intervals, failures 0/2, inconclusive in a row 1, "
        "last Inconclusive at 2026-11-23T12:01:00Z",
        "  latencyP99           no data  <= 200ms    Inconclusive  no requests",
        "Endpoint:   http://iris.ml.svc:80/v2/models/iris",
        "gRPC:       iris.ml.svc:8081",
    ]


# --- `kubectl canarium list` -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        # k8s.io/apimachinery/pkg/util/duration's HumanDuration, at each boundary.
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (599, "9m59s"),
        (600, "10m"),
        (10_799, "179m"),
        (10_800, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (48 * 3600 - 1, "47h"),
        (48 * 3600, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (730 * 86400 - 1, "729d"),
        (730 * 86400, "2y"),
        (730 * 86400 + 30 * 86400, "2y30d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_ages_read_as_kubectl_prints_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def listed(name: str, namespace: str, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": "2026-12-03T11:55:00Z",
        },
        "spec": {"model": {"uri": "file:///m.onnx", "version": "2.0.0"}, **spec},
        "status": status,
    }


ROLLING = listed(
    "iris",
    "ml",
    {
        "phase": "Progressing",
        "ready": "5/5",
        "currentStep": 2,
        "stable": {"modelVersion": "1.0.0", "weight": 75, "effectiveWeight": 80.0},
        "canary": {"modelVersion": "2.0.0", "weight": 25, "effectiveWeight": 20.0},
    },
    rollout={"policyRef": {"name": "canary"}},
)
HEALTHY = listed(
    "digits",
    "apps",
    {"phase": "Healthy", "ready": "2/2", "stable": {"modelVersion": "3.1", "weight": 100}},
    rollout={"policy": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}},
)


def test_list_all_namespaces_is_a_kubectl_table_sorted_by_namespace_and_name() -> None:
    text = render_list(
        [listed("new", "ml", {}), ROLLING, HEALTHY],
        {("ml", "canary"): 5},
        NOW,
        all_namespaces=True,
    )
    assert text.splitlines() == [
        "NAMESPACE   NAME     PHASE         READY   STABLE   CANARY   WEIGHT      STEP   AGE",
        "apps        digits   Healthy       2/2     3.1      -        -           -      5m",
        "ml          iris     Progressing   5/5     1.0.0    2.0.0    25% (20%)   3/5    5m",
        "ml          new      Pending       -       -        -        -           -      5m",
    ]  # fmt: skip


def test_list_of_one_namespace_has_no_namespace_column() -> None:
    header, row = render_list([ROLLING], {}, NOW, all_namespaces=False).splitlines()
    assert header.split() == ["NAME", "PHASE", "READY", "STABLE", "CANARY", "WEIGHT", "STEP", "AGE"]
    # The policy is unknown (not listed): the step without its total.
    assert row.split() == [
        "iris",
        "Progressing",
        "5/5",
        "1.0.0",
        "2.0.0",
        "25%",
        "(20%)",
        "3",
        "5m",
    ]


def test_weight_shows_effective_only_when_it_differs_and_step_counts_inline_policies() -> None:
    exact = listed(
        "a",
        "ml",
        {
            "currentStep": 0,
            "canary": {"modelVersion": "2", "weight": 50, "effectiveWeight": 50.0},
        },
        rollout={"policy": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}},
    )
    assert list_row(exact, policy_steps(exact, {}), NOW)[5:7] == ["50%", "1/3"]
    assert policy_steps(HEALTHY, {}) == 2
    assert policy_steps(ROLLING, {("ml", "canary"): 5}) == 5
    assert policy_steps(ROLLING, {("other", "canary"): 5}) is None
    assert policy_steps(listed("b", "ml", {}), {("ml", "canary"): 5}) is None


def test_age_of_an_object_without_a_readable_creation_time() -> None:
    obj = listed("a", "ml", {})
    obj["metadata"]["creationTimestamp"] = "yesterday"
    assert list_row(obj, None, NOW)[-1] == "<unknown>"
    del obj["metadata"]["creationTimestamp"]
    assert list_row(obj, None, NOW)[-1] == "<unknown>"


def test_table_pads_every_column_but_the_last() -> None:
    assert table(("A", "BB"), [("xyz", "1"), ("", "22")]).splitlines() == [
        "A     BB",
        "xyz   1",
        "      22",
    ]


def test_monitoring_shows_the_drifted_condition_the_window_and_each_psi() -> None:
    body = obj(
        {
            "phase": "Healthy",
            "stable": {"name": "iris-abc", "modelVersion": "2.0.0", "weight": 100},
            "monitoring": {
                "revision": "iris-abc",
                "windowStart": "2026-11-23T12:10:00Z",
                "lastWindowTime": "2026-11-23T12:10:00Z",
                "windows": 7,
                "consecutiveDrifted": 2,
                "lastVerdict": "Drifted",
                "message": "drift shown at alpha 0.01: input 'petal_width' PSI 0.61 > 0.14",
                "findings": [
                    {"kind": "input", "name": "petal_width", "psi": 0.61, "allowed": 0.14,
                     "observations": 1200},
                    {"kind": "output", "name": "label", "psi": 0.02, "allowed": 0.13,
                     "observations": 1200},
                ],
            },
            "conditions": [
                {"type": "Drifted", "status": "True", "reason": "Drifted",
                 "lastTransitionTime": "2026-11-23T12:10:00Z", "message": "m"},
            ],
        }
    )  # fmt: skip
    body["spec"]["monitoring"] = {"interval": "5m", "dataDrift": {}, "predictionDrift": {}}
    text = render_status(body, None)
    assert (
        "Monitoring: Drifted=True  every 5m, dataDrift+predictionDrift, 2 window(s) in a row"
        in text
    )
    assert (
        "  last window 2026-11-23T12:10:00Z: Drifted (2 drifted in a row, 7 judged) drift shown"
        in text
    )
    assert "  ! input  petal_width          PSI 0.61 (at most 0.14, 1200 observations)" in text
    assert "    output label                PSI 0.02 (at most 0.13, 1200 observations)" in text
    # without spec.monitoring: nothing about it
    assert "Monitoring" not in render_status(obj({"phase": "Healthy"}), None)


# --- a ModelDeployment serving a retrained candidate; `status mretrain/NAME` -------------------

SHA = "ab" * 32


def retraining(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelRetraining",
        "metadata": {"name": "iris-retrain", "namespace": "ml"},
        "spec": {
            "deploymentRef": {"name": "iris"},
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}
            },
            "output": {"uri": "s3://models/iris/retrain"},
            "triggers": {"schedule": "0 3 * * 0"},
            "cooldown": "30m",
            "approval": "Manual",
            "validation": {"metric": "accuracy", "minimum": 0.9, "tolerance": 0.01},
        },
        "status": status,
    }


def candidate(run: str, version: str, *, approved: bool) -> dict[str, Any]:
    return {
        "run": run,
        "approved": approved,
        "acceptedTime": "2026-12-03T11:20:00Z",
        "model": {
            "uri": f"s3://models/iris/retrain/{run}/model.onnx",
            "version": version,
            "sha256": SHA,
        },
        "replaces": {"uri": "https://m.example.org/iris.onnx", "version": "2.0.0"},
    }


RETRAINED = {
    "retraining": "iris-retrain",
    "run": "iris-retrain-4",
    "modelVersion": "2.0.0-rt4",
    "modelUri": "s3://models/iris/retrain/iris-retrain-4/model.onnx",
    "replacesVersion": "2.0.0",
}


def test_a_retrained_candidate_says_so_and_how_to_pin_it_or_revert() -> None:
    body = obj({"phase": "Healthy", "retrained": RETRAINED})
    owner = retraining(candidate=candidate("iris-retrain-4", "2.0.0-rt4", approved=True))
    assert render_status(body, None, owner).splitlines()[:6] == [
        "Name:       iris (namespace ml)",
        "Model:      2.0.0  https://m.example.org/iris.onnx",
        "Retrained:  the model is 2.0.0-rt4, a retrained candidate (run iris-retrain-4 of "
        "modelretraining iris-retrain), in place of spec.model 2.0.0 from Git",
        "  pin it:   set spec.model in Git to uri "
        f"s3://models/iris/retrain/iris-retrain-4/model.onnx, version 2.0.0-rt4, sha256 {SHA}",
        "  revert:   kubectl canarium retrain iris-retrain --discard (back to 2.0.0)",
        "Phase:      Healthy",
    ]
    # The ModelRetraining unread, or its candidate another run's: no sha256 to show, but where.
    other = retraining(candidate=candidate("iris-retrain-5", "2.0.0-rt5", approved=False))
    for text in (render_status(body, None), render_status(body, None, other)):
        assert text.splitlines()[3] == (
            "  pin it:   set spec.model in Git to uri "
            "s3://models/iris/retrain/iris-retrain-4/model.onnx, version 2.0.0-rt4 and its "
            "sha256 (kubectl canarium status mretrain/iris-retrain)"
        )
        assert SHA not in text
    # Not retrained: not a word of it.
    assert "etrain" not in render_status(obj({"phase": "Healthy"}), None, owner)


RUNS = [  # as the operator keeps them (newest first), but shuffled: the view sorts them
    {"name": "iris-retrain-2", "trigger": "drift", "phase": "Rejected",
     "startTime": "2026-12-02T09:00:00Z",
     "model": {"uri": "s3://models/iris/retrain/iris-retrain-2/m.onnx", "version": "2.0.0-rt2"},
     "metrics": {"accuracy": 0.88}, "baseMetrics": {"accuracy": 0.93},
     "message": "candidate 2.0.0-rt2 rejected: held-out accuracy 0.88, the policy wants at "
                "least 0.9"},
    {"name": "iris-retrain-4", "trigger": "manual", "phase": "AwaitingApproval",
     "startTime": "2026-12-03T11:00:00+01:00", "reason": "requested at 2026-12-03T10:00:00Z",
     "model": {"uri": "s3://models/iris/retrain/iris-retrain-4/m.onnx", "version": "2.0.0-rt4"},
     "metrics": {"accuracy": 0.97, "f1_macro": 0.5}, "baseMetrics": {"accuracy": 0.93},
     "message": "candidate 2.0.0-rt4 waits\nfor approval"},
    {"name": "iris-retrain-3", "trigger": "schedule", "phase": "Failed",
     "startTime": "2026-12-02T10:00:00Z", "message": "its Job failed: BackoffLimitExceeded"},
    {"name": "iris-retrain-1", "trigger": "drift", "phase": "Promoted",
     "startTime": "2026-12-01T09:00:00Z", "completionTime": "2026-12-01T09:30:00Z",
     "model": {"uri": "s3://models/iris/retrain/iris-retrain-1/m.onnx", "version": "2.0.0-rt1"},
     "metrics": {"accuracy": 0.95}},
    {"name": "iris-retrain-5", "trigger": "drift", "phase": "Running",
     "startTime": "2026-12-03T11:30:00Z", "message": "Job iris-retrain-5 trains 2.0.0-rt5"},
]  # fmt: skip


def test_a_retraining_shows_triggers_cooldown_candidate_and_runs_newest_first() -> None:
    from canarium.statusview import render_retraining

    text = render_retraining(
        retraining(
            phase="Training",
            message="run iris-retrain-5: Job iris-retrain-5 trains 2.0.0-rt5",
            runsStarted=5,
            consecutiveFailures=2,
            cooldownUntil="2026-12-03T13:00:00Z",
            lastScheduleTime="2026-11-29T03:00:00Z",
            nextScheduleTime="2026-12-06T03:00:00Z",
            candidate=candidate("iris-retrain-4", "2.0.0-rt4", approved=False),
            runs=RUNS,
            conditions=[
                {"type": "Ready", "status": "True", "reason": "Training", "message": "",
                 "lastTransitionTime": "2026-12-03T11:30:00Z"},
                {"type": "Reconciling", "status": "True", "reason": "Training", "message": "",
                 "lastTransitionTime": "2026-12-03T11:30:00Z"},
            ],
        )
    )  # fmt: skip
    assert text.splitlines() == [
        "Name:       iris-retrain (namespace ml)",
        "Deployment: iris",
        "Phase:      Training  run iris-retrain-5: Job iris-retrain-5 trains 2.0.0-rt5",
        "Triggers:   onDrift, schedule '0 3 * * 0' (UTC; next 2026-12-06T03:00:00Z, last "
        "2026-11-29T03:00:00Z), on request (kubectl canarium retrain iris-retrain)",
        # two failures in a row: the cooldown doubled twice
        "Cooldown:   30m after a run, before the next drift run (x4: 2 failed run(s) in a row); "
        "cooldown until 2026-12-03T13:00:00Z",
        "Validation: held-out accuracy at least 0.9, not worse than the model it replaces "
        "(tolerance 0.01)",
        "Approval:   Manual",
        "Candidate:  2.0.0-rt4 of run iris-retrain-4, awaiting approval "
        "(kubectl canarium retrain iris-retrain --approve, or --discard)",
        f"  model     s3://models/iris/retrain/iris-retrain-4/model.onnx  sha256 {SHA}",
        "  replaces  spec.model 2.0.0  https://m.example.org/iris.onnx",
        "  accepted  2026-12-03T11:20:00Z",
        "Runs:",
        "  NAME             TRIGGER    PHASE              STARTED                MODEL       "
        "ACCURACY (BASE)   MESSAGE",
        "  iris-retrain-5   drift      Running            2026-12-03T11:30:00Z   -           "
        "-                 Job iris-retrain-5 trains 2.0.0-rt5",
        # started 11:00 at +01:00: 10:00 UTC
        "  iris-retrain-4   manual     AwaitingApproval   2026-12-03T10:00:00Z   2.0.0-rt4   "
        "0.97 (0.93)       candidate 2.0.0-rt4 waits for approval",
        "  iris-retrain-3   schedule   Failed             2026-12-02T10:00:00Z   -           "
        "-                 its Job failed: BackoffLimitExceeded",
        "  iris-retrain-2   drift      Rejected           2026-12-02T09:00:00Z   2.0.0-rt2   "
        "0.88 (0.93)       candidate 2.0.0-rt2 rejected: held-out accuracy 0.88, the policy "
        "wants at least 0.9",
        "  iris-retrain-1   drift      Promoted           2026-12-01T09:00:00Z   2.0.0-rt1   "
        "0.95 (-)          -",
        "Conditions: Ready=True (Training)  Reconciling=True (Training)",
    ]


def test_a_retraining_without_runs_or_candidate_and_its_other_settings() -> None:
    from canarium.statusview import render_retraining

    body = retraining()
    body["spec"].update(
        triggers={"onDrift": False},
        suspend=True,
        approval="Automatic",
        validation={"metric": "mae", "minimum": 0.5, "notWorseThanBase": False},
    )
    assert render_retraining(body).splitlines() == [
        "Name:       iris-retrain (namespace ml)",
        "Deployment: iris",
        "Phase:      Pending",  # no status yet
        "Suspended:  no new runs (spec.suspend); runs under way finish",
        "Triggers:   on request (kubectl canarium retrain iris-retrain)",
        "Cooldown:   30m after a run, before the next drift run",
        "Validation: held-out mae at most 0.5",  # lower mae is better
        "Approval:   Automatic",
        "Candidate:  none",
        "Runs:       none yet",
    ]
    body["spec"]["validation"] = {"metric": "r2", "notWorseThanBase": False}
    body["status"] = {
        "phase": "Canarying",
        "consecutiveFailures": 9,
        "candidate": candidate("iris-retrain-1", "2.0.0-rt1", approved=True),
    }
    lines = render_retraining(body).splitlines()
    assert lines[5:9] == [
        # the backoff stops doubling after 4 failures: x16 at most
        "Cooldown:   30m after a run, before the next drift run (x16: 9 failed run(s) in a row)",
        "Validation: held-out r2 reported (no bound)",
        "Approval:   Automatic",
        "Candidate:  2.0.0-rt1 of run iris-retrain-1, approved "
        "(revert: kubectl canarium retrain iris-retrain --discard)",
    ]
