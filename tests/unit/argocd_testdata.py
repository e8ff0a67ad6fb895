"""Writes the testdata of the Argo CD health check and actions (manifests/argocd/canarium.dev/
ModelDeployment/testdata and actions/testdata): ModelDeployments in every phase, with the status
the operator's own reconcile() writes, driven through the unit tests' in-memory cluster (Sim).

    .venv/bin/python -m tests.unit.argocd_testdata

It writes the ModelRetraining testdata too (tests/unit/argocd_testdata_retraining.py).
Run it again when the status changes shape; tests/unit/test_argocd_lua.py checks that every
testdata object still validates as a ModelDeployment. The *_live* files beside them are live
objects, captured by tests/e2e/test_argocd_actions.py with CANARIUM_ARGOCD_CAPTURE=DIR; the
expectations (health_test.yaml, action_test.yaml) are kept by hand, as in Argo CD: this
script does not rewrite them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from canarium.reconcile import reconcile

from tests.argocd_lua import SCRIPTS
from tests.unit.operator_fixtures import crashloop_pod
from tests.unit.test_rollout import POLICY, Sim, _hash

HEALTH = SCRIPTS / "testdata"
ACTIONS = SCRIPTS / "actions" / "testdata"
HEADER = "# Written by `python -m tests.unit.argocd_testdata` (the operator's reconcile).\n"


def _object(sim: Sim) -> dict[str, Any]:
    obj: dict[str, Any] = sim.obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    obj["status"] = sim.status
    for key in ("labels", "annotations"):
        if not obj["metadata"].get(key):
            obj["metadata"].pop(key, None)
    return obj


def _sim(policy: dict[str, Any] = POLICY) -> Sim:
    """The in-memory cluster with the given policy, referred to by name as users do."""
    return Sim(policy, rollout={"policyRef": {"name": "default-canary"}})


def healthy() -> Sim:
    sim = _sim()
    sim.settle()
    return sim


def pending() -> dict[str, Any]:
    """Just created: the operator has not written a status yet."""
    obj = _object(healthy())
    del obj["status"]
    return obj


def first_revision_starting() -> Sim:
    sim = _sim()
    sim.not_ready.add("iris-" + _hash("1.0.0"))
    sim.settle()
    return sim


def canary_at_first_step() -> Sim:
    sim = healthy()
    sim.release("2.0.0")
    return sim


def new_generation() -> dict[str, Any]:
    """The spec changed (generation 2); the status still describes generation 1 (Healthy)."""
    obj = _object(healthy())
    obj["metadata"]["generation"] = 2
    obj["spec"]["model"] = {**obj["spec"]["model"], "version": "2.0.0"}
    return obj


def paused_until_promoted() -> Sim:
    sim = _sim({"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]})
    sim.settle()
    sim.release("2.0.0")
    sim.tick(60)
    sim.settle()
    return sim


def paused_by_annotation() -> Sim:
    sim = healthy()
    sim.annotations["canarium.dev/paused"] = "true"
    sim.release("2.0.0")
    sim.tick(120)
    sim.analyse("Passed")
    return sim


def paused_inconclusive() -> Sim:
    analysis: dict[str, Any] = {**POLICY["analysis"], "inconclusiveLimit": 2}  # type: ignore[dict-item]
    sim = _sim({**POLICY, "analysis": analysis})
    sim.settle()
    sim.release("2.0.0")
    sim.tick(61)
    for _ in range(2):
        sim.analyse("Inconclusive", None)
        sim.tick(30)
    return sim


def baking() -> Sim:
    sim = _sim({**POLICY, "bake": "5m"})
    sim.settle()
    sim.release("2.0.0")
    sim.walk_to_promotion()
    return sim


def rolled_back() -> Sim:
    sim = healthy()
    sim.release("2.0.0")
    sim.tick(30)
    sim.analyse("Failed", 0.4)
    sim.tick(30)
    sim.analyse("Failed", 0.5)
    sim.settle()
    return sim


def aborted() -> Sim:
    sim = healthy()
    sim.release("2.0.0")
    sim.annotations["canarium.dev/command"] = "abort@1796300000000000000"
    sim.settle()
    return sim


def canary_model_load_failed() -> Sim:
    sim = healthy()
    canary = "iris-" + _hash("2.0.0")
    sim.not_ready.add(canary)
    sim.pods[canary] = [crashloop_pod(canary)]
    sim.release("2.0.0")
    return sim


def first_model_load_failed() -> Sim:
    sim = _sim()
    first = "iris-" + _hash("1.0.0")
    sim.not_ready.add(first)
    sim.pods[first] = [crashloop_pod(first, "aaaaa")]
    sim.settle()
    return sim


def progress_deadline() -> Sim:
    sim = healthy()
    canary = "iris-" + _hash("2.0.0")
    sim.not_ready.add(canary)
    sim.deadline.add(canary)
    sim.release("2.0.0")
    return sim


def _policy_error(error: str) -> dict[str, Any]:
    sim = healthy()
    sim.version = "2.0.0"
    sim.generation += 1
    inp = dataclasses.replace(sim.input(), policy=None, policy_error=error)
    obj = _object(sim)
    obj["status"] = reconcile(inp).status
    return obj


def policy_not_found() -> dict[str, Any]:
    """A new version whose RolloutPolicy is missing: it waits for it (Argo CD may be about to
    apply it in the same sync)."""
    return _policy_error("RolloutPolicy 'default-canary' not found")


def policy_invalid() -> dict[str, Any]:
    """A new version whose RolloutPolicy is invalid: held until a person fixes it (Stalled)."""
    return _policy_error(
        "RolloutPolicy 'default-canary' is invalid: steps.0.setWeight: Input should be less "
        "than or equal to 100"
    )


def unknown_condition() -> dict[str, Any]:
    """Healthy, with a condition type this check does not know set True (a newer operator's):
    ignored."""
    obj = _object(healthy())
    extra = {**obj["status"]["conditions"][0], "type": "Drifted", "reason": "InputDrift"}
    obj["status"]["conditions"].append(extra)
    return obj


def unknown_phase() -> dict[str, Any]:
    """A phase this check does not know (a newer operator's): Progressing, never Healthy."""
    obj = _object(canary_at_first_step())
    obj["status"]["phase"] = "Migrating"
    return obj


HEALTH_CASES: dict[str, Callable[[], Sim | dict[str, Any]]] = {
    "healthy": healthy,
    "progressing_noStatus": pending,
    "progressing_firstRevisionStarting": first_revision_starting,
    "progressing_canary": canary_at_first_step,
    "progressing_newGeneration": new_generation,
    "progressing_baking": baking,
    "suspended_pauseStep": paused_until_promoted,
    "suspended_userPause": paused_by_annotation,
    "suspended_inconclusive": paused_inconclusive,
    "degraded_rolledBack": rolled_back,
    "degraded_aborted": aborted,
    "degraded_canaryModelLoadFailed": canary_model_load_failed,
    "degraded_firstModelLoadFailed": first_model_load_failed,
    "degraded_progressDeadline": progress_deadline,
    "degraded_policyInvalid": policy_invalid,
    "progressing_policyNotFound": policy_not_found,
    "healthy_unknownCondition": unknown_condition,
    "progressing_unknownPhase": unknown_phase,
}

# Inputs of the action tests: one object per state an action is offered in.
ACTION_CASES: dict[str, Callable[[], Sim | dict[str, Any]]] = {
    "healthy": healthy,
    "canary": canary_at_first_step,
    "paused": paused_by_annotation,
    "baking": baking,
    "rolled_back": rolled_back,
}


def write(directory: Path, cases: dict[str, Callable[[], Sim | dict[str, Any]]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, make in cases.items():
        made = make()
        obj = _object(made) if isinstance(made, Sim) else made
        text = HEADER + yaml.safe_dump(obj, sort_keys=False, width=100)
        (directory / f"{name}.yaml").write_text(text)


def main() -> int:
    from tests.unit import argocd_testdata_retraining

    write(HEALTH, HEALTH_CASES)
    write(ACTIONS, ACTION_CASES)
    print(f"wrote {HEALTH} and {ACTIONS}", file=sys.stderr)
    return argocd_testdata_retraining.main()


if __name__ == "__main__":
    sys.exit(main())
