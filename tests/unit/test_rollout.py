"""The rollout state machine, driven through reconcile() with a tiny in-memory cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from canarium.api import Evidence, Measurement, ModelDeployment, RolloutPolicySpec, Verdict
from canarium.reconcile import Plan, ReconcileInput, observe_deployment, reconcile
from canarium.rollout import (
    AnalysisRun,
    Event,
    RolloutInput,
    analysis_due,
    parse_command,
)

from tests.unit.operator_fixtures import (
    NOW,
    SETTINGS,
    crashloop_pod,
    mdep,
    pod,
    terminated,
    waiting_pod,
)

POLICY = {
    "steps": [
        {"setWeight": 25},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"pause": {"duration": "1m"}},
        {"setWeight": 100},
    ],
    "analysis": {
        "interval": "30s",
        "failureLimit": 2,
        "minSamples": 10,
        "checks": {"errorRate": {"max": 0.05}},
    },
}


@dataclass
class Judgement:
    verdict: Verdict
    measurements: list[Measurement] = field(default_factory=list)
    summary: str = ""
    evidence: list[Evidence] = field(default_factory=list)


def judgement(verdict: Verdict, value: float | None = 0.0, at: datetime = NOW) -> Judgement:
    reason = {"Failed": "too many errors", "Inconclusive": "3 requests < minSamples 10"}
    return Judgement(
        verdict,
        [
            Measurement(
                check="errorRate",
                value=value,
                threshold="<= 0.05",
                verdict=verdict,
                reason=reason.get(verdict),
                time=at,
            )
        ],
    )


class Sim:
    """A ModelDeployment, its Deployments (always fully ready unless told), their pods (when
    told: `pods[revision]`, there while the revision has replicas), and the clock."""

    def __init__(self, policy: dict[str, Any] | None = None, replicas: int = 4, **spec: Any):
        self.policy = RolloutPolicySpec.model_validate(policy or POLICY)
        self.replicas = replicas
        self.spec_extra = spec
        self.version = "1.0.0"
        self.generation = 1
        self.now = NOW
        self.status: dict[str, Any] = {}
        self.annotations: dict[str, str] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.hpas: set[str] = set()
        self.not_ready: set[str] = set()
        self.deadline: set[str] = set()
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.last: Plan | None = None
        self.events: list[Event] = []  # of every reconcile
        self.reconcile()

    @property
    def obj(self) -> ModelDeployment:
        obj = mdep(
            self.version, replicas=self.replicas, generation=self.generation, **self.spec_extra
        )
        data = obj.model_dump(by_alias=True, mode="json")
        data["status"] = self.status
        data["metadata"]["annotations"] = dict(self.annotations)
        return ModelDeployment.model_validate(data)

    def observed(self) -> dict[str, Any]:
        out = {}
        for name, dep in self.deployments.items():
            replicas = dep["spec"].get("replicas", 1)
            ready = 0 if name in self.not_ready else replicas
            body = {
                **dep,
                "metadata": {**dep["metadata"], "generation": 1},
                "status": {
                    "observedGeneration": 1,
                    "readyReplicas": ready,
                    "updatedReplicas": replicas,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ]
                    if name in self.deadline
                    else [],
                },
            }
            out[name] = observe_deployment(body, self.pods.get(name, []) if replicas else [])
        return out

    def input(self, run: AnalysisRun | None = None) -> ReconcileInput:
        return ReconcileInput(
            mdep=self.obj,
            revisions=self.observed(),
            now=self.now,
            settings=SETTINGS,
            policy=self.policy,
            analysis_run=run,
            hpas=frozenset(self.hpas),
        )

    def reconcile(self, run: AnalysisRun | None = None) -> Plan:
        plan = reconcile(self.input(run))
        for manifest in plan.apply:
            name = manifest["metadata"]["name"]
            if manifest["kind"] == "Deployment":
                if "replicas" not in manifest["spec"]:
                    # Server-side apply without replicas leaves the count to the HPA: the
                    # Deployment keeps the size it has (1 when it is new).
                    before = self.deployments.get(name, {}).get("spec", {}).get("replicas", 1)
                    applied = {**manifest, "spec": {**manifest["spec"], "replicas": before}}
                    self.deployments[name] = applied
                else:
                    self.deployments[name] = manifest
            elif manifest["kind"] == "HorizontalPodAutoscaler":
                self.hpas.add(name)
        for ref in plan.delete:
            if ref.kind == "Deployment":
                self.deployments.pop(ref.name, None)
            elif ref.kind == "HorizontalPodAutoscaler":
                self.hpas.discard(ref.name)
        self.status = plan.status
        self.last = plan
        self.events.extend(plan.events)
        return plan

    def settle(self, times: int = 3) -> Plan:
        """Reconcile until the cluster caught up; then the status is a fixed point: one more
        reconcile of the same world writes the same status (a status that changes at every
        reconcile would patch, wake and reconcile the object forever)."""
        for _ in range(times):
            plan = self.reconcile()
        again = reconcile(self.input())
        if again.status != plan.status:  # the cluster was still catching up
            plan = self.reconcile()
            again = reconcile(self.input())
        assert again.status == plan.status, "the status is not a fixed point of reconcile"
        return plan

    def release(self, version: str) -> Plan:
        self.version = version
        self.generation += 1
        return self.settle()

    def analyse(self, verdict: Verdict, value: float | None = 0.0) -> Plan:
        """One analysis interval, then let the cluster catch up with the plan."""
        plan = self.reconcile(AnalysisRun(self.now, judgement(verdict, value, self.now)))
        return plan

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def replicas_of(self, version: str) -> int:
        for dep in self.deployments.values():
            if dep["metadata"]["annotations"]["canarium.dev/model-version"] == version:
                return int(dep["spec"]["replicas"])
        raise KeyError(version)

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def reasons(self) -> list[str]:
        assert self.last is not None
        return [e.reason for e in self.last.events]

    def walk_to_promotion(self) -> None:
        """Pass every step: analysis passes in each pause."""
        for _ in range(20):
            if "canary" not in self.status:
                return
            self.tick(31)
            self.reconcile(AnalysisRun(self.now, judgement("Passed", 0.0, self.now)))
            self.settle(1)
        raise AssertionError(f"never promoted: {self.status}")


def test_first_deploy_with_a_policy_is_stable_at_once() -> None:
    sim = Sim()
    sim.settle()
    assert sim.phase == "Healthy"
    assert "canary" not in sim.status
    assert sim.replicas_of("1.0.0") == 4


def test_a_new_version_starts_a_canary_at_the_first_weight() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 1  # setWeight 25 done (canary ready), now pausing
    assert sim.status["canary"]["weight"] == 25
    # 4 pods at 25%: one canary pod, three stable: the replica ratio delivers the weight.
    assert (sim.replicas_of("1.0.0"), sim.replicas_of("2.0.0")) == (3, 1)
    assert sim.status["canary"]["effectiveWeight"] == 25.0
    assert sim.status["stable"]["effectiveWeight"] == 75.0
    assert sim.condition("Progressing")["status"] == "True"
    assert sim.condition("Ready")["status"] == "False"


def test_set_weight_waits_for_ready_canary_pods() -> None:
    sim = Sim()
    sim.settle()
    sim.not_ready.add("iris-" + _hash("2.0.0"))
    sim.release("2.0.0")
    assert sim.status["currentStep"] == 0
    assert "waiting for" in sim.status["message"]
    assert sim.status["canary"]["effectiveWeight"] == 0.0
    sim.not_ready.clear()
    sim.settle()
    assert sim.status["currentStep"] == 1


def test_pause_waits_its_duration_then_needs_a_passed_interval() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    assert sim.last is not None
    assert sim.last.requeue_after is not None
    assert sim.last.requeue_after <= 60
    sim.tick(61)
    sim.settle()
    assert sim.status["currentStep"] == 1, "no analysis yet: holds"
    assert "holding for a first analysis interval" in sim.status["message"]
    sim.analyse("Passed")
    assert sim.status["currentStep"] == 2, "setWeight 50: waits for the second canary pod"
    sim.settle()
    assert sim.status["currentStep"] == 3  # setWeight 50 done, pausing again
    assert sim.status["canary"]["weight"] == 50
    assert (sim.replicas_of("1.0.0"), sim.replicas_of("2.0.0")) == (2, 2)


def test_a_good_canary_is_promoted_and_the_old_revision_removed() -> None:
    sim = Sim()
    sim.settle()
    old = next(iter(sim.deployments))
    sim.release("2.0.0")
    sim.walk_to_promotion()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"
    assert old not in sim.deployments
    assert sim.status["history"][0]["outcome"] == "Promoted"
    assert sim.condition("Ready")["status"] == "True"


def test_failed_intervals_reach_the_failure_limit_and_roll_back() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    assert sim.phase == "Progressing", "one failure of failureLimit 2"
    sim.tick(30)
    sim.analyse("Failed", 0.5)
    assert sim.phase == "Degraded"
    assert sim.replicas_of("2.0.0") == 0, "canary scaled to zero at once"
    assert sim.replicas_of("1.0.0") == 4
    assert sim.status["stable"]["modelVersion"] == "1.0.0"
    assert sim.status["canary"]["weight"] == 0
    degraded = sim.condition("Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "AnalysisFailed"
    assert "errorRate 0.5 (limit <= 0.05)" in degraded["message"]
    assert "RolledBack" in sim.reasons()
    assert sim.status["history"][0]["outcome"] == "RolledBack"
    # It does not try again by itself.
    for _ in range(3):
        sim.tick(600)
        sim.settle()
    assert sim.phase == "Degraded"
    assert sim.replicas_of("2.0.0") == 0


def test_retry_starts_the_rolled_back_revision_again() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert sim.phase == "Degraded"
    assert sim.status["history"][0]["outcome"] == "Aborted"
    assert sim.condition("Degraded")["reason"] == "Aborted"
    sim.annotations["canarium.dev/command"] = "retry@2"
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status["canary"]["weight"] == 25
    assert sim.status["lastCommand"] == "retry@2"
    # The same annotation value is not carried out twice.
    sim.tick(5)
    sim.settle()
    assert sim.status["currentStep"] == 1


def test_pause_without_duration_waits_for_promote() -> None:
    policy = {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(3600)
    sim.settle()
    assert sim.phase == "Paused"
    assert "promote" in sim.status["pauseReason"]
    assert sim.condition("Progressing")["status"] == "True"
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"


def test_promote_full_skips_the_remaining_steps() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "promote-full@x"
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"


def test_inconclusive_holds_never_fails_and_pauses_at_the_limit() -> None:
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "inconclusiveLimit": 3}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(61)
    for _ in range(2):
        sim.analyse("Inconclusive", None)
        sim.tick(30)
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 1
    assert "holding: analysis inconclusive (3 requests < minSamples 10)" in sim.status["message"]
    sim.analyse("Inconclusive", None)
    assert sim.phase == "Paused"
    assert "inconclusive" in sim.status["pauseReason"]
    assert sim.status["analysis"]["failures"] == 0
    assert sim.replicas_of("2.0.0") == 1, "still at its weight: neither rolled back nor promoted"
    # Traffic comes back: a passed interval moves on.
    sim.tick(30)
    sim.analyse("Passed")
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 3


def test_a_newer_version_replaces_the_canary() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    v2 = "iris-" + _hash("2.0.0")
    sim.release("3.0.0")
    assert v2 not in sim.deployments
    assert sim.status["canary"]["modelVersion"] == "3.0.0"
    assert sim.status["currentStep"] == 1
    assert sim.status["history"][0]["outcome"] == "Replaced"
    assert sim.status["history"][0]["revision"] == v2


def test_reverting_to_the_stable_version_ends_the_rollout_at_once() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.release("1.0.0")
    assert sim.phase == "Healthy"
    assert "canary" not in sim.status
    assert len(sim.deployments) == 1
    assert sim.replicas_of("1.0.0") == 4
    assert sim.status["history"][0]["outcome"] == "Aborted"


def test_a_canary_that_never_gets_ready_is_rolled_back() -> None:
    sim = Sim()
    sim.settle()
    canary = "iris-" + _hash("2.0.0")
    sim.not_ready.add(canary)
    sim.deadline.add(canary)
    sim.release("2.0.0")
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert sim.replicas_of("2.0.0") == 0


def test_paused_annotation_holds_the_step() -> None:
    sim = Sim()
    sim.settle()
    sim.annotations["canarium.dev/paused"] = "true"
    sim.release("2.0.0")
    sim.tick(120)
    sim.analyse("Passed")
    assert sim.phase == "Paused"
    del sim.annotations["canarium.dev/paused"]
    sim.settle()
    assert sim.phase == "Progressing"


def test_bake_keeps_the_previous_revision_and_rolls_back_to_it() -> None:
    policy = {**POLICY, "bake": "5m"}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    assert sim.status["stable"]["modelVersion"] == "2.0.0"
    assert sim.status["previous"]["modelVersion"] == "1.0.0"
    assert sim.replicas_of("1.0.0") == 0, "kept, scaled down"
    assert sim.condition("Ready")["status"] == "True"
    sim.tick(30)
    sim.analyse("Failed", 0.3)
    sim.tick(30)
    sim.analyse("Failed", 0.3)
    assert sim.phase == "Degraded"
    assert sim.status["stable"]["modelVersion"] == "1.0.0"
    sim.settle()
    assert sim.replicas_of("1.0.0") == 4
    assert sim.replicas_of("2.0.0") == 0
    assert sim.status["history"][0]["outcome"] == "RolledBack"


def test_a_passed_bake_removes_the_previous_revision() -> None:
    sim = Sim({**POLICY, "bake": "2m"})
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    sim.tick(121)
    sim.settle()
    assert sim.phase == "Healthy"
    assert "previous" not in sim.status
    assert len(sim.deployments) == 1


def test_gateway_router_keeps_stable_full_and_weights_the_route() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(traffic=traffic)
    sim.settle()
    sim.release("2.0.0")
    assert (sim.replicas_of("1.0.0"), sim.replicas_of("2.0.0")) == (4, 1)
    assert sim.last is not None
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 75, "iris-canary": 25}
    assert sim.status["canary"]["effectiveWeight"] == 25.0
    # A canary without ready pods gets no weight on the route (no 503s).
    sim.not_ready.add("iris-" + _hash("3.0.0"))
    sim.release("3.0.0")
    route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
    weights = {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}
    assert weights == {"iris-stable": 100, "iris-canary": 0}


def test_parse_command() -> None:
    assert parse_command("promote@123") == "promote"
    assert parse_command("promote-full@x") == "promote-full"
    assert parse_command("launch@1") is None
    assert parse_command(None) is None


def test_analysis_due_only_while_the_canary_takes_traffic() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")

    def due() -> bool:
        inp = sim.input()
        from canarium.reconcile import rollout_input

        r_inp = rollout_input(inp)
        assert isinstance(r_inp, RolloutInput)
        return analysis_due(r_inp)

    assert due(), "first snapshot"
    sim.reconcile(AnalysisRun(sim.now, None))
    assert not due()
    sim.tick(31)
    assert due()
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert not due(), "no analysis of a rolled-back canary"


def _hash(version: str) -> str:
    from canarium.render import revision_hash

    return revision_hash(mdep(version, replicas=4).spec)


def test_at_weight_100_stable_comparisons_do_not_hold_the_rollout() -> None:
    policy = {**POLICY, "steps": [{"setWeight": 100}, {"pause": {"duration": "30s"}}]}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(31)
    no_stable = Judgement(
        "Inconclusive",
        [
            Measurement(check="samples", value=200, threshold=">= 10", verdict="Passed", time=NOW),
            Measurement(
                check="predictionDrift",
                threshold="<= 0.2",
                verdict="Inconclusive",
                reason="stable has 0 requests < minSamples 10",
                time=NOW,
            ),
        ],
    )
    sim.reconcile(AnalysisRun(sim.now, no_stable))
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"


def test_too_few_samples_at_weight_100_still_hold() -> None:
    policy = {**POLICY, "steps": [{"setWeight": 100}, {"pause": {"duration": "30s"}}]}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(31)
    sim.analyse("Inconclusive", None)
    sim.settle()
    assert sim.phase == "Progressing"
    assert "canary" in sim.status


# --- Pods that fail to start ----------------------------------------------------------------
def _failing_canary(sim: Sim, version: str, *pods: dict[str, Any]) -> str:
    canary = "iris-" + _hash(version)
    sim.not_ready.add(canary)
    sim.pods[canary] = list(pods) or [crashloop_pod(canary)]
    return canary


def test_a_canary_whose_model_does_not_load_is_rolled_back_at_once() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    canary = _failing_canary(sim, "2.0.0")
    sim.release("2.0.0")  # no progress deadline: the pods say it
    assert sim.phase == "Degraded"
    assert sim.replicas_of("2.0.0") == 0, "canary scaled to zero"
    assert sim.replicas_of("1.0.0") == 4
    assert sim.status["stable"]["name"] == stable
    assert sim.status["stable"]["effectiveWeight"] == 100.0
    assert sim.status["canary"]["weight"] == 0
    degraded = sim.condition("Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "ModelLoadFailed"
    assert (
        f"revision {canary}: model failed to load in pod {canary}-7c9d8b6f4-x2x9q"
        in (degraded["message"])
    )
    assert "sha256 mismatch for 'configmap://iris-model/model.onnx'" in degraded["message"]
    assert f"Traffic is on {stable}" in degraded["message"]
    assert sim.condition("Ready")["status"] == "False"
    history = sim.status["history"][0]
    assert (history["revision"], history["outcome"], history["cause"]) == (
        canary, "RolledBack", "ModelLoadFailed",
    )  # fmt: skip
    assert "sha256 mismatch" in history["reason"]
    warnings = [e for e in sim.events if e.type == "Warning"]
    rolled_back = next(e for e in warnings if e.reason == "RolledBack")
    assert "sha256 mismatch" in rolled_back.message
    assert f"traffic back on {stable}" in rolled_back.message
    # Its pods are gone (zero replicas); it stays rolled back, for the same typed reason.
    for _ in range(3):
        sim.tick(600)
        sim.settle()
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "ModelLoadFailed"
    assert sim.replicas_of("2.0.0") == 0
    assert [h["outcome"] for h in sim.status["history"]].count("RolledBack") == 1


def test_a_canary_whose_image_cannot_be_pulled_is_rolled_back() -> None:
    sim = Sim()
    sim.settle()
    canary = "iris-" + _hash("2.0.0")
    _failing_canary(
        sim,
        "2.0.0",
        waiting_pod(canary, "ImagePullBackOff", 'Back-off pulling image "acme/serving:nope"'),
    )
    sim.release("2.0.0")
    assert sim.phase == "Degraded"
    degraded = sim.condition("Degraded")
    assert degraded["reason"] == "RevisionFailed"
    assert "cannot pull its image (ImagePullBackOff)" in degraded["message"]
    assert sim.replicas_of("2.0.0") == 0


def test_a_canary_that_restarted_once_is_not_rolled_back() -> None:
    sim = Sim()
    sim.settle()
    canary = _failing_canary(sim, "2.0.0", pod("iris-" + _hash("2.0.0"), restarts=1,
                                               last=terminated()))  # fmt: skip
    sim.release("2.0.0")
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 0, "waiting for its pod"
    assert sim.replicas_of("2.0.0") == 1
    # It loads on its second try: the rollout goes on.
    sim.not_ready.discard(canary)
    sim.pods[canary] = [pod(canary, ready=True, restarts=1, last=terminated())]
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 1


def test_retry_after_a_failed_start_tries_the_canary_again() -> None:
    sim = Sim()
    sim.settle()
    canary = _failing_canary(sim, "2.0.0")
    sim.release("2.0.0")
    assert sim.condition("Degraded")["reason"] == "ModelLoadFailed"
    # The user fixes the ConfigMap and retries; old pods are terminating, new ones start.
    sim.pods[canary] = [
        {**crashloop_pod(canary), "metadata": {
            **crashloop_pod(canary)["metadata"], "deletionTimestamp": "2026-11-23T12:00:30Z"}},
        pod(canary, "fresh"),
    ]  # fmt: skip
    sim.annotations["canarium.dev/command"] = "retry@1"
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.replicas_of("2.0.0") == 1
    sim.not_ready.discard(canary)
    sim.pods[canary] = [pod(canary, "fresh", ready=True)]
    sim.walk_to_promotion()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"


def test_a_first_revision_whose_model_does_not_load_is_degraded_until_it_does() -> None:
    sim = Sim()
    first = "iris-" + _hash("1.0.0")
    sim.not_ready.add(first)
    sim.pods[first] = [crashloop_pod(first, "aaaaa"), crashloop_pod(first, "bbbbb")]
    sim.settle()
    assert sim.phase == "Degraded"
    degraded = sim.condition("Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "ModelLoadFailed"
    assert degraded["message"].startswith(
        f"revision {first}: model failed to load in pod {first}-7c9d8b6f4-aaaaa "
        "(exit code 1, 3 restarts): sha256 mismatch"
    )
    assert "(and 1 more failing pod)" in degraded["message"]
    assert sim.replicas_of("1.0.0") == 4, "kept: it may recover"
    assert any(e.type == "Warning" and "sha256" in e.message for e in sim.events)
    # Between two crashes (restarted, not Ready since): still Degraded, no flapping.
    sim.pods[first] = [pod(first, restarts=4, last=terminated(), ready_changed=-30)]
    sim.tick(20)
    plan = sim.settle()
    assert sim.phase == "Degraded"
    assert plan.events == []
    # The ConfigMap is fixed: the next restart loads the model.
    sim.not_ready.discard(first)
    sim.pods[first] = [pod(first, ready=True, restarts=5, last=terminated(), ready_changed=60)]
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.condition("Degraded")["status"] == "False"
    assert sim.condition("Ready")["status"] == "True"


def test_failure_messages_never_carry_credentials() -> None:
    sim = Sim()
    sim.settle()
    leaky = (
        "model not loaded: cannot fetch https://alice:s3cr3t-pa55@models.example.org/2.onnx"
        "?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE&X-Amz-Signature=deadbeefcafe0123: HTTP 403"
    )
    canary = "iris-" + _hash("2.0.0")
    _failing_canary(sim, "2.0.0", crashloop_pod(canary, message=leaky))
    sim.release("2.0.0")
    assert sim.phase == "Degraded"
    written = repr(sim.status) + repr(sim.events)
    assert "models.example.org/2.onnx" in written
    for secret in ("s3cr3t-pa55", "alice", "AKIAIOSFODNN7EXAMPLE", "deadbeefcafe0123"):
        assert secret not in written, secret


def test_a_rollback_is_held_from_status_aborted_not_from_the_history_text() -> None:
    """The rollback's cause lives in status.aborted, typed; what a message or a history entry
    says decides nothing."""
    sim = Sim()
    sim.settle()
    canary = _failing_canary(sim, "2.0.0")
    sim.release("2.0.0")
    aborted = sim.status["aborted"]
    assert (aborted["revision"], aborted["cause"]) == (canary, "ModelLoadFailed")
    assert "sha256 mismatch" in aborted["message"]
    # Whatever the history's text says, the typed cause decides the condition's reason.
    sim.status["history"][0]["reason"] = "did not become Ready within its progress deadline"
    sim.status["history"][0]["cause"] = None
    for _ in range(2):
        sim.tick(60)
        sim.settle()
    assert sim.condition("Degraded")["reason"] == "ModelLoadFailed"
    assert sim.replicas_of("2.0.0") == 0, "still held as rolled back"
    # A new version ends the hold: the abort is cleared.
    sim.release("3.0.0")
    assert sim.status.get("aborted") is None
    assert sim.phase == "Progressing"


def test_a_new_version_replaces_a_stable_revision_that_never_started() -> None:
    """A first revision whose model never loaded, fixed with a new spec: no canary against a
    revision that serves nothing; the new one is stable at once."""
    sim = Sim()
    first = "iris-" + _hash("1.0.0")
    sim.not_ready.add(first)
    sim.pods[first] = [crashloop_pod(first)]
    sim.settle()
    assert sim.condition("Degraded")["reason"] == "ModelLoadFailed"
    sim.release("1.0.1")
    assert sim.phase == "Healthy"
    assert "canary" not in sim.status
    assert sim.status["stable"]["modelVersion"] == "1.0.1"
    assert first not in sim.deployments
    assert sim.status["history"][0]["outcome"] == "Replaced"
    assert sim.status["history"][0]["revision"] == first
    assert "Replaced" in [e.reason for e in sim.events]


def test_a_rolled_back_canary_is_not_replayed_when_the_stable_fails_too() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    _failing_canary(sim, "2.0.0")
    sim.release("2.0.0")
    assert sim.phase == "Degraded"
    # The stable revision's pods fail too now (e.g. the model store is down).
    sim.not_ready.add(stable)
    sim.pods[stable] = [crashloop_pod(stable)]
    sim.settle()
    assert sim.phase == "Degraded"
    assert sim.status["stable"]["name"] == stable
    assert sim.replicas_of("2.0.0") == 0


# --- Pause, commands, retry, timers, autoscaling (issue 16) ---------------------------------
STEPS_ONLY = {
    "steps": [
        {"setWeight": 25},
        {"pause": {"duration": "20s"}},
        {"setWeight": 50},
        {"pause": {"duration": "20s"}},
        {"setWeight": 100},
    ]
}
MANUAL = {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]}


def _position(sim: Sim) -> tuple[int, int, int, int]:
    """(step, canary weight, stable pods, canary pods)."""
    return (
        sim.status["currentStep"],
        sim.status["canary"]["weight"],
        sim.replicas_of("1.0.0"),
        sim.replicas_of("2.0.0"),
    )


def test_pause_holds_a_steps_only_rollout_at_its_step_and_weight() -> None:
    """The on-call reproduction: paused at 25% of a steps-only policy, it must not go on to 50%
    and be promoted when the 20 s pauses run out."""
    sim = Sim(STEPS_ONLY)
    sim.settle()
    sim.release("2.0.0")
    sim.tick(5)
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    held = _position(sim)
    assert held == (1, 25, 3, 1)
    for _ in range(20):  # ten minutes
        sim.tick(30)
        plan = sim.settle()
        assert _position(sim) == held
        assert sim.phase == "Paused"
        assert sim.status["pauseReason"] == "paused by a person (canarium.dev/paused)"
        assert plan.requeue_after is None, "nothing to wake up for while paused"
    # Resume: the same step, whose pause timer starts again (a full 20 s from the resume).
    del sim.annotations["canarium.dev/paused"]
    plan = sim.settle()
    assert sim.phase == "Progressing"
    assert _position(sim) == held
    assert plan.requeue_after == 20
    sim.tick(19)
    sim.settle()
    assert _position(sim) == held
    sim.tick(2)
    sim.settle()
    assert _position(sim) == (3, 50, 2, 2)


def test_pause_holds_through_passed_analysis_and_a_promote() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    held = _position(sim)
    for i in range(6):
        sim.tick(31)
        sim.analyse("Passed")  # analysis keeps measuring; a pass does not advance the step
        assert _position(sim) == held
        sim.annotations["canarium.dev/command"] = f"promote@{i}"
        sim.settle()
        assert _position(sim) == held, "promote is refused while paused"
        assert sim.status["lastCommand"] == f"promote@{i}", "refused commands are used up"
        assert "CommandIgnored" in [e.reason for e in sim.events]
    sim.annotations["canarium.dev/command"] = "promote-full@x"
    sim.settle()
    assert _position(sim) == held
    assert sim.status["analysis"]["intervals"] == 6
    # After the resume the step needs an interval of its own again, and its full minute.
    del sim.annotations["canarium.dev/paused"]
    sim.settle()
    assert _position(sim) == held
    assert sim.phase == "Progressing"
    sim.tick(31)
    sim.analyse("Passed")
    assert _position(sim) == held, "the pause runs its minute from the resume"
    sim.tick(30)
    sim.analyse("Passed")
    sim.settle()
    assert sim.status["currentStep"] == 3


def test_a_paused_rollout_can_still_be_aborted_or_rolled_back() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "AnalysisFailed"
    assert sim.replicas_of("2.0.0") == 0

    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/paused"] = "true"
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert sim.phase == "Degraded"
    assert sim.condition("Degraded")["reason"] == "Aborted"


def test_a_leftover_promote_does_not_end_the_next_rollouts_manual_pause() -> None:
    sim = Sim(MANUAL)
    sim.settle()
    sim.release("2.0.0")
    assert sim.phase == "Paused"
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "2.0.0"
    # The annotation stays on the object; the next rollout must wait for a new promote.
    sim.version = "3.0.0"
    sim.generation += 1
    for _ in range(3):
        sim.settle()
        sim.tick(600)
    assert sim.phase == "Paused"
    assert sim.status["currentStep"] == 1
    assert sim.status["canary"]["modelVersion"] == "3.0.0"
    assert sim.status["lastCommand"] == "promote@1"
    sim.annotations["canarium.dev/command"] = "promote@2"
    sim.settle()
    assert sim.phase == "Healthy"
    assert sim.status["stable"]["modelVersion"] == "3.0.0"


def test_a_command_given_at_a_steady_state_is_used_up_there() -> None:
    """An abort with nothing to abort must not abort the next rollout."""
    sim = Sim()
    sim.settle()
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert sim.status["lastCommand"] == "abort@1"
    sim.release("2.0.0")
    assert sim.phase == "Progressing"
    assert sim.status["canary"]["weight"] == 25


def test_retry_after_an_analysis_rollback_starts_with_clean_analysis() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    for _ in range(2):
        sim.tick(30)
        sim.analyse("Failed", 0.4)
    assert sim.condition("Degraded")["reason"] == "AnalysisFailed"
    sim.annotations["canarium.dev/command"] = "retry@1"
    sim.settle()
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 1
    assert sim.status.get("analysis") in (None, {}), sim.status.get("analysis")
    # One failed interval of failureLimit 2: still going.
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    assert sim.phase == "Progressing"
    assert sim.status["analysis"]["failures"] == 1
    assert sim.status["analysis"]["intervals"] == 1


def test_retry_is_not_rolled_back_by_an_interval_measured_before_it() -> None:
    """An analysis run that the controller carried out for the rolled-back canary and that
    arrives with the retry does not count for the new attempt."""
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    for _ in range(2):
        sim.tick(30)
        sim.analyse("Failed", 0.4)
    sim.annotations["canarium.dev/command"] = "retry@1"
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    assert sim.phase == "Progressing"
    sim.settle()
    assert sim.phase == "Progressing"


def test_a_timed_pause_without_analysis_wakes_itself() -> None:
    sim = Sim(STEPS_ONLY)
    sim.settle()
    plan = sim.release("2.0.0")
    assert sim.status["currentStep"] == 1
    assert plan.requeue_after == 20
    sim.tick(15)
    assert sim.settle().requeue_after == 5
    sim.tick(5)
    plan = sim.settle()
    assert sim.status["currentStep"] == 3
    assert plan.requeue_after == 20


def test_initial_delay_schedules_the_first_interval_after_it() -> None:
    """No busy loop: between the first snapshot and the end of initialDelay the operator
    sleeps until initialDelay, not 0 s again and again."""
    policy = {**POLICY, "analysis": {**POLICY["analysis"], "initialDelay": "2m"}}
    sim = Sim(policy)
    sim.settle()
    sim.release("2.0.0")
    sim.reconcile(AnalysisRun(sim.now, None))  # the first snapshot
    sim.tick(40)
    plan = sim.settle()
    assert plan.requeue_after == 20, "the pause ends first"
    sim.tick(30)
    plan = sim.settle()
    assert plan.requeue_after == 50, "then the first interval, at initialDelay"


def test_autoscaled_stable_keeps_its_hpa_during_a_rollout() -> None:
    serving = {"replicas": 4, "autoscaling": {"minReplicas": 2, "maxReplicas": 8}}
    sim = Sim(serving=serving)
    sim.settle()
    stable = next(iter(sim.deployments))
    assert sim.hpas == {stable}
    sim.deployments[stable]["spec"]["replicas"] = 6  # the HPA scaled it
    sim.release("2.0.0")
    assert sim.last is not None
    assert sim.phase == "Progressing"
    assert stable in sim.hpas
    assert "HorizontalPodAutoscaler" not in {ref.kind for ref in sim.last.delete}
    deployment = next(
        m for m in sim.last.apply if m["kind"] == "Deployment" and m["metadata"]["name"] == stable
    )
    assert "replicas" not in deployment["spec"], "the HPA owns the stable's size"
    assert sim.replicas_of("1.0.0") == 6
    assert sim.replicas_of("2.0.0") == 2, "25% of the stable's 6 pods"
    sim.walk_to_promotion()
    canary = "iris-" + _hash("2.0.0")
    assert sim.hpas == {canary}


def test_a_bake_needs_analysis() -> None:
    with pytest.raises(ValueError, match="bake needs analysis"):
        RolloutPolicySpec.model_validate({**STEPS_ONLY, "bake": "5m"})


def test_a_new_version_during_a_bake_ends_the_bake() -> None:
    sim = Sim({**POLICY, "bake": "5m"})
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    assert "bakeUntil" in sim.status
    sim.release("3.0.0")
    assert sim.phase == "Progressing"
    assert "bakeUntil" not in sim.status
    assert "previous" not in sim.status
    assert sim.status["stable"]["modelVersion"] == "2.0.0"
    assert sim.status["canary"]["modelVersion"] == "3.0.0"
    assert sim.status.get("analysis") in (None, {}), "the bake's measurements do not carry over"
    assert set(sim.deployments) == {"iris-" + _hash("2.0.0"), "iris-" + _hash("3.0.0")}


# --- Found by the model-based test (test_rollout_stateful.py) -------------------------------
def test_reverting_while_stable_has_no_ready_pod_keeps_the_canary_serving() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    canary = "iris-" + _hash("2.0.0")
    sim.not_ready.add(stable)  # e.g. its node went away
    sim.release("2.0.0")
    assert sim.status["canary"]["effectiveWeight"] == 100.0
    sim.release("1.0.0")
    assert canary in sim.deployments, "the only revision with ready pods is not deleted"
    assert sim.replicas_of("2.0.0") == 1
    assert sim.status["canary"]["weight"] == 0
    assert sim.status["canary"]["effectiveWeight"] == 100.0
    assert sim.status["canary"]["modelVersion"] == "2.0.0"
    assert sim.status["canary"]["replicas"] == 1
    assert sim.status["stable"]["replicas"] == 4, "back to its full size"
    assert "serves until then" in sim.status["message"]
    # Asked for again, it starts from the first step.
    sim.release("2.0.0")
    assert sim.phase == "Progressing"
    assert sim.status["currentStep"] == 1
    sim.release("1.0.0")
    sim.not_ready.clear()
    sim.settle()
    assert sim.phase == "Healthy"
    assert canary not in sim.deployments
    assert [h["outcome"] for h in sim.status["history"]] == ["Aborted", "Aborted"]


def test_a_stable_revision_replaced_while_paused_clears_the_pause_reason() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    sim.annotations["canarium.dev/paused"] = "true"
    sim.release("2.0.0")
    sim.not_ready.add(stable)
    sim.pods[stable] = [crashloop_pod(stable)]
    sim.reconcile()
    assert sim.phase == "Healthy"
    assert "pauseReason" not in sim.status, "a Healthy status that says it is paused"


def test_a_version_asked_for_again_after_a_revert_starts_even_when_stable_is_degraded() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    sim.not_ready.add(stable)
    sim.deadline.add(stable)
    sim.release("2.0.0")
    sim.release("1.0.0")
    assert sim.phase == "Degraded"
    assert sim.status["history"][0]["cause"] == "SpecReverted"
    sim.release("2.0.0")
    assert sim.phase == "Progressing", sim.status["message"]
    assert sim.status["canary"]["weight"] == 25


def test_gateway_sends_traffic_to_a_rolled_back_canary_only_while_it_alone_is_ready() -> None:
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    sim = Sim(traffic=traffic)
    sim.settle()
    stable = next(iter(sim.deployments))
    sim.release("2.0.0")
    sim.not_ready.add(stable)
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.reconcile()
    assert sim.phase == "Degraded"

    def weights() -> dict[str, int]:
        assert sim.last is not None
        route = next(m for m in sim.last.apply if m["kind"] == "HTTPRoute")
        return {b["name"]: b["weight"] for b in route["spec"]["rules"][-1]["backendRefs"]}

    assert weights() == {"iris-stable": 0, "iris-canary": 100}, "not to a stable with no pod"
    assert sim.replicas_of("2.0.0") == 1
    sim.not_ready.clear()
    sim.settle()
    assert weights() == {"iris-stable": 100, "iris-canary": 0}
    assert sim.replicas_of("2.0.0") == 0


def test_a_superseded_canary_keeps_its_pods_while_nothing_else_is_ready() -> None:
    sim = Sim()
    sim.settle()
    stable = next(iter(sim.deployments))
    v2, v3 = "iris-" + _hash("2.0.0"), "iris-" + _hash("3.0.0")
    sim.not_ready.update({stable, v3})
    sim.release("2.0.0")
    sim.release("3.0.0")
    assert sim.status["canary"]["name"] == v3
    assert sim.replicas_of("2.0.0") == 1, "the only revision with a ready pod"
    assert f"{v2} keeps its 1 ready pod(s)" in sim.status["message"]
    sim.not_ready.discard(v3)
    sim.settle()
    assert v2 not in sim.deployments


def test_no_busy_loop_while_the_canary_has_no_ready_pod() -> None:
    sim = Sim()
    sim.settle()
    sim.release("2.0.0")
    sim.reconcile(AnalysisRun(sim.now, None))
    sim.not_ready.add("iris-" + _hash("2.0.0"))
    sim.tick(31)
    plan = sim.settle()
    assert plan.requeue_after == 29, "the pause's end, not 0 s for an analysis that cannot run"


def test_a_command_given_while_the_policy_is_missing_is_used_up_then() -> None:
    sim = Sim(MANUAL)
    sim.settle()
    policy, sim.policy = sim.policy, None  # type: ignore[assignment]
    sim.annotations["canarium.dev/command"] = "promote@1"
    sim.settle()
    assert sim.status["lastCommand"] == "promote@1"
    sim.policy = policy
    sim.release("2.0.0")
    assert sim.phase == "Paused", "the old promote does not end the new rollout's pause"
