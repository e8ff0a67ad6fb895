"""Monitoring of the stable revision (spec.monitoring): the window judgement against the
model's reference statistics, the window cycle, and what reconcile makes of it (status,
the Drifted condition, events, when to look again). Pure: no cluster, no provider."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from canarium.analysis import monitoring, sequential
from canarium.analysis.monitoring import MonitoringWindow, WindowDrift, judge_window
from canarium.analysis.samples import RevisionMetrics
from canarium.api import ModelDeployment, MonitoringSpec
from canarium.api.status import MAX_DRIFT_FINDINGS, DriftFinding, MonitoringStatus
from canarium.reconcile import reconcile
from canarium_serving.metrics_contract import PSI_EPSILON

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


def test_the_window_cycle_to_the_second() -> None:
    s = spec(interval="5m")
    first = monitoring.started("iris-a", NOW, None)
    assert monitoring.due(s, first, "iris-a", NOW + timedelta(seconds=299.5)) == (None, 0.5)
    assert monitoring.due(s, first, "iris-a", NOW + timedelta(seconds=300)) == ("measure", 300.0)
    assert monitoring.due(s, first, "iris-a", NOW + timedelta(seconds=400)) == ("measure", 300.0)


FINDING = DriftFinding(kind="input", name="x", psi=0.5, allowed=0.2, observations=2000.0)
OTHER = DriftFinding(kind="output", name="label", psi=0.01, allowed=0.3, observations=900.0)


def test_a_window_starts_over_for_another_revision_and_keeps_the_counts_of_the_same() -> None:
    later = NOW + timedelta(seconds=120)
    first = monitoring.started("iris-a", NOW, None)
    assert first == MonitoringStatus(revision="iris-a", window_start=NOW)
    st = monitoring.judged(spec(), first, WindowDrift("Drifted", "d", [FINDING]), NOW)
    again = monitoring.started("iris-a", later, st)
    assert again.model_dump() == {**st.model_dump(), "windowStart": later}
    assert (again.windows, again.consecutive_drifted, again.findings) == (1, 1, [FINDING])
    # another stable revision: nothing of the previous one is kept
    other = monitoring.started("iris-b", later, st)
    assert other == MonitoringStatus(revision="iris-b", window_start=later)


def test_a_judged_window_is_recorded_whole() -> None:
    s = spec()
    t1, t2, t3 = (NOW + timedelta(seconds=60 * i) for i in (1, 2, 3))
    first = monitoring.started("iris-a", NOW, None)
    st = monitoring.judged(s, first, WindowDrift("Drifted", "x drifted", [FINDING]), t1)
    assert st == MonitoringStatus(
        revision="iris-a",
        window_start=t1,
        last_window_time=t1,
        windows=1,
        consecutive_drifted=1,
        last_verdict="Drifted",
        message="x drifted",
        findings=[FINDING],
    )
    # an inconclusive window has no findings: the last ones are kept
    unsure = monitoring.judged(s, st, WindowDrift("Inconclusive", "too little"), t2)
    assert unsure == MonitoringStatus(
        revision="iris-a",
        window_start=t2,
        last_window_time=t2,
        windows=2,
        consecutive_drifted=1,
        last_verdict="Inconclusive",
        message="too little",
        findings=[FINDING],
    )
    # new findings replace them; a message longer than the status allows is cut at 1024
    long = "".join(str(i % 10) for i in range(1100))
    clean = monitoring.judged(s, unsure, WindowDrift("NoDrift", long, [OTHER]), t3)
    assert (clean.windows, clean.consecutive_drifted, clean.findings) == (3, 0, [OTHER])
    assert clean.message == long[:1024]
    assert (clean.window_start, clean.last_window_time) == (t3, t3)


# --- the judgement of one window, value by value ----------------------------------------------

ALPHA = 0.01  # the spec's default
PRICE_EDGES = [10.0, 20.0, 30.0, 40.0]  # a regressor's reference histogram: five bins


def psi_of(reference: Sequence[float], counts: Sequence[float]) -> float:
    """PSI by its definition: the sum over buckets of (a - e) ln(a / e), with a and e the
    buckets' shares, floored at PSI_EPSILON."""
    e = np.maximum(np.asarray(reference, float) / sum(reference), PSI_EPSILON)
    a = np.maximum(np.asarray(counts, float) / sum(counts), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def allowed_of(max_psi: float, n: float, bins: int, tested: int) -> float:
    """The PSI maxPSI allows for one of `tested` features and outputs that share alpha."""
    return sequential.psi_critical(max_psi, n, bins, ALPHA / tested)


def finding(kind: str, name: str, psi: float, allowed: float, n: float) -> DriftFinding:
    return DriftFinding.model_validate(
        {
            "kind": kind,
            "name": name,
            "psi": round(psi, 6),
            "allowed": round(allowed, 6),
            "observations": n,
        }
    )


def g4(value: float) -> str:
    return f"{round(value, 6):.4g}"


def shifted(s: float, n: float = 2000) -> list[float]:
    """`n` live values over the five reference bins, moved towards the high ones by `s` a
    step (s = 0: the reference itself; at n = 2000, s >= 110 is drift for 20 tested)."""
    q = n / 5
    return [q - 2 * s, q - s, q, q + s, q + 2 * s]


def features(live: dict[str, list[float]]) -> RevisionMetrics:
    """Live counts of features over the reference bins of EDGES, each reference uniform."""
    return RevisionMetrics(
        input_feature_buckets={f: cumulative(c, EDGES) for f, c in live.items()},
        reference_input_ratios={f: cumulative(REFERENCE, EDGES) for f in live},
    )


def prices(
    live: dict[float, float] | None, reference: dict[float, float] | None = None
) -> RevisionMetrics:
    """A regressor's window: its output 'price' against a reference histogram of values."""
    return RevisionMetrics(
        prediction_value_buckets={} if live is None else {"price": live},
        reference_prediction_value_ratios={
            "price": cumulative(REFERENCE, PRICE_EDGES) if reference is None else reference
        },
    )


def test_a_regressors_shifted_predictions_are_drift() -> None:
    counts = shifted(150)
    drift = judge_window(spec(dataDrift=None), prices(cumulative(counts, PRICE_EDGES)))
    psi, allowed = psi_of(REFERENCE, counts), allowed_of(0.1, 2000, 5, 1)
    assert psi > allowed
    assert drift == WindowDrift(
        "Drifted",
        f"drift shown at alpha 0.01: output 'price' PSI {g4(psi)} > {g4(allowed)}",
        [finding("output", "price", psi, allowed, 2000.0)],
    )


def test_a_regressors_predictions_like_the_reference_are_no_drift() -> None:
    counts = shifted(20)
    drift = judge_window(spec(dataDrift=None), prices(cumulative(counts, PRICE_EDGES)))
    psi, allowed = psi_of(REFERENCE, counts), allowed_of(0.1, 2000, 5, 1)
    assert drift == WindowDrift(
        "NoDrift",
        f"no drift in 1 tested: worst output 'price' PSI {g4(psi)} (at most {g4(allowed)} "
        "allowed with 2000 observations)",
        [finding("output", "price", psi, allowed, 2000.0)],
    )


@pytest.mark.parametrize(
    ("live", "reference", "why"),
    [
        (None, None, "no comparable predictions of 'price'"),
        (cumulative([0] * 5, PRICE_EDGES), None, "no comparable predictions of 'price'"),
        # live values in buckets the reference does not cover at all
        ({100.0: 30.0, 200.0: 60.0, INF: 500.0}, None, "no comparable predictions of 'price'"),
        # an output whose reference histogram is empty
        (None, {}, "no comparable predictions of 'price'"),
        (
            cumulative([0, 0, 1, 0, 0], PRICE_EDGES),
            None,
            "1 predictions of 'price' < 100 for a reliable PSI over 5 bins (20 per bin)",
        ),
        (
            cumulative([20, 20, 20, 20, 19], PRICE_EDGES),
            None,
            "99 predictions of 'price' < 100 for a reliable PSI over 5 bins (20 per bin)",
        ),
    ],
)
def test_a_regressor_output_that_cannot_be_compared_is_inconclusive(
    live: dict[float, float] | None, reference: dict[float, float] | None, why: str
) -> None:
    drift = judge_window(spec(dataDrift=None), prices(live, reference))
    assert drift == WindowDrift("Inconclusive", f"too little to judge: {why}")


@pytest.mark.parametrize(
    ("live", "why"),
    [
        (None, "no live values of feature 'x'"),
        ([0, 0, 0, 0, 0], "no live values of feature 'x'"),
        (
            [0, 0, 1, 0, 0],
            "1 live values of 'x' < 100 for a reliable PSI over 5 bins (20 per bin)",
        ),
        (
            [0, 0, 0, 0, 99],
            "99 live values of 'x' < 100 for a reliable PSI over 5 bins (20 per bin)",
        ),
    ],
)
def test_a_feature_that_cannot_be_compared_is_inconclusive(
    live: list[float] | None, why: str
) -> None:
    w = RevisionMetrics(
        input_feature_buckets={} if live is None else {"x": cumulative(live, EDGES)},
        reference_input_ratios={"x": cumulative(REFERENCE, EDGES)},
    )
    drift = judge_window(spec(predictionDrift=None), w)
    assert drift == WindowDrift("Inconclusive", f"too little to judge: {why}")


def test_a_feature_in_other_buckets_than_its_reference_is_inconclusive() -> None:
    w = RevisionMetrics(
        input_feature_buckets={"x": {10.0: 300.0, 20.0: 700.0, INF: 1000.0}},
        reference_input_ratios={"x": cumulative(REFERENCE, EDGES)},
    )
    drift = judge_window(spec(predictionDrift=None), w)
    assert drift == WindowDrift(
        "Inconclusive", "too little to judge: feature 'x': live and reference buckets differ"
    )


def test_the_message_of_an_inconclusive_window_names_the_first_three_reasons() -> None:
    w = RevisionMetrics(
        input_feature_buckets={
            "b": cumulative([0] * 5, EDGES),
            "c": cumulative([1, 0, 0, 0, 0], EDGES),
            "d": {10.0: 300.0, INF: 1000.0},
        },
        reference_input_ratios={f: cumulative(REFERENCE, EDGES) for f in "abcd"},
    )
    drift = judge_window(spec(predictionDrift=None), w)
    assert drift == WindowDrift(
        "Inconclusive",
        "too little to judge: no live values of feature 'a'; no live values of feature 'b'; "
        "1 live values of 'c' < 100 for a reliable PSI over 5 bins (20 per bin)",
    )


def test_what_cannot_be_compared_does_not_stop_the_others_from_being_tested() -> None:
    ok = shifted(0)
    w = RevisionMetrics(
        input_feature_buckets={
            "b": cumulative([0] * 5, EDGES),
            "c": {10.0: 300.0, INF: 1000.0},
            "d": cumulative([1, 0, 0, 0, 0], EDGES),
            "z": cumulative(ok, EDGES),
        },
        reference_input_ratios={f: cumulative(REFERENCE, EDGES) for f in "abcdz"},
        prediction_value_buckets={
            "b": cumulative([0] * 5, PRICE_EDGES),
            "c": cumulative([1, 0, 0, 0, 0], PRICE_EDGES),
            "z": cumulative(ok, PRICE_EDGES),
        },
        reference_prediction_value_ratios={f: cumulative(REFERENCE, PRICE_EDGES) for f in "abcz"},
        prediction_classes={("a", "0"): 10.0, ("a", "1"): 10.0, ("z", "0"): 60.0, ("z", "1"): 40.0},
        reference_prediction_class_ratios={
            ("a", "0"): 0.6,
            ("a", "1"): 0.4,
            ("z", "0"): 0.6,
            ("z", "1"): 0.4,
        },
    )
    drift = judge_window(spec(), w)
    assert drift.verdict == "NoDrift"
    # the input z, the classifier output z and the regressor output z: three tested
    assert sorted((f.kind, f.name, f.observations) for f in drift.findings) == [
        ("input", "z", 2000.0),
        ("output", "z", 100.0),
        ("output", "z", 2000.0),
    ]
    assert drift.message.startswith("no drift in 3 tested: ")


def test_a_classifiers_psi_is_over_the_classes_of_the_reference_and_of_the_window() -> None:
    # class 2 was never predicted, class 3 is new: four classes, the reference without 3
    w = RevisionMetrics(
        prediction_classes={("label", "0"): 400.0, ("label", "1"): 300.0, ("label", "3"): 100.0},
        reference_prediction_class_ratios={("label", c): p for c, p in CLASSES.items()},
    )
    drift = judge_window(spec(dataDrift=None), w)
    psi = psi_of([0.5, 0.3, 0.2, 0.0], [400.0, 300.0, 0.0, 100.0])
    allowed = allowed_of(0.1, 800, 4, 1)
    assert drift.findings == [finding("output", "label", psi, allowed, 800.0)]
    assert drift.verdict == "Drifted"


def test_too_few_predictions_of_a_class_output_are_inconclusive() -> None:
    w = RevisionMetrics(
        prediction_classes={("label", "0"): 20.0, ("label", "1"): 20.0, ("label", "2"): 19.0},
        reference_prediction_class_ratios={("label", c): p for c, p in CLASSES.items()},
    )
    drift = judge_window(spec(dataDrift=None), w)
    assert drift == WindowDrift(
        "Inconclusive",
        "too little to judge: 59 predictions of 'label' < 60 for a reliable PSI over 3 bins "
        "(20 per bin)",
    )


def test_a_model_without_reference_statistics_is_inconclusive() -> None:
    assert judge_window(spec(), RevisionMetrics()) == WindowDrift(
        "Inconclusive",
        "too little to judge: the model has no reference input statistics; "
        "the model has no reference prediction statistics",
    )
    assert judge_window(spec(dataDrift=None), RevisionMetrics()) == WindowDrift(
        "Inconclusive", "too little to judge: the model has no reference prediction statistics"
    )
    # a spec with no check at all (the API refuses it) has nothing to say why
    bare = MonitoringSpec.model_construct(data_drift=None, prediction_drift=None)
    assert judge_window(bare, RevisionMetrics()) == WindowDrift(
        "Inconclusive", "too little to judge: no observations"
    )


def test_no_drift_names_the_feature_closest_to_its_limit() -> None:
    # b moved a little, a not at all: b is the worst, though tested after a
    counts = {"a": shifted(0), "b": shifted(60)}
    drift = judge_window(spec(predictionDrift=None), features(counts))
    allowed = allowed_of(0.1, 2000, 5, 2)  # alpha shared by the two
    psi_b = psi_of(REFERENCE, counts["b"])
    assert drift == WindowDrift(
        "NoDrift",
        f"no drift in 2 tested: worst input 'b' PSI {g4(psi_b)} (at most {g4(allowed)} "
        "allowed with 2000 observations)",
        [
            finding("input", "b", psi_b, allowed, 2000.0),
            finding("input", "a", 0.0, allowed, 2000.0),
        ],
    )


# 20 features: 5 drifted (shift >= 120), 15 not, named in an order unrelated to their shift.
SHIFTS = {
    "f00": 42, "f01": 130, "f02": 0, "f03": 91, "f04": 7, "f05": 160, "f06": 56, "f07": 14,
    "f08": 120, "f09": 98, "f10": 28, "f11": 150, "f12": 63, "f13": 21, "f14": 84, "f15": 35,
    "f16": 140, "f17": 70, "f18": 77, "f19": 49,
}  # fmt: skip


@pytest.mark.parametrize("drifted", [4, 5])
def test_drift_names_the_four_worst_and_counts_the_rest(drifted: int) -> None:
    shifts = dict(SHIFTS)
    if drifted == 4:
        del shifts["f08"]  # the least drifted of the five
    counts = {name: shifted(s) for name, s in shifts.items()}
    drift = judge_window(spec(predictionDrift=None), features(counts))
    allowed = allowed_of(0.1, 2000, 5, len(shifts))
    worst_first = sorted(shifts, key=lambda name: -shifts[name])
    expected = [
        finding("input", name, psi_of(REFERENCE, counts[name]), allowed, 2000.0)
        for name in worst_first
    ]
    assert [f.psi > f.allowed for f in expected].count(True) == drifted
    named = ", ".join(f"input '{f.name}' PSI {g4(f.psi)} > {g4(f.allowed)}" for f in expected[:4])
    more = " and 1 more" if drifted == 5 else ""
    assert drift == WindowDrift(
        "Drifted",
        f"drift shown at alpha 0.01: {named}{more}",
        expected[:MAX_DRIFT_FINDINGS],
    )
    assert len(drift.findings) == MAX_DRIFT_FINDINGS < len(shifts)


def test_drift_lists_up_to_four_without_a_remainder() -> None:
    counts = {"a": shifted(0), "b": shifted(160), "c": shifted(140)}
    drift = judge_window(spec(predictionDrift=None), features(counts))
    allowed = allowed_of(0.1, 2000, 5, 3)
    psi_b, psi_c = psi_of(REFERENCE, counts["b"]), psi_of(REFERENCE, counts["c"])
    assert drift.message == (
        f"drift shown at alpha 0.01: input 'b' PSI {g4(psi_b)} > {g4(allowed)}, "
        f"input 'c' PSI {g4(psi_c)} > {g4(allowed)}"
    )
    assert [f.name for f in drift.findings] == ["b", "c", "a"]


def test_a_psi_equal_to_the_allowed_one_is_not_drift() -> None:
    """Drift is a PSI shown *above* what maxPSI allows: a maxPSI whose allowed PSI is the
    window's own (to the six decimals of the status) is no drift."""
    counts = shifted(120)
    psi = round(psi_of(REFERENCE, counts), 6)
    low, high = 0.0, psi  # allowed_of grows with maxPSI; bisect for allowed == psi
    for _ in range(100):
        mid = (low + high) / 2
        if round(allowed_of(mid, 2000, 5, 1), 6) < psi:
            low = mid
        else:
            high = mid
    assert round(allowed_of(high, 2000, 5, 1), 6) == psi
    drift = judge_window(
        spec(dataDrift={"maxPSI": high}, predictionDrift=None), features({"x": counts})
    )
    (f,) = drift.findings
    assert f.psi == f.allowed == psi
    assert drift.verdict == "NoDrift"


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
