"""The state machine and the judge's evidence: a failure shown by the evidence rolls back at
once, evidence shown within tolerance promotes early (when the policy says so), the bake goes
on with the rollout's evidence, and reconcile judges a measured window with the evidence in
status."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from canarium.analysis import MeasuredWindow, RevisionMetrics, WindowResult
from canarium.api import Evidence, Measurement, Verdict
from canarium.reconcile import ReconcileInput
from canarium.rollout import AnalysisRun

from tests.unit.test_rollout import POLICY, Judgement, Sim

STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "1h"}},
    {"setWeight": 50},
    {"pause": {"duration": "1h"}},
    {"setWeight": 100},
]


def policy(analysis: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    checks: dict[str, Any] = {"errorRate": {}}
    return {
        "steps": STEPS,
        "analysis": {
            "interval": "30s",
            "failureLimit": 2,
            "minSamples": 10,
            "checks": checks,
            **(analysis or {}),
        },
        **extra,
    }


def evidence(check: str = "errorRate", decision: str | None = None, **kw: Any) -> Evidence:
    return Evidence.model_validate({"check": check, "decision": decision, **kw})


def judged(verdict: Verdict, sim: Sim, *gathered: Evidence) -> Judgement:
    reason = "shown worse than 1.5x stable" if verdict == "Failed" else "fine"
    measurement = Measurement(
        check="errorRate",
        value=3.0,
        threshold="ratio <= 1.5 vs stable",
        verdict=verdict,
        reason=reason,
        time=sim.now,
    )
    return Judgement(verdict, [measurement], evidence=list(gathered))


def interval(sim: Sim, verdict: Verdict, *gathered: Evidence, seconds: float = 31) -> None:
    sim.tick(seconds)
    sim.reconcile(AnalysisRun(sim.now, judged(verdict, sim, *gathered)))
    sim.settle(1)


def rolling(p: dict[str, Any]) -> Sim:
    sim = Sim(p)
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["currentStep"] == 1
    return sim


def test_a_failure_shown_by_the_evidence_rolls_back_at_once_whatever_the_failure_limit() -> None:
    # A failed interval without a failed decision counts towards failureLimit 2: it holds.
    sim = rolling(policy())
    interval(sim, "Failed", evidence())
    assert sim.phase == "Progressing"
    assert sim.status["analysis"]["failures"] == 1
    # The evidence showed it worse: back at once.
    sim = rolling(policy())
    interval(sim, "Failed", evidence(decision="Failed"))
    assert sim.phase == "Degraded"
    degraded = sim.condition("Degraded")
    assert degraded["reason"] == "AnalysisFailed"
    assert (
        "rolled back: analysis showed errorRate worse than tolerated: errorRate 3 (limit ratio "
        "<= 1.5 vs stable): shown worse than 1.5x stable"
    ) in degraded["message"]
    assert sim.status["history"][0]["outcome"] == "RolledBack"
    assert sim.status["analysis"]["failures"] == 1


def test_retry_starts_with_no_evidence() -> None:
    sim = rolling(policy())
    interval(sim, "Failed", evidence(decision="Failed", canaryRequests=500, canaryEvents=50))
    assert sim.phase == "Degraded"
    sim.annotations["canarium.dev/command"] = "retry@1"
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status.get("analysis", {}).get("evidence", []) == []
    # Its new evidence alone decides: a window that did not fail does not roll back.
    interval(sim, "Passed", evidence(canaryRequests=100))
    assert sim.phase == "Progressing"


def promoted_early(sim: Sim) -> bool:
    return any(e.reason == "PromotedEarly" for e in sim.events)


def test_early_promotion_skips_timed_pauses_once_the_canary_is_shown_within() -> None:
    sim = rolling(policy({"earlyPromotion": True}))
    # Not shown yet: the 1h pause holds.
    interval(sim, "Passed", evidence())
    assert sim.status["currentStep"] == 1
    assert not promoted_early(sim)
    interval(sim, "Passed", evidence(decision="Passed"))
    assert promoted_early(sim)
    assert "canary" not in sim.status, "both 1h pauses skipped: promoted"
    assert sim.status["history"][0]["outcome"] == "Promoted"
    messages = [e.message for e in sim.events if e.reason == "PromotedEarly"]
    assert len(messages) == 2
    assert all("(earlyPromotion)" in m for m in messages)


def test_without_early_promotion_a_shown_within_canary_waits_its_pauses() -> None:
    sim = rolling(policy())
    interval(sim, "Passed", evidence(decision="Passed"))
    assert sim.status["currentStep"] == 1
    assert "pausing until" in sim.status["message"]
    assert not promoted_early(sim)


def test_early_promotion_needs_every_comparison_shown_within() -> None:
    p = policy({"earlyPromotion": True, "checks": {"errorRate": {}, "latencyP99": {}}})
    sim = rolling(p)
    interval(sim, "Passed", evidence(decision="Passed"), evidence("latencyP99"))
    assert sim.status["currentStep"] == 1
    assert not promoted_early(sim)
    interval(sim, "Passed", evidence(decision="Passed"), evidence("latencyP99", decision="Passed"))
    assert promoted_early(sim)
    assert "canary" not in sim.status
    # Drift checks alone are no comparison with stable: nothing to promote early on.
    drift = rolling(policy({"earlyPromotion": True, "checks": {"dataDrift": {}}}))
    interval(drift, "Passed", evidence("dataDrift", decision="Passed"))
    assert drift.status["currentStep"] == 1
    assert not promoted_early(drift)


def test_early_promotion_still_waits_for_a_person() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1h"}}]
    sim = rolling({**policy({"earlyPromotion": True}), "steps": [*steps, {"setWeight": 100}]})
    interval(sim, "Passed", evidence(decision="Passed"))
    assert sim.status["currentStep"] == 1
    assert sim.phase == "Paused"
    assert not promoted_early(sim)
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    # The person ended the untimed pause; the timed one is skipped on the evidence.
    assert promoted_early(sim)
    assert "canary" not in sim.status


def test_the_bake_goes_on_with_the_rollouts_evidence() -> None:
    sim = rolling(policy(bake="10m"))
    gathered = evidence(canaryRequests=400, canaryEvents=4, stableRequests=1200, stableEvents=12)
    for _ in range(200):
        if "canary" not in sim.status:
            break
        interval(sim, "Passed", gathered, seconds=600)
    assert sim.status.get("previous") is not None, "baking"
    analysis = sim.status["analysis"]
    assert (analysis["intervals"], analysis["failures"]) == (0, 0), "intervals count afresh"
    assert analysis["evidence"] == [gathered.to_dict()]
    # A failure shown during the bake rolls back to the previous revision at once.
    interval(sim, "Failed", evidence(decision="Failed"))
    assert sim.status["history"][0]["outcome"] == "RolledBack"
    assert sim.status["stable"]["modelVersion"] == "1.0.0"


class WindowSim(Sim):
    """The simulator with a measured window handed in, as the controller does: reconcile
    judges it with the evidence in status."""

    window: MeasuredWindow | None = None

    def input(self, run: AnalysisRun | None = None) -> ReconcileInput:
        inp = super().input(run)
        if self.window is None:
            return inp
        return dataclasses.replace(inp, analysis_window=self.window)

    def measured(self, canary: RevisionMetrics, stable: RevisionMetrics) -> None:
        self.tick(31)
        self.window = MeasuredWindow(self.now, WindowResult(canary, stable))
        self.reconcile()
        self.window = None


def test_reconcile_judges_a_measured_window_with_the_evidence_in_status() -> None:
    analysis: dict[str, Any] = {
        **cast(dict[str, Any], POLICY["analysis"]),
        "checks": {"errorRate": {}},
    }
    sim = WindowSim({**POLICY, "analysis": analysis})
    sim.settle()
    sim.release("2.0.0")
    # Errors enough on both sides that the window passes on its own (a canary twice as bad
    # as tolerated is clearly less likely).
    canary = RevisionMetrics(requests=1000, errors=10, pods=1)
    stable = RevisionMetrics(requests=3000, errors=30, pods=3)
    sim.measured(canary, stable)
    (first,) = sim.status["analysis"]["evidence"]
    assert (first["canaryRequests"], first["stableRequests"]) == (1000, 3000)
    assert sim.status["analysis"]["lastVerdict"] == "Passed"
    sim.measured(canary, stable)
    (second,) = sim.status["analysis"]["evidence"]
    assert (second["canaryRequests"], second["canaryEvents"]) == (2000, 20)
    assert (second["stableRequests"], second["stableEvents"]) == (6000, 60)
    assert second["logLikelihood"] != first["logLikelihood"]
    assert sim.status["analysis"]["intervals"] == 2
    # A baseline (nothing measured yet) keeps the evidence as it is.
    sim.tick(31)
    sim.window = MeasuredWindow(sim.now, None)
    sim.reconcile()
    sim.window = None
    assert sim.status["analysis"]["evidence"] == [second]
    # A canary shown worse rolls back from the evidence it adds to.
    bad = RevisionMetrics(requests=100, errors=40, pods=1)
    sim.measured(bad, stable)
    assert sim.phase == "Degraded"
    assert "analysis showed errorRate worse" in sim.condition("Degraded")["message"]
