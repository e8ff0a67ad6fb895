"""Monitoring of the stable revision (spec.monitoring): the window judgement against the
model's reference statistics, the window cycle, and what reconcile makes of it (status,
the Drifted condition, events, when to look again). Pure: no cluster, no provider."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from canarium.analysis import monitoring
from canarium.analysis.monitoring import MonitoringWindow, judge_window
from canarium.analysis.samples import RevisionMetrics
from canarium.api import ModelDeployment, MonitoringSpec
from canarium.reconcile import reconcile

from tests.unit.operator_fixtures import NOW, inp, mdep, name_of, observed

INF = math.inf
EDGES = [1.0, 2.0, 3.0, 4.0]  # five bins
REFERENCE = [0.2, 0.2, 0.2, 0.2, 0.2]
CLASSES = {"0": 0.5, "1": 0.3, "2": 0.2}


def cumulative(
    counts: list[float] | np.ndarray[Any, Any], edges: list[float]
) -> dict[float, float]:
    out, acc = {}, 0.0
    for le, c in zip([*edges, INF], counts, strict=True):
        acc += float(c)
        out[le] = acc
    return out


def window(
    rng: np.random.Generator,
    n: int,
    *,
    feature_probs: list[float] = REFERENCE,
    class_probs: dict[str, float] = CLASSES,
) -> RevisionMetrics:
    """One window of `n` live rows: feature 'x' from `feature_probs` over the reference bins,
    feature 'y' from the reference itself, and predictions of 'label' from `class_probs`."""
    x = rng.multinomial(n, feature_probs)
    y = rng.multinomial(n, REFERENCE)
    labels = rng.multinomial(n, list(class_probs.values()))
    return RevisionMetrics(
        requests=n,
        input_feature_buckets={"x": cumulative(x, EDGES), "y": cumulative(y, EDGES)},
        reference_input_ratios={
            "x": cumulative(REFERENCE, EDGES),
            "y": cumulative(REFERENCE, EDGES),
        },
        prediction_classes={
            ("label", c): float(k) for c, k in zip(class_probs, labels, strict=True)
        },
        reference_prediction_class_ratios={("label", c): p for c, p in CLASSES.items()},
        pods=2,
    )


def spec(**kw: Any) -> MonitoringSpec:
    body = {"dataDrift": {"maxPSI": 0.1}, "predictionDrift": {"maxPSI": 0.1}, **kw}
    return MonitoringSpec.model_validate(body)


SHIFTED = [0.05, 0.1, 0.2, 0.3, 0.35]


def test_a_shifted_feature_is_drift_and_named() -> None:
    drift = judge_window(spec(), window(np.random.default_rng(1), 2000, feature_probs=SHIFTED))
    assert drift.verdict == "Drifted"
    worst = drift.findings[0]
    assert (worst.kind, worst.name) == ("input", "x")
    assert worst.psi > worst.allowed > 0.1  # shown above maxPSI, noise included
    assert worst.observations == 2000
    assert "input 'x' PSI" in drift.message
    assert "'y'" not in drift.message  # y follows the reference
    assert {(f.kind, f.name) for f in drift.findings} == {
        ("input", "x"),
        ("input", "y"),
        ("output", "label"),
    }


def test_a_shifted_prediction_distribution_is_drift() -> None:
    w = window(np.random.default_rng(2), 3000, class_probs={"0": 0.2, "1": 0.3, "2": 0.5})
    drift = judge_window(spec(), w)
    assert drift.verdict == "Drifted"
    assert (drift.findings[0].kind, drift.findings[0].name) == ("output", "label")
    # only dataDrift asked: the outputs are not tested
    only_inputs = judge_window(spec(predictionDrift=None), w)
    assert only_inputs.verdict == "NoDrift"
    assert {f.kind for f in only_inputs.findings} == {"input"}


def test_too_few_observations_are_inconclusive_never_drift() -> None:
    # 60 rows over 5 bins: fewer than 20 per bin, however far they moved
    w = window(np.random.default_rng(3), 60, feature_probs=[0.0, 0.0, 0.0, 0.0, 1.0])
    drift = judge_window(spec(predictionDrift=None), w)
    assert drift.verdict == "Inconclusive"
    assert "too little to judge" in drift.message
    assert "60 live values of 'x' < 100" in drift.message
    assert drift.findings == []
    nothing = judge_window(spec(), RevisionMetrics())
    assert nothing.verdict == "Inconclusive"
    assert "no reference input statistics" in nothing.message


def test_a_small_window_needs_a_larger_psi_than_a_large_one() -> None:
    small = judge_window(spec(predictionDrift=None), window(np.random.default_rng(4), 150))
    large = judge_window(spec(predictionDrift=None), window(np.random.default_rng(4), 20000))
    allowed = {w: {f.name: f.allowed for f in d.findings} for w, d in (("s", small), ("l", large))}
    assert allowed["s"]["x"] > allowed["l"]["x"] > 0.1


def test_no_false_alarms_beyond_alpha_over_many_windows_of_the_reference() -> None:
    """Windows drawn from the reference itself: drifted in at most about alpha of them (the
    features and outputs share alpha), at every sample size from the smallest judged."""
    rng = np.random.default_rng(5)
    s = spec(alpha=0.05)
    for n in (100, 300, 1000, 5000):
        verdicts = [judge_window(s, window(rng, n)).verdict for _ in range(400)]
        assert verdicts.count("Inconclusive") == 0
        assert verdicts.count("Drifted") / len(verdicts) <= 0.05 + 0.03, n


def test_drift_is_found_in_almost_every_window_when_it_is_there() -> None:
    rng = np.random.default_rng(6)
    verdicts = [
        judge_window(spec(), window(rng, 1000, feature_probs=SHIFTED)).verdict for _ in range(50)
    ]
    assert verdicts.count("Drifted") >= 49


def test_the_window_cycle() -> None:
    s = spec(interval="5m")
    assert monitoring.due(s, None, "iris-a", NOW) == ("baseline", 300.0)
    first = monitoring.started("iris-a", NOW, None)
    assert monitoring.due(s, first, "iris-a", NOW + timedelta(seconds=100)) == (None, 200.0)
    assert monitoring.due(s, first, "iris-a", NOW + timedelta(seconds=300))[0] == "measure"
    # another stable revision starts over
    assert monitoring.due(s, first, "iris-b", NOW)[0] == "baseline"
    paused = first.model_copy(update={"window_start": None})
    assert monitoring.due(s, paused, "iris-a", NOW)[0] == "baseline"


def test_consecutive_drifted_windows_and_what_resets_them() -> None:
    s = spec(windows=2)
    drifted = monitoring.WindowDrift("Drifted", "d")
    clean = monitoring.WindowDrift("NoDrift", "c")
    unsure = monitoring.WindowDrift("Inconclusive", "u")
    st = monitoring.started("iris-a", NOW, None)
    st = monitoring.judged(s, st, drifted, NOW)
    assert (st.consecutive_drifted, monitoring.is_drifted(s, st)) == (1, False)
    st = monitoring.judged(s, st, unsure, NOW)  # changes nothing
    assert (st.consecutive_drifted, st.last_verdict, st.windows) == (1, "Inconclusive", 2)
    st = monitoring.judged(s, st, drifted, NOW)
    assert (st.consecutive_drifted, monitoring.is_drifted(s, st)) == (2, True)
    st = monitoring.judged(s, st, clean, NOW)
    assert (st.consecutive_drifted, monitoring.is_drifted(s, st)) == (0, False)
    assert st.window_start == NOW


# --- through reconcile ------------------------------------------------------------------------

MONITORING = {"interval": "1m", "dataDrift": {"maxPSI": 0.1}, "windows": 2}


def _healthy(**spec_extra: Any) -> ModelDeployment:
    obj = mdep(monitoring=MONITORING, **spec_extra)
    obj = obj.model_copy(
        update={"status": type(obj.status).model_validate(reconcile(inp(obj)).status)}
    )
    plan = reconcile(inp(obj, observed(obj)))
    return obj.model_copy(update={"status": type(obj.status).model_validate(plan.status)})


def _step(
    obj: ModelDeployment, metrics: RevisionMetrics | None, at: int
) -> tuple[ModelDeployment, Any]:
    now = NOW + timedelta(seconds=at)
    w = MonitoringWindow(name_of(obj), now, metrics)
    plan = reconcile(inp(obj, observed(obj), now=now, monitoring_window=w))
    return obj.model_copy(update={"status": type(obj.status).model_validate(plan.status)}), plan


def _drifted(plan: Any) -> dict[str, Any]:
    (c,) = [c for c in plan.status["conditions"] if c["type"] == "Drifted"]
    return dict(c)


def test_reconcile_raises_drifted_after_sustained_drift_and_clears_it() -> None:
    rng = np.random.default_rng(7)
    obj = _healthy()
    plan = reconcile(inp(obj, observed(obj)))
    assert _drifted(plan)["status"] == "Unknown"
    # the first window is due: the controller starts it in this reconcile (with_monitoring),
    # and looks again after an interval at the latest
    assert monitoring.due(obj.spec.monitoring, None, name_of(obj), NOW)[0] == "baseline"  # type: ignore[arg-type]
    assert plan.requeue_after == 60.0
    obj, plan = _step(obj, None, 0)  # baseline
    assert plan.status["monitoring"]["revision"] == name_of(obj)
    assert plan.requeue_after == 60.0
    assert _drifted(plan)["reason"] == "NotJudged"

    obj, plan = _step(obj, window(rng, 2000, feature_probs=SHIFTED), 60)
    assert plan.status["monitoring"]["consecutiveDrifted"] == 1
    assert _drifted(plan)["status"] == "False"  # one window is not sustained drift
    assert not [e for e in plan.events if e.reason == "Drifted"]

    obj, plan = _step(obj, window(rng, 2000, feature_probs=SHIFTED), 120)
    cond = _drifted(plan)
    assert (cond["status"], cond["reason"]) == ("True", "Drifted")
    assert "input 'x' PSI" in cond["message"]
    (event,) = [e for e in plan.events if e.reason == "Drifted"]
    assert event.type == "Warning"
    assert plan.status["monitoring"]["findings"][0]["name"] == "x"
    assert plan.status["phase"] == "Healthy"  # a drifted model still serves
    ready = {c["type"]: c["status"] for c in plan.status["conditions"]}
    assert ready["Ready"] == "True"

    # the same again: no second event
    obj, plan = _step(obj, window(rng, 2000, feature_probs=SHIFTED), 180)
    assert not [e for e in plan.events if e.reason == "Drifted"]
    # too little traffic: still Drifted, nothing new
    obj, plan = _step(obj, window(rng, 30), 240)
    assert _drifted(plan)["status"] == "True"
    assert plan.status["monitoring"]["lastVerdict"] == "Inconclusive"
    # back to the reference: cleared, with an event
    obj, plan = _step(obj, window(rng, 2000), 300)
    assert _drifted(plan)["status"] == "False"
    assert [e.reason for e in plan.events if e.type == "Normal"] == ["DriftCleared"]


def test_monitoring_pauses_during_a_rollout_and_restarts_after() -> None:
    obj = _healthy(rollout={"policy": {"steps": [{"setWeight": 20}, {"pause": {}}]}})
    obj, plan = _step(obj, None, 0)
    assert plan.status["monitoring"]["windowStart"]
    v2 = obj.model_copy(
        update={
            "spec": obj.spec.model_copy(
                update={
                    "model": obj.spec.model.model_copy(
                        update={
                            "version": "2.0.0",
                            "uri": "https://models.example.org/iris/2.0.0.onnx",
                        }
                    )
                }
            )
        }
    )
    plan = reconcile(inp(v2, observed(obj)))
    assert plan.status["canary"]
    assert "windowStart" not in plan.status["monitoring"]  # paused: no window while it runs
    # a window measured before the rollout started is not judged
    w = MonitoringWindow(
        name_of(obj), NOW, window(np.random.default_rng(8), 2000, feature_probs=SHIFTED)
    )
    plan = reconcile(inp(v2, observed(obj), monitoring_window=w))
    assert plan.status["monitoring"]["windows"] == 0


def test_no_monitoring_no_drifted_condition_and_no_timer() -> None:
    obj = mdep()
    obj = obj.model_copy(
        update={"status": type(obj.status).model_validate(reconcile(inp(obj)).status)}
    )
    plan = reconcile(inp(obj, observed(obj)))
    assert "Drifted" not in {c["type"] for c in plan.status["conditions"]}
    assert "monitoring" not in plan.status
    assert plan.requeue_after is None


def test_a_window_of_another_revision_is_not_judged_for_this_one() -> None:
    obj = _healthy()
    obj, _ = _step(obj, None, 0)
    stale = MonitoringWindow(
        "iris-old", NOW, window(np.random.default_rng(9), 2000, feature_probs=SHIFTED)
    )
    plan = reconcile(
        inp(obj, observed(obj), now=NOW + timedelta(seconds=60), monitoring_window=stale)
    )
    assert plan.status["monitoring"]["windows"] == 0


@pytest.mark.parametrize("body", [{}, {"interval": "5m"}])
def test_monitoring_needs_a_check(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="monitoring needs dataDrift, predictionDrift or both"):
        MonitoringSpec.model_validate(body)
