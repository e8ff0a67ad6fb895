from __future__ import annotations

from typing import Any

from canarium.api import RolloutPolicySpec
from canarium.statusview import render_status

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
    # No policy: no Steps section; no analysis, conditions or endpoint: none of their lines.
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
    ]
