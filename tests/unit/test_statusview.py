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
