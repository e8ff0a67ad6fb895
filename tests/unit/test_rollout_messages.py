"""What a person reads of a rollout: the events (type, reason, message), the status message and
the fields of status and of the emitted Deployments, written out by hand; and the small pure
helpers of the state machine (pod failure descriptions, commands, when analysis is due)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from canarium.api import (
    AnalysisSpec,
    AnalysisStatus,
    Measurement,
    ModelDeploymentStatus,
    RolloutPolicySpec,
    Verdict,
)
from canarium.observation import PodFailure, RevisionObservation
from canarium.reconcile import rollout_input as make_input
from canarium.rollout import (
    AnalysisRun,
    Decision,
    Reason,
    RevisionPlan,
    RolloutInput,
    analysis_due,
    decide,
    hold_for_policy,
    keep_serving,
    next_analysis_at,
    parse_command,
    serving_phase,
    steps_hash,
)
from canarium.routers import router_for

from tests.unit.operator_fixtures import NOW, crashloop_pod, mdep, observed
from tests.unit.test_rollout import MANUAL, POLICY, STEPS_ONLY, Judgement, Sim, _hash, judgement

V1, V2, V3 = ("iris-" + _hash(v) for v in ("1.0.0", "2.0.0", "3.0.0"))
# Events that reconcile adds on every phase change; these tests are about the rollout's own.
PHASES = {"Pending", "Progressing", "Paused", "Healthy", "Degraded"}


def rollout_events(sim: Sim) -> list[tuple[str, str, str]]:
    return [(e.type, e.reason, e.message) for e in sim.events if e.reason not in PHASES]


def role(sim: Sim, revision: str) -> str:
    return str(sim.deployments[revision]["metadata"]["labels"]["canarium.dev/role"])


# --- A whole rollout, as its events tell it ------------------------------------------------------
def test_the_events_of_a_rollout_from_start_to_the_end_of_its_bake() -> None:
    sim = Sim({**POLICY, "bake": "2m"})
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["message"] == (
        f"canary {V2} (model 2.0.0) at step 2/5 (pause 1m), weight 25% (effective 25.0%); "
        f"pausing until {(NOW + timedelta(minutes=1)).isoformat()}"
    )
    sim.walk_to_promotion()
    assert sim.status["message"] == (
        f"model 2.0.0 promoted; baking under analysis until "
        f"{(sim.now + timedelta(minutes=2)).isoformat()} ({V1} kept scaled down)"
    )
    sim.tick(121)
    sim.settle()
    assert rollout_events(sim) == [
        ("Normal", "RolloutStarted", f"canary {V2} (model 2.0.0): step 1/5 (setWeight 25)"),
        ("Normal", "StepStarted", f"{V2}: step 2/5 (pause 1m)"),
        ("Normal", "StepStarted", f"{V2}: step 3/5 (setWeight 50)"),
        ("Normal", "StepStarted", f"{V2}: step 4/5 (pause 1m)"),
        ("Normal", "StepStarted", f"{V2}: step 5/5 (setWeight 100)"),
        ("Normal", "Promoted", f"{V2} (model 2.0.0) is stable"),
        ("Normal", "BakeCompleted", f"{V2} passed its bake; {V1} removed"),
    ]
    assert sim.status["message"] == f"model 2.0.0 served by {V2}"
    assert sim.condition("Ready")["reason"] == "Available"


def test_the_bake_keeps_the_previous_revision_at_zero_pods_and_no_traffic() -> None:
    sim = Sim({**POLICY, "bake": "2m"})
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    assert sim.status["previous"] == {
        "name": V1, "modelVersion": "1.0.0", "replicas": 0, "weight": 0,
    }  # fmt: skip
    assert sim.status["stable"] == {
        "name": V2, "modelVersion": "2.0.0", "replicas": 4, "readyReplicas": 4, "weight": 100,
        "effectiveWeight": 100.0,
    }  # fmt: skip
    assert "canary" not in sim.status
    assert (role(sim, V2), role(sim, V1)) == ("stable", "previous")
    assert sim.replicas_of("1.0.0") == 0
    assert sim.condition("Ready")["status"] == "True"
    assert sim.condition("Progressing")["reason"] == "Baking"
    # The bake's intervals count afresh; the rollout's evidence (none here: the simulated
    # judgements carry none) goes on.
    assert sim.status["analysis"] == {
        "intervals": 0, "failures": 0, "consecutiveInconclusive": 0, "measurements": [],
        "evidence": [],
    }  # fmt: skip
    # Later reconciles of the bake say until when, and what is kept.
    sim.tick(10)
    sim.settle()
    until = sim.status["bakeUntil"]
    assert sim.status["message"] == (
        f"model 2.0.0 promoted; baking under analysis until "
        f"{until.replace('Z', '+00:00')} ({V1} kept scaled down)"
    )
    assert (role(sim, V2), role(sim, V1)) == ("stable", "previous")


def test_a_promotion_without_a_bake_is_healthy_at_once() -> None:
    sim = Sim(STEPS_ONLY)
    sim.settle()
    sim.release("2.0.0")
    for _ in range(3):
        sim.tick(21)
        sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["message"] == f"model 2.0.0 served by {V2}"
    assert sim.condition("Ready")["reason"] == "Available"
    assert list(sim.deployments) == [V2]
    assert role(sim, V2) == "stable"
    assert sim.replicas_of("2.0.0") == 4
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["modelVersion"], entry["outcome"], entry["reason"]) == (
        V2, "2.0.0", "Promoted", f"replaced {V1} (model 1.0.0)",
    )  # fmt: skip
    assert "analysis" not in sim.status


def test_roles_of_the_revisions_during_a_rollout_and_after_a_rollback() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    assert (role(sim, V1), role(sim, V2)) == ("stable", "canary")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert (role(sim, V1), role(sim, V2)) == ("stable", "canary")
    assert sim.status["canary"]["replicas"] == 0
    assert sim.status["stable"]["replicas"] == 4


# --- Rollbacks and aborts -------------------------------------------------------------------
def test_what_a_rollback_on_analysis_says() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    for value in (0.4, 0.5):
        sim.tick(30)
        sim.analyse("Failed", value)
    why = "analysis failed 2/2 intervals: errorRate 0.5 (limit <= 0.05): too many errors"
    assert ("Warning", "RolledBack", f"{V2} rolled back, traffic back on {V1}: {why}") in (
        rollout_events(sim)
    )
    assert sim.status["message"] == (
        f"model 2.0.0 ({V2}) was rolled back: {why}. Traffic is on {V1} (model 1.0.0). "
        "Revert the spec, apply a new version, or `kubectl canarium retry`."
    )
    entry = sim.status["history"][0]
    assert (entry["modelVersion"], entry["reason"], entry["cause"]) == (
        "2.0.0",
        why,
        "AnalysisFailed",
    )
    assert "currentStep" not in sim.status
    assert "stepStartedAt" not in sim.status


def test_what_an_abort_says() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert (
        "Warning",
        "Aborted",
        f"{V2} rolled back, traffic back on {V1}: aborted by a person",
    ) in (rollout_events(sim))
    assert sim.status["message"] == (
        f"model 2.0.0 ({V2}) was aborted: aborted by a person. Traffic is on {V1} (model "
        "1.0.0). Revert the spec, apply a new version, or `kubectl canarium retry`."
    )
    assert sim.condition("Degraded")["reason"] == "Aborted"


def test_a_failed_interval_without_failed_checks_rolls_back_with_no_detail() -> None:
    sim = Sim({**POLICY, "analysis": {**POLICY["analysis"], "failureLimit": 1}})
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    sim.reconcile(AnalysisRun(sim.now, Judgement("Failed", [])))
    assert sim.condition("Degraded")["reason"] == "AnalysisFailed"
    assert sim.status["history"][0]["reason"] == "analysis failed 1/1 intervals: no detail"


def test_a_failed_check_without_a_value_or_reason_is_named_as_such() -> None:
    sim = Sim({**POLICY, "analysis": {**POLICY["analysis"], "failureLimit": 1}})
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    measurements = [
        Measurement(check="latencyP99", value=None, threshold="<= 200ms", verdict="Failed",
                    time=sim.now),
        Measurement(check="errorRate", value=0.123456, threshold="<= 0.05", verdict="Failed",
                    time=sim.now),
        Measurement(check="samples", value=50, threshold=">= 10", verdict="Passed", time=sim.now),
    ]  # fmt: skip
    sim.reconcile(AnalysisRun(sim.now, Judgement("Failed", measurements)))
    assert sim.status["history"][0]["reason"] == (
        "analysis failed 1/1 intervals: latencyP99 (limit <= 200ms); "
        "errorRate 0.1235 (limit <= 0.05)"
    )


def test_a_canary_that_is_asked_for_again_after_a_revert_starts_over() -> None:
    sim = Sim()
    sim.settle()
    sim.not_ready.add(V1)
    sim.release("2.0.0")
    sim.release("1.0.0")  # the canary serves on: the stable revision has no ready pod
    sim.events.clear()
    sim.release("2.0.0")
    assert ("Normal", "RolloutStarted", f"canary {V2} (model 2.0.0): step 1/5 (setWeight 25)") in (
        rollout_events(sim)
    )


def test_a_superseded_canary_is_recorded_with_its_version() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.release("3.0.0")
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["modelVersion"], entry["outcome"], entry["reason"]) == (
        V2, "2.0.0", "Replaced", f"superseded by {V3} before it finished",
    )  # fmt: skip


# --- Commands -------------------------------------------------------------------------------
def test_what_promote_and_retry_say() -> None:
    sim = Sim(MANUAL)
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["pauseReason"] == "paused until promoted (kubectl canarium promote)"
    assert sim.status["message"] == (
        f"canary {V2} (model 2.0.0) at step 2/3 (pause until promoted), weight 20% "
        "(effective 20.0%); paused until promoted (kubectl canarium promote)"
    )
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    assert ("Normal", "Promoted", "step 2/3 (pause until promoted) ended by a person") in (
        rollout_events(sim)
    )
    sim.release("3.0.0")
    sim.annotations["canarium.dev/command"] = "abort@2"
    sim.settle()
    sim.annotations["canarium.dev/command"] = "retry@3"
    sim.events.clear()
    sim.settle()
    assert ("Normal", "RolloutStarted", f"canary {V3} (model 3.0.0): step 1/3 (setWeight 20)") in (
        rollout_events(sim)
    )
    assert ("Normal", "RolloutRetried", f"retrying {V3} from the first step") in rollout_events(sim)
    sim.annotations["canarium.dev/command"] = "promote-full@4"
    sim.settle()
    assert ("Normal", "PromotedFully", "promoted to the end by a person") in rollout_events(sim)
    assert sim.status["stable"]["name"] == V3


def test_what_a_refused_promote_says() -> None:
    sim = Sim(MANUAL)
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    assert (
        "Warning", "CommandIgnored",
        "promote ignored: the rollout is paused (canarium.dev/paused); resume it, then promote "
        "again",
    ) in rollout_events(sim)  # fmt: skip
    assert sim.status["message"] == (
        f"canary {V2} (model 2.0.0) at step 2/3 (pause until promoted), weight 20% "
        "(effective 20.0%); paused by a person (canarium.dev/paused)"
    )


# --- Steps ----------------------------------------------------------------------------------
def test_a_policy_that_starts_with_a_pause_gives_the_canary_no_traffic() -> None:
    sim = Sim({"steps": [{"pause": {}}, {"setWeight": 100}]})
    sim.settle()
    sim.release("2.0.0")
    assert sim.phase == "Paused"
    assert sim.status["canary"]["weight"] == 0
    assert sim.replicas_of("2.0.0") == 0
    assert sim.replicas_of("1.0.0") == 4


def test_a_pause_of_no_time_does_not_hold() -> None:
    sim = Sim({"steps": [{"setWeight": 25}, {"pause": {"duration": "0s"}}, {"setWeight": 50},
                         {"pause": {}}]})  # fmt: skip
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["currentStep"] == 3
    assert sim.status["canary"]["weight"] == 50


def test_an_interval_measured_as_a_step_starts_does_not_count_for_it() -> None:
    """The interval that ends a pause judged the weight before; the next pause needs one of its
    own, even when its setWeight needs no new pod (10% and 20% of 4 pods are one pod)."""
    policy = {
        "steps": [
            {"setWeight": 10}, {"pause": {"duration": "1m"}},
            {"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 100},
        ],
        "analysis": {**POLICY["analysis"], "interval": "5m"},
    }  # fmt: skip
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.reconcile(AnalysisRun(sim.now, None))  # the first snapshot
    sim.tick(300)
    sim.analyse("Passed")
    assert sim.status["currentStep"] == 3, "at 20%, pausing"
    sim.tick(61)
    sim.settle()
    assert sim.status["currentStep"] == 3
    assert sim.status["message"].endswith("holding for an analysis interval of this step")
    sim.tick(240)
    sim.analyse("Passed")
    assert sim.status["currentStep"] == 4


def test_an_overdue_analysis_asks_to_be_woken_at_once() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.reconcile(AnalysisRun(sim.now, None))
    sim.tick(45)
    assert sim.settle().requeue_after == 0


# --- Pure helpers ---------------------------------------------------------------------------
def test_no_pods_at_all_split_as_none() -> None:
    assert router_for("replicas").pods(0, 25) == (0, 0)
    assert router_for("gatewayAPI").pods(0, 25) == (0, 0)


def test_parse_command_takes_the_verb_before_the_first_at() -> None:
    assert parse_command("promote@1@2") == "promote"
    assert parse_command(" abort @1") == "abort"
    assert parse_command("retry") == "retry"
    assert parse_command("") is None


def failure(**kw: Any) -> PodFailure:
    return PodFailure(**{"pod": "p-1", "container": "server", "reason": "CrashLoopBackOff",
                         "restart_count": 1, **kw})  # fmt: skip


def test_how_failing_pods_are_described() -> None:
    assert failure().describe() == (
        "pod p-1 keeps crashing (1 restart); see `kubectl logs --previous p-1`"
    )
    assert failure(restart_count=2, exit_code=0).describe() == (
        "pod p-1 keeps crashing (exit code 0, 2 restarts); see `kubectl logs --previous p-1`"
    )
    assert failure(reason="ErrImageNeverPull").describe() == (
        "pod p-1 cannot pull its image (imagePullPolicy Never) (ErrImageNeverPull)"
    )
    assert failure(reason="CreateContainerConfigError").describe() == (
        "pod p-1 cannot start its container (CreateContainerConfigError)"
    )


def observation(failing: int, pod_failure: PodFailure | None) -> RevisionObservation:
    return RevisionObservation(
        name="iris-a", rev_hash="a", spec=None, created_as="canary", replicas=3,
        ready_replicas=0, updated_replicas=3, up_to_date=True, deadline_exceeded=False,
        failure=pod_failure, failing_pods=failing,
    )  # fmt: skip


def test_the_failure_message_counts_the_other_failing_pods() -> None:
    crash = failure()
    base = "revision iris-a: pod p-1 keeps crashing (1 restart); see `kubectl logs --previous p-1`"
    assert observation(0, None).failure_message() == ""
    assert observation(1, crash).failure_message() == base
    assert observation(2, crash).failure_message() == f"{base} (and 1 more failing pod)"
    assert observation(3, crash).failure_message() == f"{base} (and 2 more failing pods)"


ANALYSIS = {"interval": "30s", "checks": {"errorRate": {"max": 0.05}}}


def rollout_input(status: dict[str, Any], analysis: dict[str, Any] | None = ANALYSIS,
                  now_after: float = 0) -> RolloutInput:  # fmt: skip
    policy: dict[str, Any] = {"steps": [{"setWeight": 50}]}
    if analysis is not None:
        policy["analysis"] = analysis
    return RolloutInput(
        spec=mdep("2.0.0").spec,
        desired="iris-b",
        status=ModelDeploymentStatus.model_validate(status),
        policy=RolloutPolicySpec.model_validate(policy),
        revisions={},
        now=NOW + timedelta(seconds=now_after),
        router=router_for("replicas"),
    )


STABLE = {"name": "iris-a", "weight": 50}


def canary(weight: int | None, ready: int | None) -> dict[str, Any]:
    return {
        "stable": STABLE,
        "canary": {"name": "iris-b", "weight": weight, "readyReplicas": ready},
        "phase": "Progressing",
        "analysis": {"lastRunTime": NOW.isoformat(), "intervals": 1},
    }


def test_analysis_is_due_while_the_canary_takes_traffic_with_ready_pods() -> None:
    assert analysis_due(rollout_input(canary(1, 1), now_after=30))
    assert not analysis_due(rollout_input(canary(1, 1), now_after=29.5))
    assert not analysis_due(rollout_input(canary(0, 1), now_after=30))
    assert not analysis_due(rollout_input(canary(None, 1), now_after=30))
    assert not analysis_due(rollout_input(canary(1, 0), now_after=30))
    assert not analysis_due(rollout_input(canary(1, None), now_after=30))
    assert analysis_due(rollout_input({**canary(1, 1), "phase": "Paused"}, now_after=30))
    assert not analysis_due(rollout_input({**canary(1, 1), "phase": "Degraded"}, now_after=30))
    assert not analysis_due(rollout_input(canary(1, 1), analysis=None, now_after=30))
    no_stable = {k: v for k, v in canary(1, 1).items() if k != "stable"}
    assert not analysis_due(rollout_input(no_stable, now_after=30))


def test_analysis_is_due_during_a_bake_only() -> None:
    previous = {"name": "iris-0", "weight": 0}
    baking = {"stable": STABLE, "previous": previous, "bakeUntil": NOW.isoformat()}
    assert analysis_due(rollout_input(baking))
    assert not analysis_due(rollout_input({"stable": STABLE, "previous": previous}))
    assert not analysis_due(rollout_input({"stable": STABLE, "bakeUntil": NOW.isoformat()}))


def test_initial_delay_only_delays_the_first_judged_interval() -> None:
    spec = AnalysisSpec.model_validate({**ANALYSIS, "initialDelay": "2m"})
    first = AnalysisStatus(last_run_time=NOW, intervals=0)
    later = AnalysisStatus(last_run_time=NOW, intervals=3)
    assert next_analysis_at(first, spec) == NOW + timedelta(minutes=2)
    assert next_analysis_at(later, spec) == NOW + timedelta(seconds=30)
    short = AnalysisSpec.model_validate({**ANALYSIS, "initialDelay": "10s"})
    assert next_analysis_at(first, short) == NOW + timedelta(seconds=30)
    assert next_analysis_at(None, spec) is None


# --- Status fields during a rollout ---------------------------------------------------------
def test_status_and_conditions_while_a_canary_takes_its_share() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["stable"] == {
        "name": V1, "modelVersion": "1.0.0", "replicas": 3, "readyReplicas": 3, "weight": 75,
        "effectiveWeight": 75.0,
    }  # fmt: skip
    assert sim.status["canary"] == {
        "name": V2, "modelVersion": "2.0.0", "replicas": 1, "readyReplicas": 1, "weight": 25,
        "effectiveWeight": 25.0,
    }  # fmt: skip
    assert sim.condition("Progressing")["reason"] == "RolloutInProgress"
    assert "pauseReason" not in sim.status
    assert sim.last is not None
    services = {m["metadata"]["name"]: m for m in sim.last.apply if m["kind"] == "Service"}
    canary_service = services["iris-canary"]["spec"]["selector"]
    assert canary_service["canarium.dev/revision"] == _hash("2.0.0")


def test_a_paused_rollout_says_so_in_its_condition_and_clears_it_on_resume() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    assert sim.condition("Progressing")["reason"] == "Paused"
    del sim.annotations["canarium.dev/paused"]
    sim.settle()
    assert sim.condition("Progressing")["reason"] == "RolloutInProgress"
    assert "pauseReason" not in sim.status


def test_what_an_inconclusive_pause_says() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 2}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    for _ in range(2):
        sim.tick(30)
        sim.analyse("Inconclusive", None)
    assert sim.phase == "Paused"
    assert sim.status["pauseReason"] == (
        "2 inconclusive intervals in a row (inconclusiveLimit 2): check the traffic, then promote"
    )
    # The message says what holds the step (why it is paused is in pauseReason).
    assert sim.status["message"] == (
        f"canary {V2} (model 2.0.0) at step 2/5 (pause 1m), weight 25% (effective 25.0%); "
        "holding: analysis inconclusive (3 requests < minSamples 10)"
    )


def test_inconclusive_counts_only_in_a_row() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "failureLimit": 3}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    verdicts: tuple[Verdict, ...] = ("Inconclusive", "Inconclusive", "Failed")
    for verdict in verdicts:
        sim.tick(30)
        sim.analyse(verdict)
    assert sim.status["analysis"]["consecutiveInconclusive"] == 0
    passed: tuple[Verdict, ...] = ("Inconclusive", "Passed")
    for verdict in passed:
        sim.tick(30)
        sim.analyse(verdict)
    assert sim.status["analysis"]["consecutiveInconclusive"] == 0
    assert sim.status["analysis"]["intervals"] == 5
    assert sim.status["analysis"]["failures"] == 1


def test_an_interval_keeps_at_most_twenty_measurements() -> None:
    """The status schema allows 20: more would be refused by the API server."""
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    many = [
        Measurement(check=f"custom{i}", value=1.0, threshold="<= 2", verdict="Passed", time=sim.now)
        for i in range(25)
    ]
    sim.reconcile(AnalysisRun(sim.now, Judgement("Passed", many)))
    assert [m["check"] for m in sim.status["analysis"]["measurements"]] == [
        f"custom{i}" for i in range(20)
    ]


def test_reverting_records_the_dropped_canary_even_while_paused() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    sim.release("1.0.0")
    entry = sim.status["history"][0]
    assert (entry["revision"], entry["modelVersion"], entry["outcome"], entry["cause"]) == (
        V2, "2.0.0", "Aborted", "SpecReverted",
    )  # fmt: skip
    assert entry["reason"] == "the spec went back to the stable version"
    assert ("Normal", "RolloutAborted", f"spec reverted to {V1}: canary {V2} dropped") in (
        rollout_events(sim)
    )


def test_reverting_drops_a_canary_without_ready_pods_even_when_stable_has_none() -> None:
    sim = Sim()
    sim.settle()
    sim.not_ready.update({V1, V2})
    sim.release("2.0.0")
    sim.release("1.0.0")
    assert V2 not in sim.deployments
    assert "canary" not in sim.status


def test_the_smallest_weights_still_get_a_pod() -> None:
    assert router_for("replicas").pods(4, 1) == (4, 1)
    assert router_for("replicas").pods(201, 1) == (199, 3)
    assert router_for("gatewayAPI").pods(201, 1) == (201, 3)


def test_a_canary_at_weight_1_is_analysed() -> None:
    sim = Sim({**POLICY, "steps": [{"setWeight": 1}, {"pause": {"duration": "1m"}}]})
    sim.settle()
    plan = sim.release("2.0.0")
    assert plan.requeue_after == 1.0, "the first snapshot at once"


def test_inconclusive_limit_does_not_pause_before_any_interval() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 1}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    assert sim.phase == "Progressing"


def test_an_inconclusive_limit_of_0_never_pauses() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 0}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    for _ in range(3):
        sim.tick(30)
        sim.analyse("Inconclusive", None)
    assert sim.phase == "Progressing"


# --- Promotion, rollback: what the reconcile that does it emits -----------------------------
def test_promote_full_at_25_percent_scales_the_canary_up_and_the_old_one_down() -> None:
    sim = Sim({**POLICY, "bake": "1s"})
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "promote-full@1"
    sim.reconcile()
    assert (sim.replicas_of("2.0.0"), sim.replicas_of("1.0.0")) == (4, 0)
    assert (role(sim, V2), role(sim, V1)) == ("stable", "previous")
    assert sim.status["stable"]["replicas"] == 4
    assert sim.status["previous"]["name"] == V1, "a bake of one second is a bake"
    assert "pauseReason" not in sim.status


def test_promote_full_without_a_bake_is_available_at_once() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(MANUAL, traffic=traffic)
    sim.settle()
    sim.release("2.0.0")
    assert sim.phase == "Paused"
    sim.annotations["canarium.dev/command"] = "promote-full@1"
    sim.reconcile()
    assert sim.phase == "Healthy"
    assert sim.condition("Ready")["reason"] == "Available"
    assert "pauseReason" not in sim.status
    assert sim.replicas_of("2.0.0") == 4
    assert sim.last is not None
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}


def test_the_reconcile_that_aborts_sets_stable_back_to_full_size() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    assert sim.replicas_of("1.0.0") == 3
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.status["stable"]["replicas"] == 4
    assert sim.status["canary"]["replicas"] == 0
    assert sim.status["canary"]["weight"] == 0
    assert sim.replicas_of("1.0.0") == 4


def test_a_rolled_back_canary_that_alone_has_ready_pods_keeps_them_and_its_service() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(traffic=traffic)
    sim.settle()
    sim.release("2.0.0")
    sim.not_ready.add(V1)
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.status["canary"]["replicas"] == 1
    assert sim.last is not None
    services = {m["metadata"]["name"]: m for m in sim.last.apply if m["kind"] == "Service"}
    assert services["iris-canary"]["spec"]["selector"]["canarium.dev/revision"] == _hash("2.0.0")


def test_a_very_long_rollback_reason_is_cut_to_what_status_holds() -> None:
    sim = Sim({**POLICY, "analysis": {**POLICY["analysis"], "failureLimit": 1}})
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    failed = [
        Measurement(check=f"custom{i}", value=1.0, threshold="<= 0.5", verdict="Failed",
                    reason="x" * 100, time=sim.now)
        for i in range(20)
    ]  # fmt: skip
    sim.reconcile(AnalysisRun(sim.now, Judgement("Failed", failed)))
    reason = sim.status["history"][0]["reason"]
    assert len(reason) == 1024
    assert reason.startswith("analysis failed 1/1 intervals: custom0 1 (limit <= 0.5): xxx")


# --- Autoscaling ----------------------------------------------------------------------------
AUTOSCALED = {"serving": {"replicas": 4, "autoscaling": {"minReplicas": 1, "maxReplicas": 8}}}


def test_an_autoscaled_canary_is_sized_from_the_stables_current_size() -> None:
    sim = Sim({**POLICY, "steps": [{"setWeight": 50}, {"pause": {}}]}, **AUTOSCALED)
    sim.settle()
    sim.deployments[V1]["spec"]["replicas"] = 1  # the HPA scaled it down
    sim.release("2.0.0")
    assert sim.replicas_of("2.0.0") == 1
    assert (sim.phase, sim.status["currentStep"]) == ("Paused", 1), "its one pod is enough"


def test_an_autoscaled_canary_of_a_stable_at_zero_pods_is_sized_from_the_spec() -> None:
    sim = Sim({**POLICY, "steps": [{"setWeight": 50}, {"pause": {}}]}, **AUTOSCALED)
    sim.settle()
    sim.deployments[V1]["spec"]["replicas"] = 0
    sim.release("2.0.0")
    assert sim.replicas_of("2.0.0") == 2


def test_what_a_pause_held_by_analysis_says() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.tick(61)
    sim.settle()
    at = f"canary {V2} (model 2.0.0) at step 2/5 (pause 1m), weight 25% (effective 25.0%)"
    assert sim.status["message"] == f"{at}; holding for a first analysis interval"
    sim.analyse("Failed", 0.4)  # one of failureLimit 2: holds, says so, without the check's why
    assert sim.status["message"] == f"{at}; holding: analysis failed"
    sim.tick(30)
    sim.analyse("Inconclusive", None)
    assert sim.status["message"] == (
        f"{at}; holding: analysis inconclusive (3 requests < minSamples 10)"
    )


# --- Purity, sizes and traffic when pods are missing ----------------------------------------
def test_decide_does_not_change_its_input() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.reconcile(AnalysisRun(sim.now, None))  # analysis state to change
    sim.tick(30)
    inp = make_input(sim.input(AnalysisRun(sim.now, judgement("Failed", 0.4, sim.now))))
    assert inp is not None
    before = inp.status.model_dump()
    decide(inp)
    assert inp.status.model_dump() == before


def test_an_autoscaled_stable_reports_the_size_its_autoscaler_chose() -> None:
    sim = Sim(**AUTOSCALED)
    sim.settle()
    sim.deployments[V1]["spec"]["replicas"] = 6
    sim.settle()
    assert sim.status["stable"]["replicas"] == 6


def test_a_canary_not_created_yet_has_no_ready_pods() -> None:
    sim = Sim()
    sim.settle()
    sim.version = "2.0.0"
    sim.generation += 1
    sim.reconcile()
    assert sim.status["canary"]["readyReplicas"] == 0
    assert sim.status["canary"]["replicas"] == 1
    assert sim.status["stable"]["replicas"] == 3
    assert sim.status["canary"]["effectiveWeight"] == 0.0


def test_gateway_with_no_ready_pod_anywhere_sends_nothing_to_the_canary() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(traffic=traffic)
    sim.settle()
    sim.not_ready.update({V1, V2})
    sim.release("2.0.0")
    assert sim.last is not None
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}
    assert sim.status["stable"]["effectiveWeight"] == 0.0
    assert sim.status["canary"]["effectiveWeight"] == 0.0


def test_gateway_with_one_pod_each_delivers_the_route_weight() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(replicas=1, traffic=traffic)
    sim.settle()
    sim.release("2.0.0")
    assert sim.status["canary"]["effectiveWeight"] == 25.0
    assert sim.status["stable"]["effectiveWeight"] == 75.0


def test_reverting_sets_the_stable_back_to_full_size_at_once() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.version = "1.0.0"
    sim.generation += 1
    sim.reconcile()
    assert sim.status["stable"]["replicas"] == 4
    assert sim.replicas_of("1.0.0") == 4


def test_a_kept_canary_serves_through_its_service_and_route_until_stable_is_ready() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(traffic=traffic)
    sim.settle()
    sim.not_ready.add(V1)
    sim.release("2.0.0")
    sim.version = "1.0.0"
    sim.generation += 1
    sim.reconcile()
    assert sim.status["stable"]["replicas"] == 4, "back to its full size at once"
    sim.settle()
    assert sim.status["message"] == f"revision {V1} 0/4 ready; {V2} serves until then"
    assert role(sim, V2) == "canary"
    assert sim.last is not None
    services = {m["metadata"]["name"]: m for m in sim.last.apply if m["kind"] == "Service"}
    assert services["iris-canary"]["spec"]["selector"]["canarium.dev/revision"] == _hash("2.0.0")
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 0, "iris-canary": 100}


# --- One revision serving everything: phase, message, condition reason ----------------------
def revision(ready: int, replicas: int = 3, **kw: Any) -> RevisionObservation:
    fields: dict[str, Any] = {
        "name": "iris-a", "rev_hash": "a", "spec": None, "created_as": "stable",
        "replicas": replicas, "ready_replicas": ready, "updated_replicas": replicas,
        "up_to_date": True, "deadline_exceeded": False, **kw,
    }  # fmt: skip
    return RevisionObservation(**fields)


def phase_of(observed: RevisionObservation | None, desired: int | None = 3) -> tuple[str, ...]:
    status = ModelDeploymentStatus()
    reason = serving_phase(status, "iris-a", "1.0.0", observed, desired)
    return str(status.phase), str(status.message), reason


def test_serving_phase_of_one_revision() -> None:
    assert phase_of(revision(3)) == ("Healthy", "model 1.0.0 served by iris-a", "Available")
    assert phase_of(None) == ("Progressing", "revision iris-a 0/3 ready", "ReplicasNotReady")
    assert phase_of(None, None) == ("Progressing", "revision iris-a 0/? ready", "ReplicasNotReady")
    assert phase_of(revision(2)) == ("Progressing", "revision iris-a 2/3 ready", "ReplicasNotReady")
    crash = failure()
    assert phase_of(revision(2, failure=crash, failing_pods=1)) == (
        "Progressing",
        "revision iris-a 2/3 ready; pod p-1 keeps crashing (1 restart); see "
        "`kubectl logs --previous p-1`",
        "ReplicasNotReady",
    )
    assert phase_of(revision(0, failure=crash, failing_pods=1)) == (
        "Degraded",
        "revision iris-a: pod p-1 keeps crashing (1 restart); see `kubectl logs --previous p-1`",
        "RevisionFailed",
    )
    assert phase_of(revision(0, deadline_exceeded=True)) == (
        "Degraded",
        "revision iris-a did not become Ready within its progress deadline",
        "ProgressDeadlineExceeded",
    )
    # Ready beats an old deadline; failing pods beat the deadline.
    assert phase_of(revision(3, deadline_exceeded=True))[0] == "Healthy"
    assert phase_of(revision(0, deadline_exceeded=True, failure=crash, failing_pods=1))[2] == (
        "RevisionFailed"
    )


def test_a_revision_is_ready_when_all_its_updated_pods_are() -> None:
    assert revision(3).ready
    assert revision(4).ready
    assert not revision(2).ready
    assert not revision(0, replicas=0).ready, "no pods is not ready"
    assert not revision(3, updated_replicas=2).ready, "an old pod among them"
    assert not revision(3, up_to_date=False).ready, "the Deployment controller has not caught up"


def test_a_revision_has_failed_only_when_none_of_its_pods_is_ready() -> None:
    crash = failure()
    assert revision(0, failure=crash).failed
    assert not revision(1, failure=crash).failed
    assert not revision(0).failed


# --- The first revision, and revisions deleted by someone -----------------------------------
def test_the_first_reconcile_of_a_new_model_deployment() -> None:
    sim = Sim()  # one reconcile: the Deployment is not there yet
    assert sim.phase == "Progressing"
    assert sim.status["message"] == f"revision {V1} 0/4 ready"
    assert sim.status["stable"] == {
        "name": V1, "modelVersion": "1.0.0", "replicas": 4, "readyReplicas": 0, "weight": 100,
        "effectiveWeight": 0.0,
    }  # fmt: skip
    assert sim.replicas_of("1.0.0") == 4
    assert role(sim, V1) == "stable"


def test_a_lost_status_is_rebuilt_from_what_is_observed() -> None:
    sim = Sim()
    sim.settle()
    sim.status = {}
    sim.reconcile()
    assert sim.phase == "Healthy"
    assert sim.status["message"] == f"model 1.0.0 served by {V1}"
    assert sim.status["stable"]["replicas"] == 4


def test_a_promoted_revisions_deployment_deleted_during_its_bake_comes_back_and_bakes_on() -> None:
    sim = Sim({**POLICY, "bake": "2m"})
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    del sim.deployments[V2]
    sim.reconcile()
    assert sim.status["stable"]["replicas"] == 4
    assert sim.replicas_of("2.0.0") == 4
    assert sim.status["previous"]["name"] == V1
    assert sim.condition("Ready")["reason"] == "Baking"


def test_a_rollout_whose_stable_deployment_was_deleted_makes_the_canary_stable() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    del sim.deployments[V1]
    sim.settle()
    assert sim.status["stable"]["name"] == V2
    assert "canary" not in sim.status
    assert sim.phase == "Healthy"


def test_what_replacing_a_stable_revision_that_never_started_says() -> None:
    sim = Sim()
    sim.not_ready.add(V1)
    sim.pods[V1] = [crashloop_pod(V1)]
    sim.settle()
    v101 = "iris-" + _hash("1.0.1")
    sim.release("1.0.1")
    entry = next(h for h in sim.status["history"] if h["outcome"] == "Replaced")
    assert (entry["revision"], entry["modelVersion"], entry["reason"]) == (
        V1, "1.0.0", f"replaced by {v101} while its own pods failed to start",
    )  # fmt: skip
    assert (
        "Normal", "Replaced",
        f"{V1} cannot serve (its pods fail to start): {v101} (model 1.0.1) replaces it without "
        "a canary",
    ) in rollout_events(sim)  # fmt: skip


# --- Never nothing serving ------------------------------------------------------------------
def test_keep_serving_keeps_the_revision_with_most_ready_pods() -> None:
    spec = mdep("1.0.0").spec
    revisions = {
        name: RevisionObservation(
            name=name, rev_hash=name, spec=spec, created_as=role_, replicas=3,
            ready_replicas=ready, updated_replicas=3, up_to_date=True, deadline_exceeded=False,
        )
        for name, role_, ready in (("iris-a", "stable", 2), ("iris-b", "canary", 3),
                                   ("iris-c", "canary", 0))
    }  # fmt: skip

    def decision(*plans: RevisionPlan, message: str = "rolling") -> Decision:
        return Decision(
            status=ModelDeploymentStatus(message=message), revisions=list(plans),
            stable="iris-c", canary=None, route_canary_weight=0, reason="x",
        )  # fmt: skip

    kept = decision(RevisionPlan("iris-c", spec, 3, "stable"))
    keep_serving(revisions, kept)
    assert [(p.name, p.replicas, p.role) for p in kept.revisions] == [
        ("iris-c", 3, "stable"), ("iris-b", 3, "canary"),
    ]  # fmt: skip
    assert kept.status.message == "rolling; iris-b keeps its 3 ready pod(s) until then"
    # Planned at zero pods: it keeps the ones it has.
    zero = decision(RevisionPlan("iris-b", spec, 0, "canary"), message="")
    keep_serving(revisions, zero)
    assert [(p.name, p.replicas) for p in zero.revisions] == [("iris-b", 3)]
    assert zero.status.message == "; iris-b keeps its 3 ready pod(s) until then"
    # A kept revision with ready pods: nothing to do.
    fine = decision(RevisionPlan("iris-a", spec, 3, "stable"))
    keep_serving(revisions, fine)
    assert [(p.name, p.replicas) for p in fine.revisions] == [("iris-a", 3)]
    assert fine.status.message == "rolling"


def test_a_stable_revision_without_ready_pods_says_how_many_it_waits_for() -> None:
    sim = Sim()
    sim.settle()
    sim.not_ready.add(V1)
    sim.settle()
    assert sim.status["message"] == f"revision {V1} 0/4 ready"


def test_an_inconclusive_limit_of_1_pauses_at_the_first_inconclusive_interval() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 1}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    sim.analyse("Inconclusive", None)
    assert sim.phase == "Paused"


def test_a_first_snapshot_is_not_a_judged_interval() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.tick(5)
    sim.reconcile(AnalysisRun(sim.now, None))
    sim.tick(60)
    sim.settle()
    assert sim.status["currentStep"] == 1
    assert sim.status["message"].endswith("; holding for a first analysis interval")


def test_a_canary_at_weight_0_is_not_analysed_even_with_ready_pods() -> None:
    """A canary kept serving after a revert, asked for again under a policy that starts with
    a pause: it takes no traffic, so there is nothing to measure and nothing to wake for."""
    sim = Sim()
    sim.settle()
    sim.not_ready.add(V1)
    sim.release("2.0.0")
    sim.release("1.0.0")
    sim.policy = RolloutPolicySpec.model_validate(
        {"steps": [{"pause": {}}, {"setWeight": 100}], "analysis": POLICY["analysis"]}
    )
    sim.version = "2.0.0"
    sim.generation += 1
    plan = sim.reconcile()
    assert sim.status["canary"]["weight"] == 0
    assert plan.requeue_after is None


AUTOSCALED_SMALL = {"serving": {"replicas": 4, "autoscaling": {"minReplicas": 1, "maxReplicas": 8}}}


def test_a_rolled_back_canary_never_gets_an_autoscaler() -> None:
    sim = Sim(**AUTOSCALED_SMALL)
    sim.settle()
    sim.release("2.0.0")
    sim.not_ready.add(V1)
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.phase == "Degraded"
    assert sim.hpas == {V1}
    assert sim.replicas_of("2.0.0") == 1, "it alone serves until the stable has a ready pod"


def test_a_kept_canary_never_gets_an_autoscaler() -> None:
    sim = Sim(**AUTOSCALED_SMALL)
    sim.settle()
    sim.not_ready.add(V1)
    sim.release("2.0.0")
    sim.release("1.0.0")
    assert V2 in sim.deployments
    assert sim.hpas == {V1}


def test_a_rolled_back_canarys_deployment_deleted_by_someone_stays_at_zero() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    sim.not_ready.add(V1)
    del sim.deployments[V2]
    sim.reconcile()
    assert sim.phase == "Degraded"
    assert sim.replicas_of("2.0.0") == 0


def test_a_single_ready_stable_pod_is_enough_to_scale_a_rolled_back_canary_to_zero() -> None:
    sim = Sim(replicas=1)
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.replicas_of("2.0.0") == 0


def test_a_revert_that_keeps_the_canary_sets_the_stable_back_to_full_size_at_once() -> None:
    sim = Sim()
    sim.settle()
    sim.not_ready.add(V1)
    sim.release("2.0.0")
    assert sim.replicas_of("1.0.0") == 3
    sim.version = "1.0.0"
    sim.generation += 1
    sim.reconcile()
    assert sim.status["canary"]["name"] == V2, "kept: the stable revision has no ready pod"
    assert sim.status["stable"]["replicas"] == 4
    assert sim.replicas_of("1.0.0") == 4


# --- hold_for_policy: a missing policy holds each revision as it is ------------------------
POLICY_REF = {"policyRef": {"name": "canary"}}
MISSING_POLICY = "RolloutPolicy 'canary' not found"


def held(status: dict[str, Any], *revisions: RevisionObservation, **kw: Any) -> RolloutInput:
    values: dict[str, Any] = {
        "spec": mdep("2.0.0", rollout=POLICY_REF).spec,
        "desired": revisions[1].name if len(revisions) > 1 else "iris-new",
        "status": ModelDeploymentStatus.model_validate(status),
        "policy": None,
        "policy_error": MISSING_POLICY,
        "revisions": {r.name: r for r in revisions},
        "now": NOW,
        "router": router_for("replicas"),
    }
    return RolloutInput(**{**values, **kw})


def test_a_missing_policy_holds_stable_canary_and_previous_as_they_are() -> None:
    stable = observed(mdep("1.0.0", rollout=POLICY_REF))
    canary = observed(mdep("2.0.0", rollout=POLICY_REF), role="canary", ready=1)
    previous = observed(mdep("0.9.0", rollout=POLICY_REF))
    status = {
        "stable": {"name": stable.name, "replicas": 3},
        "canary": {"name": canary.name, "replicas": 1, "weight": 25},
        "previous": {"name": previous.name},
        "phase": "Paused",
        "message": "before",
    }
    inp = held(status, stable, canary, previous)
    decision = decide(inp)
    assert decision.reason == Reason.POLICY_NOT_FOUND
    assert (decision.stable, decision.canary, decision.route_canary_weight) == (
        stable.name,
        canary.name,
        25,
    )
    assert [(p.name, p.replicas, p.role) for p in decision.revisions] == [
        (stable.name, 3, "stable"),
        (canary.name, 1, "canary"),
        (previous.name, 0, "previous"),
    ]
    assert decision.revisions[1].spec.model.version == "2.0.0"
    assert decision.revisions[2].spec == previous.spec
    assert decision.status.message == f"canary {canary.name} (model 2.0.0) held at weight 25%"
    assert decision.status.phase == "Paused"  # a held canary keeps its phase
    assert inp.status.message == "before"  # the input is not changed
    # A canary held before its first setWeight serves no traffic.
    at_zero = {**status, "canary": {"name": canary.name, "replicas": 1}}
    assert decide(held(at_zero, stable, canary)).route_canary_weight == 0
    # A previous revision whose Deployment is gone is not planned.
    decision = decide(held(status, stable, canary))
    assert [p.role for p in decision.revisions] == ["stable", "canary"]


def test_a_missing_policy_holds_a_new_version_without_a_canary() -> None:
    stable = observed(mdep("1.0.0", rollout=POLICY_REF))
    status = {"stable": {"name": stable.name, "replicas": 3}, "phase": "Healthy"}
    decision = decide(held(status, stable))
    assert decision.reason == Reason.POLICY_NOT_FOUND
    assert (decision.stable, decision.canary, decision.route_canary_weight) == (
        stable.name,
        None,
        0,
    )
    assert [(p.name, p.replicas, p.role) for p in decision.revisions] == [
        (stable.name, 3, "stable")
    ]
    assert decision.status.message == "model 2.0.0 waits for it"
    assert decision.status.phase == "Progressing"
    # A canary in the status whose Deployment is gone is not held either.
    gone = {**status, "canary": {"name": "iris-gone", "replicas": 1, "weight": 25}}
    decision = decide(held(gone, stable))
    assert (decision.canary, decision.route_canary_weight) == (None, 0)
    assert decision.status.message == "model 2.0.0 waits for it"


def test_nothing_is_held_without_a_policy_error_a_stable_or_a_new_revision() -> None:
    stable = observed(mdep("1.0.0", rollout=POLICY_REF))
    status = {"stable": {"name": stable.name, "replicas": 3}, "phase": "Healthy"}
    assert hold_for_policy(held(status, stable)) is not None
    assert hold_for_policy(held(status, stable, policy_error=None)) is None
    no_rollout = mdep("2.0.0").spec
    assert hold_for_policy(held(status, stable, spec=no_rollout)) is None
    assert hold_for_policy(held({}, stable)) is None  # no stable yet
    assert hold_for_policy(held(status)) is None  # the stable's Deployment is gone
    assert hold_for_policy(held(status, stable, desired=stable.name)) is None  # nothing new


def test_the_steps_hash_is_pinned() -> None:
    """status.stepsHash outlives the operator's version: the same steps must hash the same
    after an upgrade, or every rollout in flight would start its steps again."""
    steps = RolloutPolicySpec.model_validate(
        {"steps": [{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"pause": {}}]}
    ).steps
    assert steps_hash(steps) == "8a8606d31cfb5e4e"


def test_changed_steps_are_announced_as_a_normal_event_naming_the_canary() -> None:
    from tests.unit.test_policy_changes import FASTER, at_25_percent

    sim = at_25_percent()
    canary = sim.status["canary"]["name"]
    sim.policy = type(sim.policy).model_validate(FASTER)
    sim.settle()
    changed = [e for e in sim.events if e.reason == "StepsChanged"]
    assert [(e.type, e.message) for e in changed] == [
        ("Normal", f"the policy's steps changed: {canary} starts them again")
    ]
