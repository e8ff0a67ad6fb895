"""A RolloutPolicy that changes or goes missing while a ModelDeployment rolls out.

A missing (or invalid) policy holds a rollout where it is: it never promotes an unjudged
canary and never starts one (GitOps tools may apply a ModelDeployment before the policy it
names). Changed steps start again from the first step with the same canary, as Argo Rollouts
does when a canary's steps change (status.currentStepHash)."""

from __future__ import annotations

import dataclasses
from typing import Any

from canarium.reconcile import ReconcileInput
from canarium.rollout import AnalysisRun

from tests.unit.test_rollout import POLICY, Sim, _position, judgement

MISSING = "RolloutPolicy 'canary' not found"


class PolicySim(Sim):
    """Sim whose policy can go missing: `policy_error` set and `policy` None."""

    policy_error: str | None = None

    def __init__(self, **spec: Any) -> None:
        super().__init__(rollout={"policyRef": {"name": "canary"}}, **spec)

    def input(self, run: AnalysisRun | None = None) -> ReconcileInput:
        return dataclasses.replace(
            super().input(run),
            policy=None if self.policy_error else self.policy,
            policy_error=self.policy_error,
        )


def at_25_percent() -> PolicySim:
    sim = PolicySim()
    sim.settle()
    sim.release("2.0.0")
    assert _position(sim) == (1, 25, 3, 1)
    return sim


def test_a_policy_missing_mid_rollout_holds_the_canary_at_its_step_and_weight() -> None:
    sim = at_25_percent()
    canary = sim.status["canary"]["name"]
    sim.policy_error = MISSING
    for _ in range(20):  # ten minutes: every pause of the policy would have run out
        sim.tick(30)
        plan = sim.settle()
        assert _position(sim) == (1, 25, 3, 1)
        assert sim.status["canary"]["name"] == canary
        assert sim.status["stable"]["modelVersion"] == "1.0.0"
        assert sim.phase == "Progressing"
        assert sim.condition("Progressing")["reason"] == "PolicyNotFound"
        assert sim.status["message"].startswith(f"{MISSING}; the rollout holds")
        assert plan.requeue_after is None, "the policy's return wakes it, not a timer"
    assert not plan.delete
    # The policy is back: the rollout goes on from where it held.
    sim.policy_error = None
    sim.settle()
    assert _position(sim)[:2] == (1, 25)
    sim.walk_to_promotion()
    assert sim.status["stable"]["name"] == canary
    assert sim.status["history"][0]["outcome"] == "Promoted"


def test_a_new_version_waits_for_a_missing_policy_instead_of_replacing_the_stable() -> None:
    sim = PolicySim()
    sim.settle()
    stable = sim.status["stable"]["name"]
    sim.policy_error = MISSING
    sim.release("2.0.0")
    assert set(sim.deployments) == {stable}, "no revision is started without its policy"
    assert sim.status["stable"]["name"] == stable
    assert "canary" not in sim.status
    assert sim.condition("Progressing")["reason"] == "PolicyNotFound"
    assert "model 2.0.0 waits for it" in sim.status["message"]
    sim.policy_error = None
    sim.settle()
    assert _position(sim) == (1, 25, 3, 1), "then it starts as a canary at the first step"


def test_an_invalid_policy_holds_as_a_missing_one_does() -> None:
    sim = at_25_percent()
    sim.policy_error = "RolloutPolicy 'canary' is invalid: steps: at least one step"
    sim.tick(120)
    sim.settle()
    assert _position(sim) == (1, 25, 3, 1)
    assert sim.condition("Degraded")["status"] == "False"
    assert sim.condition("Progressing")["reason"] == "PolicyInvalid"


def test_a_steady_model_with_a_missing_policy_keeps_serving() -> None:
    sim = PolicySim()
    sim.settle()
    sim.policy_error = MISSING
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.replicas_of("1.0.0") == 4
    assert sim.condition("Ready")["status"] == "True"


def test_a_first_revision_without_its_policy_is_served() -> None:
    """Nothing to judge it against: the first revision is deployed as without a policy."""
    sim = PolicySim.__new__(PolicySim)
    sim.policy_error = MISSING
    PolicySim.__init__(sim)
    sim.settle()
    assert sim.replicas_of("1.0.0") == 4
    assert sim.phase == "Healthy"


FASTER: dict[str, Any] = {
    **POLICY,
    "steps": [{"setWeight": 60}, {"pause": {"duration": "1m"}}, {"setWeight": 100}],
}


def test_changed_steps_mid_rollout_start_again_from_the_first_with_the_same_canary() -> None:
    sim = at_25_percent()
    canary = sim.status["canary"]["name"]
    hash_before = sim.status["stepsHash"]
    sim.policy = type(sim.policy).model_validate(FASTER)
    sim.settle()
    assert sim.status["canary"]["name"] == canary
    assert sim.status["stepsHash"] != hash_before
    # setWeight 60 of 4 pods: the canary rounds 2.4 up to 3, stable keeps 4 - floor(2.4) = 2.
    assert _position(sim) == (1, 60, 2, 3)
    assert "StepsChanged" in [e.reason for e in sim.events]
    sim.walk_to_promotion()
    assert sim.status["stable"]["name"] == canary


def test_a_shorter_policy_does_not_promote_a_canary_past_its_steps() -> None:
    """At step 3 of 5, steps cut to two would put the index past the end: that must not read
    as 'all steps done'."""
    sim = at_25_percent()
    sim.tick(61)
    sim.reconcile(AnalysisRun(sim.now, judgement("Passed", 0.0, sim.now)))
    sim.settle()
    assert _position(sim)[:2] == (3, 50)
    sim.policy = type(sim.policy).model_validate(
        {**POLICY, "steps": [{"setWeight": 10}, {"pause": {}}]}
    )
    sim.settle()
    assert sim.phase == "Paused"
    assert sim.status["canary"]["weight"] == 10
    assert sim.status["stable"]["modelVersion"] == "1.0.0"


def test_an_analysis_change_alone_keeps_the_step() -> None:
    sim = at_25_percent()
    sim.policy = type(sim.policy).model_validate(
        {**POLICY, "analysis": {**POLICY["analysis"], "failureLimit": 5}}
    )
    sim.settle()
    assert _position(sim) == (1, 25, 3, 1)
    assert "StepsChanged" not in [e.reason for e in sim.events]


def test_a_rollout_from_an_operator_that_kept_no_steps_hash_goes_on() -> None:
    sim = at_25_percent()
    del sim.status["stepsHash"]
    sim.settle()
    assert _position(sim) == (1, 25, 3, 1)
    assert sim.status["stepsHash"]
    assert "StepsChanged" not in [e.reason for e in sim.events]


def test_changed_steps_start_again_with_an_event_naming_the_same_canary() -> None:
    sim = at_25_percent()
    canary = sim.status["canary"]["name"]
    sim.events.clear()
    sim.policy = type(sim.policy).model_validate(FASTER)
    sim.settle()
    started = [e.message for e in sim.events if e.reason == "RolloutStarted"]
    assert started == [f"canary {canary} (model 2.0.0): step 1/3 (setWeight 60)"]
