"""The bake after promotion: the promoted revision is still analysed, the previous one kept
scaled down to go back to. A failure rolls back to it; a person can abort to it or pause the
bake; when it is gone, a failure is reported, never hidden."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from canarium.api import Measurement
from canarium.rollout import AnalysisRun, Event

from tests.unit.test_rollout import POLICY, Judgement, Sim, _hash

BAKED = {**POLICY, "bake": "2m"}
V1, V2 = "iris-" + _hash("1.0.0"), "iris-" + _hash("2.0.0")


def _baking(policy: dict[str, Any] | None = None) -> Sim:
    """2.0.0 promoted over 1.0.0, its bake just started."""
    sim = Sim(policy or BAKED)
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    assert sim.status["previous"]["name"] == V1
    assert sim.condition("Ready")["reason"] == "Baking"
    return sim


def _event(sim: Sim, reason: str) -> Event:
    """The event of the last reconcile with this reason."""
    assert sim.last is not None
    return next(e for e in sim.last.events if e.reason == reason)


def _fail_twice(sim: Sim) -> None:
    for _ in range(2):
        sim.tick(30)
        sim.analyse("Failed", 0.3)


# --- The previous revision is gone --------------------------------------------------------------
def test_a_failed_bake_without_its_previous_revision_is_degraded_never_healthy() -> None:
    sim = _baking()
    del sim.deployments[V1]  # someone deleted it
    sim.settle()
    assert sim.phase == "Progressing", "still baking: nothing failed yet"
    _fail_twice(sim)
    assert sim.phase == "Degraded"
    degraded = sim.condition("Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "BakeFailedPreviousGone"
    assert degraded["message"] == (
        f"model 2.0.0 ({V2}) failed its bake (analysis failed 2/2 intervals: errorRate 0.3 "
        f"(limit <= 0.05): too many errors); the previous revision {V1} (model 1.0.0) is gone "
        "and cannot be restored. It keeps serving all traffic: apply a fixed version, or revert "
        "the spec to roll the previous version out again."
    )
    assert sim.condition("Ready")["status"] == "False"
    warning = _event(sim, "BakeFailedPreviousGone")
    assert warning.type == "Warning"
    assert f"the previous revision {V1} (model 1.0.0) is gone" in warning.message
    # The promoted revision serves on: there is nothing else.
    assert sim.status["stable"]["name"] == V2
    assert sim.status["stable"]["effectiveWeight"] == 100.0
    assert sim.replicas_of("2.0.0") == 4
    assert "previous" not in sim.status
    assert "bakeUntil" not in sim.status
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["outcome"], entry["cause"]) == (
        V2, "Promoted", "BakeFailedPreviousGone",
    )  # fmt: skip
    assert len(sim.status["history"]) == 1, "the promotion's entry says what became of it"
    # It stays so: later reconciles do not call it Healthy.
    for _ in range(3):
        sim.tick(600)
        sim.settle()
        assert sim.phase == "Degraded"
        assert sim.condition("Degraded")["reason"] == "BakeFailedPreviousGone"


def test_a_failed_bake_without_its_previous_revision_ends_with_a_new_version() -> None:
    sim = _baking()
    del sim.deployments[V1]
    _fail_twice(sim)
    sim.release("3.0.0")
    assert sim.phase == "Progressing"
    assert sim.status["canary"]["modelVersion"] == "3.0.0"
    assert sim.status["canary"]["weight"] == 25
    sim.walk_to_promotion()
    assert sim.phase == "Progressing", "3.0.0 bakes"
    sim.tick(121)
    sim.settle()
    assert sim.phase == "Healthy"


def test_the_old_version_can_be_rolled_out_again_after_a_bake_without_fallback() -> None:
    sim = _baking()
    del sim.deployments[V1]
    _fail_twice(sim)
    sim.release("1.0.0")  # revert the spec: 1.0.0 comes back as a canary
    assert sim.phase == "Progressing"
    assert sim.status["canary"]["name"] == V1
    assert sim.status["stable"]["name"] == V2


def test_a_failed_bake_is_reported_even_without_its_promotion_in_the_history() -> None:
    sim = _baking()
    del sim.deployments[V1]
    sim.status["history"] = []  # e.g. a status written by hand
    _fail_twice(sim)
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "BakeFailedPreviousGone"
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["modelVersion"], entry["outcome"]) == (V2, "2.0.0", "Promoted")
    assert entry["time"] == sim.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_stable_revision_whose_pods_fail_after_a_failed_bake_says_so() -> None:
    """The pods' own failure is the more urgent news; once they recover the bake's is back."""
    sim = _baking()
    del sim.deployments[V1]
    _fail_twice(sim)
    sim.not_ready.add(V2)
    sim.deadline.add(V2)
    sim.settle()
    assert sim.condition("Degraded")["reason"] == "ProgressDeadlineExceeded"
    sim.not_ready.clear()
    sim.deadline.clear()
    sim.settle()
    assert sim.condition("Degraded")["reason"] == "BakeFailedPreviousGone"


# --- abort -----------------------------------------------------------------------------------
def test_abort_during_a_bake_rolls_back_to_the_previous_revision() -> None:
    sim = _baking()
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.phase == "Degraded"
    degraded = sim.condition("Degraded")
    assert degraded["reason"] == "Aborted"
    assert degraded["message"] == (
        f"model 2.0.0 ({V2}) was aborted: aborted by a person during its bake. Traffic is on "
        f"{V1} (model 1.0.0). Revert the spec, apply a new version, or `kubectl canarium retry`."
    )
    assert sim.status["stable"]["name"] == V1
    assert sim.status["canary"]["name"] == V2
    assert sim.status["canary"]["weight"] == 0
    assert "previous" not in sim.status
    assert "bakeUntil" not in sim.status
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["outcome"], entry["cause"]) == (V2, "Aborted", "Aborted")
    assert "Aborted" in sim.reasons()
    # The previous revision scales up; the promoted one serves until it is ready.
    assert sim.replicas_of("1.0.0") == 4
    sim.settle()
    assert sim.replicas_of("2.0.0") == 0
    assert sim.status["stable"]["effectiveWeight"] == 100.0
    # It stays aborted until a person says retry.
    sim.tick(600)
    sim.settle()
    assert sim.phase == "Degraded"
    sim.annotations["canarium.dev/command"] = "retry@2"
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status["canary"]["name"] == V2
    assert sim.status["canary"]["weight"] == 25


def test_abort_during_a_bake_without_its_previous_revision_is_refused() -> None:
    sim = _baking()
    del sim.deployments[V1]
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    ignored = _event(sim, "CommandIgnored")
    assert ignored.type == "Warning"
    assert ignored.message == (
        f"abort ignored: the previous revision {V1} is gone, there is nothing to roll back to; "
        f"{V2} keeps serving"
    )
    assert sim.status["lastCommand"] == "abort@1"
    assert sim.phase == "Progressing"
    assert sim.condition("Ready")["reason"] == "Baking"
    assert sim.status["stable"]["name"] == V2
    assert sim.replicas_of("2.0.0") == 4
    sim.tick(121)
    sim.settle()
    assert sim.phase == "Healthy"


# --- pause -----------------------------------------------------------------------------------
def test_a_paused_bake_does_not_complete() -> None:
    sim = _baking()
    sim.tick(60)
    sim.annotations["canarium.dev/paused"] = "true"
    plan = sim.reconcile()
    assert sim.phase == "Paused"
    assert sim.status["pauseReason"] == "paused by a person (canarium.dev/paused)"
    assert plan.requeue_after == 1.0, "only the analysis (its first snapshot) wakes it"
    for _ in range(10):
        sim.tick(60)
        sim.settle()
        assert sim.phase == "Paused"
        assert sim.status["previous"]["name"] == V1
        assert V1 in sim.deployments, "the fallback is kept while paused"
        assert sim.replicas_of("1.0.0") == 0
        assert sim.condition("Ready")["status"] == "True", "the promoted version serves"
        assert sim.condition("Progressing")["status"] == "True"
    assert sim.status["message"] == (
        f"model 2.0.0 promoted; its bake is paused ({V1} kept scaled down): it starts again, in "
        "full, when resumed"
    )
    # Resumed: the bake runs again, its full two minutes from now.
    sim.tick(30)
    del sim.annotations["canarium.dev/paused"]
    plan = sim.reconcile()
    assert sim.phase == "Progressing"
    assert "pauseReason" not in sim.status
    assert sim.status["bakeUntil"] == (sim.now + timedelta(minutes=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert plan.requeue_after == 1.0
    sim.tick(119)
    sim.settle()
    assert sim.phase == "Progressing"
    assert V1 in sim.deployments
    sim.tick(2)
    sim.settle()
    assert sim.phase == "Healthy"
    assert V1 not in sim.deployments


def test_a_paused_bake_still_rolls_back_on_failed_analysis() -> None:
    sim = _baking()
    sim.annotations["canarium.dev/paused"] = "true"
    sim.reconcile()
    _fail_twice(sim)
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "AnalysisFailed"
    assert sim.status["stable"]["name"] == V1
    assert "pauseReason" not in sim.status


def test_a_paused_bake_can_be_aborted() -> None:
    sim = _baking()
    sim.annotations["canarium.dev/paused"] = "true"
    sim.reconcile()
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "Aborted"
    assert sim.status["stable"]["name"] == V1


def test_later_reconciles_of_a_bake_keep_all_traffic_on_the_promoted_revision() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(BAKED, traffic=traffic)
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    sim.tick(10)
    sim.settle()
    assert sim.status["stable"] == {
        "name": V2, "modelVersion": "2.0.0", "replicas": 4, "readyReplicas": 4, "weight": 100,
        "effectiveWeight": 100.0,
    }  # fmt: skip
    assert sim.last is not None
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}
    assert sim.replicas_of("1.0.0") == 0


def test_a_bake_ends_at_its_end_time() -> None:
    sim = _baking()
    sim.now = datetime.fromisoformat(sim.status["bakeUntil"].replace("Z", "+00:00"))
    sim.settle()
    assert sim.phase == "Healthy"
    assert V1 not in sim.deployments


def test_a_bake_end_time_without_a_previous_revision_is_dropped() -> None:
    sim = Sim(BAKED)
    sim.settle()
    sim.status["bakeUntil"] = "2030-01-01T00:00:00Z"  # e.g. a status edited by hand
    sim.settle()
    assert sim.phase == "Healthy"
    assert "bakeUntil" not in sim.status


def test_a_long_failed_bake_reason_is_cut_to_what_status_holds() -> None:
    sim = _baking({**BAKED, "analysis": {**POLICY["analysis"], "failureLimit": 1}})
    del sim.deployments[V1]
    sim.tick(30)
    failed = [
        Measurement(check=f"custom{i}", value=1.0, threshold="<= 0.5", verdict="Failed",
                    reason="x" * 100, time=sim.now)
        for i in range(20)
    ]  # fmt: skip
    sim.reconcile(AnalysisRun(sim.now, Judgement("Failed", failed)))
    assert sim.condition("Degraded")["reason"] == "BakeFailedPreviousGone"
    reason = sim.status["history"][0]["reason"]
    assert len(reason) == 1024
    assert reason.startswith("failed its bake (analysis failed 1/1 intervals: custom0 1 (limit")


def test_the_bake_wakes_itself_at_its_end() -> None:
    sim = _baking()
    sim.tick(100)
    plan = sim.analyse("Passed")
    assert plan.requeue_after == 20, "the bake ends before the next interval is due"


def test_an_autoscaled_bake_gives_the_previous_revision_no_autoscaler() -> None:
    serving = {"replicas": 4, "autoscaling": {"minReplicas": 2, "maxReplicas": 8}}
    sim = Sim(BAKED, serving=serving)
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    sim.tick(10)
    sim.settle()
    assert sim.hpas == {V2}
    assert sim.replicas_of("1.0.0") == 0


def test_a_failed_bake_without_its_promotion_in_the_history_records_why_it_is_degraded() -> None:
    sim = _baking()
    del sim.deployments[V1]
    sim.status["history"] = []
    _fail_twice(sim)
    entry = sim.status["history"][0]
    assert entry["cause"] == "BakeFailedPreviousGone"
    assert entry["reason"].startswith("failed its bake (")
    assert f"the previous revision {V1} (model 1.0.0) is gone" in entry["reason"]
