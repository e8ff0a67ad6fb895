"""Model-based tests of the rollout state machine: hypothesis drives reconcile() (and through it
decide()) on the in-memory cluster of test_rollout.Sim through random sequences of spec changes,
commands, pause/resume, analysis verdicts, pods that die or recover, operator restarts and time,
and checks the invariants after every reconcile.

Invariants, after every reconcile:
- traffic never goes to a revision with no ready pod (effective weights, the HTTPRoute), and
  while some revision has a ready pod, the plan keeps one with ready pods;
- asked and delivered weights sum to 100 (delivered: 0 when nothing is ready);
- a paused rollout keeps its canary, step and weight and is not promoted (an abort, a
  rollback, a new spec or a stable that cannot serve may still end it);
- a command acts at most once: an annotation value already carried out causes no command event;
- a rolled-back revision never gets traffic again by itself (only after `retry` or a spec that
  asks for it again), and an analysis rollback only happens on a failed interval;
- status has a phase, a message, and Ready/Progressing/Degraded/Reconciling/Stalled conditions
  that agree with it (observedGeneration, pauseReason exactly when Paused); it survives its own
  schema;
- the spec is never written; with autoscaling the stable revision keeps its HPA;
- no busy loop: a requeue of 0 s only when an analysis interval is due.

Seeded (derandomize) so that `make test` runs the same sequences every time; CANARIUM_DEEP=1
(`make test-deep`) runs many more, longer ones (also seeded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from canarium.api import ModelDeploymentStatus
from canarium.reconcile import Plan, rollout_input
from canarium.rollout import AnalysisRun, analysis_due
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.unit.operator_fixtures import crashloop_pod
from tests.unit.test_rollout import MANUAL, POLICY, STEPS_ONLY, Sim, judgement

DEEP = os.environ.get("CANARIUM_DEEP", "") not in ("", "0")
# `make mutation` runs this test once per mutant of the pure core: a short walk keeps that feasible.
MUTATION = os.environ.get("CANARIUM_MUTATION", "") not in ("", "0")

ANALYSED = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 3}}
POLICIES: dict[str, dict[str, Any]] = {
    "analysed": ANALYSED,
    "steps-only": STEPS_ONLY,
    "manual": MANUAL,
    "baked": {**POLICY, "bake": "2m"},
    "initial-delay": {
        **POLICY,
        "analysis": {**POLICY["analysis"], "initialDelay": "90s", "failureLimit": 1},
    },
    "manual-analysed": {**MANUAL, "analysis": POLICY["analysis"], "bake": "1m"},
}
GATEWAY = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
SERVINGS: dict[str, dict[str, Any]] = {
    "replicas": {},
    "gateway": {"traffic": GATEWAY},
    "autoscaled": {"serving": {"replicas": 4, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}},
    "autoscaled-gateway": {
        "traffic": GATEWAY,
        "serving": {"replicas": 3, "autoscaling": {"minReplicas": 1, "maxReplicas": 5}},
    },
}
VERSIONS = ("1.0.0", "2.0.0", "3.0.0", "4.0.0")
VERBS = ("promote", "promote-full", "abort", "retry")
# Events that only a person's command causes.
COMMAND_EVENTS = ("PromotedFully", "RolloutRetried", "CommandIgnored")
ACTIVE = ("Progressing", "Paused")


@dataclass
class Before:
    """What the last reconcile started from."""

    status: dict[str, Any]
    annotations: dict[str, str]
    desired: str
    ready: dict[str, int]


class RolloutMachine(RuleBasedStateMachine):
    sim: Sim

    def __init__(self) -> None:
        super().__init__()
        self.commands = 0
        self.blocked: set[str] = set()  # rolled-back revisions: no traffic until a person acts
        self.person_acted = False  # in the current rule: a new command or a spec change

    # --- set-up ---------------------------------------------------------------------------
    @initialize(
        policy=st.sampled_from(sorted(POLICIES)),
        serving=st.sampled_from(sorted(SERVINGS)),
    )
    def start(self, policy: str, serving: str) -> None:
        self.sim = Sim(POLICIES[policy], **SERVINGS[serving])
        self.autoscaled = "autoscaled" in serving
        self.gateway = "gateway" in serving
        self.reconcile()
        self.reconcile()

    # --- the one way to reconcile: checks every transition --------------------------------
    def desired(self) -> str:
        inp = rollout_input(self.sim.input())
        assert inp is not None
        return inp.desired

    def reconcile(self, run: AnalysisRun | None = None) -> Plan:
        sim = self.sim
        observed = sim.observed()
        before = Before(
            status=json.loads(json.dumps(sim.status)),
            annotations=dict(sim.annotations),
            desired=self.desired(),
            ready={name: obs.ready_replicas for name, obs in observed.items()},
        )
        inp = sim.input(run)
        spec_before = inp.mdep.spec.to_dict()
        plan = sim.reconcile(run)
        # The spec is never written: nothing applies the ModelDeployment, its spec is intact.
        assert spec_before == inp.mdep.spec.to_dict()
        assert all(m["kind"] != "ModelDeployment" for m in plan.apply)
        assert "spec" not in plan.status
        self.check_transition(before, plan)
        # A rollback on analysis happens on a failed interval, never on old counts (e.g. the
        # failures of the attempt before a retry).
        for entry in self.new_history(before.status):
            if entry.get("cause") == "AnalysisFailed":
                assert run is not None, entry
                assert run.judgement is not None, entry
                assert run.judgement.verdict == "Failed", entry
        return plan

    # --- rules ----------------------------------------------------------------------------
    def _ask_for(self, version: str) -> None:
        """A person applies a spec with `version` (nothing happens if it is already asked for)."""
        if version == self.sim.version:
            return
        self.sim.version = version
        self.sim.generation += 1
        self.person_acted = True
        self.reconcile()

    @rule(version=st.sampled_from(VERSIONS))
    def release(self, version: str) -> None:
        self._ask_for(version)

    @precondition(lambda self: "stable" in self.sim.status)
    @rule()
    def revert_to_stable(self) -> None:
        self._ask_for(self.sim.status["stable"]["modelVersion"])

    @rule(verb=st.sampled_from(VERBS))
    def command(self, verb: str) -> None:
        self.commands += 1
        self.sim.annotations["canarium.dev/command"] = f"{verb}@{self.commands}"
        self.person_acted = verb == "retry"
        self.reconcile()

    @rule()
    def pause(self) -> None:
        self.sim.annotations["canarium.dev/paused"] = "true"
        self.reconcile()

    @rule()
    def resume(self) -> None:
        self.sim.annotations.pop("canarium.dev/paused", None)
        self.reconcile()

    @rule(verdict=st.sampled_from(("Passed", "Passed", "Failed", "Inconclusive")))
    def analyse(self, verdict: Any) -> None:
        """What the controller does when an interval is due: the first snapshot, then a
        judgement per interval."""
        inp = rollout_input(self.sim.input())
        assert inp is not None
        if not analysis_due(inp):
            self.reconcile()
            return
        first = inp.status.analysis is None or inp.status.analysis.last_run_time is None
        now = self.sim.now
        self.reconcile(AnalysisRun(now, None if first else judgement(verdict, 0.0, now)))

    @rule(index=st.integers(0, 3), how=st.sampled_from(("not-ready", "crashloop", "deadline")))
    def pods_fail(self, index: int, how: str) -> None:
        names = sorted(self.sim.deployments)
        name = names[index % len(names)]
        self.sim.not_ready.add(name)
        if how == "crashloop":
            self.sim.pods[name] = [crashloop_pod(name)]
        elif how == "deadline":
            self.sim.deadline.add(name)
        self.reconcile()

    @rule(index=st.integers(0, 3))
    def pods_recover(self, index: int) -> None:
        names = sorted(self.sim.deployments)
        name = names[index % len(names)]
        self.sim.not_ready.discard(name)
        self.sim.deadline.discard(name)
        self.sim.pods.pop(name, None)
        self.reconcile()

    @precondition(lambda self: bool(self.sim.hpas))
    @rule(index=st.integers(0, 3), size=st.integers(1, 6))
    def hpa_scales(self, index: int, size: int) -> None:
        names = sorted(self.sim.hpas & set(self.sim.deployments))
        if not names:
            return
        dep = self.sim.deployments[names[index % len(names)]]
        if dep["spec"]["replicas"] > 0:
            dep["spec"]["replicas"] = size
        self.reconcile()

    @rule()
    def operator_restarts(self) -> None:
        """A new operator process: everything it knows comes from the API server; the status
        goes through its schema and JSON on the way."""
        status = ModelDeploymentStatus.model_validate(json.loads(json.dumps(self.sim.status)))
        self.sim.status = status.to_dict()
        self.reconcile()

    @rule(seconds=st.sampled_from((1, 5, 19, 30, 31, 61, 300)))
    def time_passes(self, seconds: int) -> None:
        self.sim.tick(seconds)
        self.reconcile()

    @precondition(lambda self: self.sim.last is not None and self.sim.last.requeue_after)
    @rule()
    def wake_up(self) -> None:
        """The requeue the last plan asked for: time moves to it, the controller analyses if
        due, then reconciles."""
        assert self.sim.last is not None
        assert self.sim.last.requeue_after is not None
        self.sim.tick(self.sim.last.requeue_after)
        self.analyse("Passed")

    # --- invariants -----------------------------------------------------------------------
    def check_transition(self, before: Before, plan: Plan) -> None:
        status = self.sim.status
        old = before.status
        self.check_traffic(before, plan)
        self.check_status(status, plan)

        # A command acts at most once: an annotation already carried out causes nothing.
        command = before.annotations.get("canarium.dev/command")
        fresh = command is not None and command != old.get("lastCommand")
        if command is not None:
            assert status.get("lastCommand") == command, "every command is recorded as used"
        if not fresh:
            reasons = [e.reason for e in plan.events]
            assert not set(reasons) & set(COMMAND_EVENTS), reasons
            assert not any(
                e.reason == "Promoted" and "by a person" in e.message for e in plan.events
            )
            assert not any(e.reason == "Aborted" for e in plan.events), plan.events

        # A paused rollout does not move: same canary, same step, same weight, not promoted.
        # A person's abort, a rollback and a new spec may still end it.
        paused = before.annotations.get("canarium.dev/paused") == "true"
        old_canary = (old.get("canary") or {}).get("name")
        rolling = old.get("phase") in ACTIVE and old.get("currentStep") is not None
        if paused and rolling and old_canary == before.desired:
            if status["stable"]["name"] != old["stable"]["name"]:
                # The stable revision cannot serve (its pods fail to start): the new one
                # replaces it without a canary, paused or not.
                assert status["history"][0]["revision"] == old["stable"]["name"]
                assert status["history"][0]["outcome"] == "Replaced"
            elif status.get("phase") == "Degraded":
                assert status["history"][0]["revision"] == old_canary
                assert status["history"][0]["outcome"] in ("RolledBack", "Aborted")
            else:
                assert status["phase"] == "Paused", status["message"]
                assert status["canary"]["name"] == old_canary
                assert status.get("currentStep") == old.get("currentStep")
                assert status["canary"]["weight"] == old["canary"]["weight"]
                assert not any(h["outcome"] == "Promoted" for h in self.new_history(old))

        # A rolled-back revision never comes back by itself: only a retry or a spec that
        # asks for it again (after asking for another) start it again.
        if self.person_acted:
            self.blocked.discard(self.desired())
            self.person_acted = False
        for entry in self.new_history(old):
            if entry["outcome"] in ("RolledBack", "Aborted"):
                self.blocked.add(entry["revision"])
        for name in self.blocked:
            stable = status.get("stable") or {}
            canary = status.get("canary") or {}
            if stable.get("name") == name:
                # Only as the fallback of a first revision that cannot serve.
                assert status["phase"] == "Degraded", status["message"]
            if canary.get("name") == name:
                assert canary["weight"] == 0, (name, status["message"])

    def new_history(self, old: dict[str, Any]) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.sim.status.get("history", [])
        known = {json.dumps(h, sort_keys=True) for h in old.get("history", [])}
        return [h for h in history if json.dumps(h, sort_keys=True) not in known]

    def check_traffic(self, before: Before, plan: Plan) -> None:
        status = self.sim.status
        ready = before.ready
        stable = status["stable"]
        canary = status.get("canary")
        # Weights sum to 100, asked and delivered.
        assert stable["weight"] + (canary["weight"] if canary else 0) == 100
        effective = stable["effectiveWeight"] + (canary["effectiveWeight"] if canary else 0)
        assert abs(effective - 100) < 1e-6 or effective == 0, status
        # Traffic never on a revision with no ready pod.
        for rev in (stable, canary):
            if rev and rev["effectiveWeight"] > 0:
                assert ready.get(rev["name"], 0) > 0, (rev, ready)
        route = next((m for m in plan.apply if m["kind"] == "HTTPRoute"), None)
        assert (route is not None) == self.gateway
        if route is not None:
            backends = route["spec"]["rules"][-1]["backendRefs"]
            weights = {b["name"]: b["weight"] for b in backends}
            assert sum(weights.values()) == 100
            canary_ready = ready.get(canary["name"], 0) if canary else 0
            if weights["iris-canary"] > 0:
                assert canary_ready > 0, (weights, ready)
            if weights["iris-stable"] > 0 and canary_ready > 0:
                assert ready.get(stable["name"], 0) > 0, (weights, ready)
        # Something keeps serving: a revision that had ready pods keeps some unless another
        # one with ready pods takes over.
        if any(ready.values()):
            serving = [
                r.name
                for r in plan_revisions(plan)
                if ready.get(r.name, 0) > 0 and (r.replicas is None or r.replicas > 0)
            ]
            assert serving, (ready, [(r.name, r.replicas) for r in plan_revisions(plan)])
        # The stable revision's HPA stays with autoscaling.
        if self.autoscaled:
            hpas = {
                m["metadata"]["name"] for m in plan.apply if m["kind"] == "HorizontalPodAutoscaler"
            }
            assert stable["name"] in hpas, (stable["name"], hpas)

    def check_status(self, status: dict[str, Any], plan: Plan) -> None:
        phase = status.get("phase")
        assert phase in ("Progressing", "Paused", "Healthy", "Degraded"), status
        assert status.get("message"), status
        conditions = {c["type"]: c for c in status["conditions"]}
        assert set(conditions) == {"Ready", "Progressing", "Degraded", "Reconciling", "Stalled"}
        for c in conditions.values():
            assert c["observedGeneration"] == self.sim.generation
            assert c["reason"]
            assert c["message"] == status["message"]
        assert (conditions["Degraded"]["status"] == "True") == (phase == "Degraded")
        assert (conditions["Progressing"]["status"] == "True") == (phase in ACTIVE)
        ready = conditions["Ready"]["status"] == "True"
        assert ready == (phase == "Healthy" or conditions["Ready"]["reason"] == "Baking")
        # kstatus (Flux): Stalled (Failed) where a person must act, Reconciling (InProgress)
        # while a rollout, a bake or a pause goes on; never both, neither when Healthy.
        stalled = conditions["Stalled"]["status"] == "True"
        reconciling = conditions["Reconciling"]["status"] == "True"
        invalid = conditions["Stalled"]["reason"] == "PolicyInvalid" and phase != "Healthy"
        assert stalled == (phase == "Degraded" or invalid), status
        assert reconciling == (phase in ACTIVE and not stalled), status
        assert (phase == "Paused") == bool(status.get("pauseReason")), status
        if phase in ACTIVE and (status.get("canary") or {}).get("weight"):
            assert status.get("currentStep") is not None
        # No busy loop: "now" is only asked for when the controller has something to do.
        if plan.requeue_after is not None and plan.requeue_after <= 0:
            inp = rollout_input(self.sim.input())
            assert inp is not None
            assert analysis_due(inp), status

    @invariant()
    def status_round_trips(self) -> None:
        if getattr(self, "sim", None) is not None:
            ModelDeploymentStatus.model_validate(self.sim.status)


def plan_revisions(plan: Plan) -> list[Any]:
    @dataclass
    class Rev:
        name: str
        replicas: int | None

    return [
        Rev(m["metadata"]["name"], m["spec"].get("replicas"))
        for m in plan.apply
        if m["kind"] == "Deployment"
    ]


RolloutMachine.TestCase.settings = settings(
    derandomize=True,
    max_examples=3000 if DEEP else 20 if MUTATION else 300,
    stateful_step_count=100 if DEEP else 50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    report_multiple_bugs=False,
)
TestRolloutMachine = RolloutMachine.TestCase
