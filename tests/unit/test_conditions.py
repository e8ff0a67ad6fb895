"""Status conditions that GitOps tools read: kstatus' Reconciling and Stalled (Flux) beside
Ready/Progressing/Degraded, and the RolloutPolicy's Ready/Stalled.

kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status, generic.go) reads Reconciling=True as
InProgress and Stalled=True as Failed, and with both False falls through to Ready (True:
Current). tests/e2e/test_gitops_status.py checks the same on live objects with the real
library."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

import pytest
from canarium import crdgen
from canarium.api import Reason, RolloutPolicySpec
from canarium.controller import Controller
from canarium.kube import Kube, KubeError, ObjectRef
from canarium.reconcile import condition_values, policy_problems, policy_status
from pydantic import ValidationError

from tests.unit.operator_fixtures import NOW, SETTINGS
from tests.unit.test_rollout import Sim, _position

TYPES = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")


def row(*values: str) -> dict[str, str]:
    return dict(zip(TYPES, values, strict=True))


@pytest.mark.parametrize(
    ("phase", "reason", "expected"),
    [
        ("Healthy", Reason.AVAILABLE, row("True", "False", "False", "False", "False")),
        ("Progressing", Reason.ROLLOUT_IN_PROGRESS, row("False", "True", "False", "True", "False")),
        ("Progressing", Reason.REPLICAS_NOT_READY, row("False", "True", "False", "True", "False")),
        (
            "Progressing",
            Reason.NEW_REVISION_NOT_READY,
            row("False", "True", "False", "True", "False"),
        ),
        # A bake: the promoted version serves everything, yet it may still roll back.
        ("Progressing", Reason.BAKING, row("True", "True", "False", "True", "False")),
        # Paused for a person: InProgress (a person may promote), never Failed.
        ("Paused", Reason.PAUSED, row("False", "True", "False", "True", "False")),
        ("Paused", Reason.BAKING, row("True", "True", "False", "True", "False")),
        ("Degraded", Reason.ANALYSIS_FAILED, row("False", "False", "True", "False", "True")),
        ("Degraded", Reason.ABORTED, row("False", "False", "True", "False", "True")),
        ("Degraded", Reason.MODEL_LOAD_FAILED, row("False", "False", "True", "False", "True")),
        ("Degraded", Reason.REVISION_FAILED, row("False", "False", "True", "False", "True")),
        (
            "Degraded",
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            row("False", "False", "True", "False", "True"),
        ),
        (
            "Degraded",
            Reason.BAKE_FAILED_PREVIOUS_GONE,
            row("False", "False", "True", "False", "True"),
        ),
        # A missing policy may still come (GitOps ordering): it waits.
        ("Progressing", Reason.POLICY_NOT_FOUND, row("False", "True", "False", "True", "False")),
        ("Healthy", Reason.POLICY_NOT_FOUND, row("True", "False", "False", "False", "False")),
        # An invalid one holds a new version until a person fixes it.
        ("Progressing", Reason.POLICY_INVALID, row("False", "True", "False", "False", "True")),
        ("Paused", Reason.POLICY_INVALID, row("False", "True", "False", "False", "True")),
        # A first revision is served without it: nothing is held.
        ("Healthy", Reason.POLICY_INVALID, row("True", "False", "False", "False", "False")),
        (None, Reason.REPLICAS_NOT_READY, row("False", "False", "False", "True", "False")),
        ("Pending", Reason.REPLICAS_NOT_READY, row("False", "False", "False", "True", "False")),
    ],
)
def test_condition_values(phase: str | None, reason: str, expected: dict[str, str]) -> None:
    values = condition_values(phase, reason)
    assert values == expected
    assert not (values["Reconciling"] == values["Stalled"] == "True")


def kstatus(status: dict[str, Any], generation: int) -> str:
    """kstatus' generic rules (generic.go, status.go at v0.37.2) as far as these conditions
    go: a stand-in for unit tests; the e2e test runs the real library."""
    if status.get("observedGeneration", generation) != generation:
        return "InProgress"
    conditions = status.get("conditions") or []
    for c in conditions:
        if c["type"] == "Reconciling" and c["status"] == "True":
            return "InProgress"
        if c["type"] == "Stalled" and c["status"] == "True":
            return "Failed"
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    if ready is not None and ready["status"] != "True":
        return "InProgress"
    return "Current"


def test_a_rollout_reads_in_progress_paused_in_progress_and_rolled_back_failed() -> None:
    sim = Sim()
    sim.settle()
    assert kstatus(sim.status, sim.generation) == "Current"
    sim.release("2.0.0")
    assert _position(sim)[:2] == (1, 25)
    assert kstatus(sim.status, sim.generation) == "InProgress"
    sim.annotations["canarium.dev/paused"] = "true"
    sim.settle()
    assert sim.phase == "Paused"
    reconciling = sim.condition("Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "Paused")
    assert "paused by a person" in reconciling["message"]
    assert kstatus(sim.status, sim.generation) == "InProgress"
    sim.annotations.pop("canarium.dev/paused")
    sim.annotations["canarium.dev/command"] = "abort@1"
    sim.settle()
    assert sim.phase == "Degraded"
    stalled = sim.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Aborted")
    assert stalled["message"] == sim.status["message"]
    assert sim.condition("Reconciling")["status"] == "False"
    assert kstatus(sim.status, sim.generation) == "Failed"
    # A new spec not yet reconciled: its generation is not observed.
    assert kstatus(sim.status, sim.generation + 1) == "InProgress"


# --- RolloutPolicy ----------------------------------------------------------------------------
VALID = {"steps": [{"setWeight": 25}, {"pause": {}}]}


def policy(spec: dict[str, Any], generation: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {
            "namespace": "ml",
            "name": "safe",
            "generation": generation,
            "resourceVersion": "7",
        },
        "spec": spec,
        "status": status,
    }


def test_a_valid_policy_is_ready_with_its_generation() -> None:
    status = policy_status(policy(VALID), NOW)
    assert status["observedGeneration"] == 3
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Ready", "Stalled"}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("True", "Valid")
    assert conditions["Stalled"]["status"] == "False"
    for c in conditions.values():
        assert c["observedGeneration"] == 3
        assert c["lastTransitionTime"] == "2026-11-23T12:00:00Z"
    assert kstatus(status, 3) == "Current"


def test_an_invalid_policy_is_stalled_with_the_problem_by_field() -> None:
    status = policy_status(policy({"steps": [{"setWeight": 50}, {"setWeight": 10}]}), NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "Invalid")
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "Invalid",
    )
    message = conditions["Stalled"]["message"]
    assert message.startswith("the policy is invalid: steps: "), message
    assert "never decrease" in message
    assert "errors.pydantic.dev" not in message
    assert kstatus(status, 3) == "Failed"


def test_a_policy_status_keeps_transition_times_until_a_status_changes() -> None:
    first = policy_status(policy(VALID), NOW)
    later = NOW + timedelta(minutes=5)
    again = policy_status(policy(VALID, generation=4, **first), later)
    assert [c["lastTransitionTime"] for c in again["conditions"]] == ["2026-11-23T12:00:00Z"] * 2
    assert again["observedGeneration"] == 4
    broken = policy_status(policy({"steps": []}, generation=5, **again), later)
    assert [c["lastTransitionTime"] for c in broken["conditions"]] == ["2026-11-23T12:05:00Z"] * 2
    # A status someone else wrote is replaced, not a crash.
    odd = policy_status(policy(VALID, conditions=[{"type": "Ready"}]), NOW)
    assert odd["conditions"][0]["status"] == "True"


class PolicyKube:
    """Records status patches of RolloutPolicies; answers 409 once when told to."""

    def __init__(self) -> None:
        self.patches: list[tuple[ObjectRef, dict[str, Any], str]] = []
        self.conflicts = 0

    async def patch_status(
        self, ref: ObjectRef, patch: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        self.patches.append((ref, patch, resource_version))
        if self.conflicts:
            self.conflicts -= 1
            raise KubeError(409, "Conflict", "the object has been modified")
        return {}


def test_the_controller_writes_a_stale_policy_status_once() -> None:
    async def scenario() -> None:
        kube = PolicyKube()
        controller = Controller(cast(Kube, kube), SETTINGS, clock=lambda: NOW)
        controller._loop = asyncio.get_running_loop()
        body = policy(VALID)
        controller.on_policy("ADDED", body)
        for _ in range(5):
            await asyncio.sleep(0)
        ((ref, patch, version),) = kube.patches
        assert ref == ObjectRef("canarium.dev/v1alpha1", "RolloutPolicy", "ml", "safe")
        assert version == "7"
        assert patch == policy_status(body, NOW)
        # Its own write comes back through the watch: nothing more to write.
        controller.on_policy("MODIFIED", policy(VALID, **patch))
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(kube.patches) == 1

    asyncio.run(scenario())


def test_a_conflicting_policy_status_write_is_tried_again() -> None:
    async def scenario() -> None:
        kube = PolicyKube()
        kube.conflicts = 1
        controller = Controller(cast(Kube, kube), SETTINGS, clock=lambda: NOW)
        controller._loop = asyncio.get_running_loop()
        controller.on_policy("ADDED", policy(VALID))
        await asyncio.sleep(0.7)
        assert len(kube.patches) == 2
        assert not controller._policy_writes

    asyncio.run(scenario())


@pytest.mark.parametrize("info", crdgen.CRDS, ids=lambda info: info.kind)
def test_a_status_not_written_yet_reads_as_generation_0(info: crdgen.CrdInfo) -> None:
    """The API server applies the status default on every read: a new object reads as not
    yet observed (kstatus InProgress) until the operator writes its status, instead of
    Current for want of any status."""
    status = crdgen.crd_schema(info)["properties"]["status"]
    assert status["default"] == {"observedGeneration": 0}
    assert kstatus(status["default"], 1) == "InProgress"


def test_policy_problems_are_one_line_each_by_field_and_the_valid_message_is_plain() -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutPolicySpec.model_validate({"steps": [{"setWeight": 500}], "bake": "soon"})
    assert policy_problems(caught.value) == (
        "steps.0.setWeight: Input should be less than or equal to 100; "
        "bake: String should match pattern '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$'"
    )
    status = policy_status(policy(VALID), NOW)
    assert {c["message"] for c in status["conditions"]} == {"the policy is valid"}
