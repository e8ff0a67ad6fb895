"""Writes the testdata of the Argo CD health check and actions of ModelRetrainings
(manifests/argocd/canarium.dev/ModelRetraining/testdata and actions/testdata): ModelRetrainings
in every phase and with runs ended every way, with the status the operator's own planner
(canarium.retraining.plan_retraining) writes, step by step from a new object.

    .venv/bin/python -m tests.unit.argocd_testdata_retraining

(`python -m tests.unit.argocd_testdata` writes these too.) Run it again when the status changes
shape; tests/unit/test_argocd_lua_retraining.py checks that every testdata object still
validates as a ModelRetraining, and drives the operator's planner with what each action writes
from the scenes here. The expectations (health_test.yaml, action_test.yaml and the actions'
*_<action>.yaml outputs) are kept by hand, as in Argo CD: this script does not rewrite them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from canarium.api import ModelDeployment
from canarium.api.modelretraining import (
    ANNOTATION_APPROVE,
    ANNOTATION_DISCARD,
    ANNOTATION_RETRAIN,
    ModelRetraining,
)
from canarium.retraining import JobObservation, RetrainingInput, RetrainingPlan, plan_retraining
from canarium_serving.manifest import TrainingResult

from tests.argocd_lua import scripts
from tests.unit.operator_fixtures import NOW, mdep, name_of

SCRIPTS = scripts("ModelRetraining")
HEALTH = SCRIPTS / "testdata"
ACTIONS = SCRIPTS / "actions" / "testdata"
HEADER = (
    "# Written by `python -m tests.unit.argocd_testdata_retraining` (the operator's planner).\n"
)
OUTPUT = "s3://models/iris/retrained"
SHA = "b" * 64
RUN = "iris-retrain-1"
# The story's clock: drift at T0, the Job ends 40 minutes later, the rollout after that.
T0 = NOW - timedelta(hours=3)
TRAINED = T0 + timedelta(minutes=40)
ROLLED_OUT = T0 + timedelta(minutes=55)
REQUEST = (T0 - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def retraining(*, generation: int = 1, **spec: Any) -> ModelRetraining:
    """iris-retrain, retraining ModelDeployment iris (new: no status)."""
    body: dict[str, Any] = {
        "deploymentRef": {"name": "iris"},
        "jobTemplate": {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "train",
                                "image": "ghcr.io/example/iris-training:1.4",
                                "args": ["--epochs", "3"],
                            }
                        ]
                    }
                }
            }
        },
        "output": {"uri": OUTPUT},
        **spec,
    }
    return ModelRetraining.model_validate(
        {
            "apiVersion": "canarium.dev/v1alpha1",
            "kind": "ModelRetraining",
            "metadata": {
                "name": "iris-retrain",
                "namespace": "ml",
                "uid": "uid-r",
                "generation": generation,
                "resourceVersion": "5",
                "creationTimestamp": "2026-11-23T08:00:00Z",
            },
            "spec": body,
        }
    )


def calm_mdep(**status: Any) -> ModelDeployment:
    """iris 1.0.0, Healthy on its stable revision, no drift."""
    return mdep(
        "1.0.0",
        status={"phase": "Healthy", "stable": {"name": name_of(mdep())}, **status},
    )


def drifted_mdep() -> ModelDeployment:
    """iris 1.0.0, Healthy, its stable revision Drifted (its monitoring says so)."""
    stable = name_of(mdep())
    return mdep(
        "1.0.0",
        status={
            "phase": "Healthy",
            "stable": {"name": stable, "modelVersion": "1.0.0"},
            "monitoring": {
                "revision": stable,
                "consecutiveDrifted": 2,
                "lastVerdict": "Drifted",
                "message": "petal_length PSI 0.41 > 0.25",
            },
            "conditions": [
                {
                    "type": "Drifted",
                    "status": "True",
                    "reason": "Drifted",
                    "message": "petal_length PSI 0.41 > 0.25",
                    "lastTransitionTime": "2026-11-23T08:50:00Z",
                }
            ],
        },
        monitoring={"dataDrift": {"maxPSI": 0.25}},
    )


def result(accuracy: float = 0.97, base: float = 0.93) -> str:
    """What the training container reports (its termination message)."""
    return TrainingResult(
        name="iris",
        version="1.0.0-rt1",
        model_uri=f"{OUTPUT}/{RUN}/model.onnx",
        sha256=SHA,
        metrics={"accuracy": accuracy, "f1_macro": accuracy},
        base_metrics={"accuracy": base, "f1_macro": base},
    ).dump()


@dataclasses.dataclass(frozen=True)
class Scene:
    """A ModelRetraining as the operator last wrote it, and the world it saw then (its
    ModelDeployment, its Jobs, the time): what the planner needs to take the next step."""

    obj: ModelRetraining
    mdep: ModelDeployment | None
    jobs: dict[str, JobObservation] = dataclasses.field(default_factory=dict)
    now: datetime = T0
    claimed_by: str | None = None

    def plan(self, obj: ModelRetraining | None = None) -> RetrainingPlan:
        """The planner's next step on `obj` (this scene's object by default) in this world."""
        inp = RetrainingInput(
            obj or self.obj, self.mdep, dict(self.jobs), self.now, self.claimed_by
        )
        return plan_retraining(inp)

    def step(self, **world: Any) -> Scene:
        """The world changed (`world`: mdep, jobs, now, claimed_by, obj); the operator's next
        status written."""
        scene = dataclasses.replace(self, **world)
        plan = scene.plan()
        jobs = dict(scene.jobs)
        for job in plan.create:  # the Jobs it makes run
            jobs[job["metadata"]["name"]] = JobObservation(job["metadata"]["name"], "Active")
        data = scene.obj.model_dump(by_alias=True, mode="json")
        data["status"] = plan.status
        return dataclasses.replace(scene, obj=ModelRetraining.model_validate(data), jobs=jobs)

    def annotated(self, **annotations: str) -> Scene:
        """A person's annotations on the object; the status is not written yet."""
        return dataclasses.replace(self, obj=with_annotations(self.obj, annotations))

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.obj.model_dump(by_alias=True, mode="json", exclude_none=True)
        if not obj["metadata"].get("annotations"):
            obj["metadata"].pop("annotations", None)
        if not obj["metadata"].get("labels"):
            obj["metadata"].pop("labels", None)
        if not any(obj["status"].values()):
            del obj["status"]
        return obj


def with_annotations(obj: ModelRetraining, annotations: dict[str, str]) -> ModelRetraining:
    data = obj.model_dump(by_alias=True, mode="json")
    data["metadata"]["annotations"] = {**(data["metadata"].get("annotations") or {}), **annotations}
    return ModelRetraining.model_validate(data)


def with_spec(obj: ModelRetraining, **spec: Any) -> ModelRetraining:
    """The object after a change of its spec in Git (generation + 1)."""
    data = obj.model_dump(by_alias=True, mode="json")
    data["spec"] = {**data["spec"], **spec}
    data["metadata"]["generation"] += 1
    return ModelRetraining.model_validate(data)


def job(state: str, *, message: str = "", text: str | None = None) -> dict[str, JobObservation]:
    return {RUN: JobObservation(RUN, state, message, TRAINED, text)}  # type: ignore[arg-type]


# --- scenes -----------------------------------------------------------------------------------
def no_status() -> Scene:
    """Just applied: the operator has not written a status yet."""
    return Scene(retraining(), calm_mdep())


def no_run_yet() -> Scene:
    return no_status().step()


def new_generation() -> Scene:
    """The spec changed (generation 2); the status still describes generation 1."""
    idle = no_run_yet()
    return dataclasses.replace(idle, obj=with_spec(idle.obj, cooldown="2h"))


def training(**spec: Any) -> Scene:
    """Sustained drift started run 1: its Job trains."""
    return Scene(retraining(**spec), drifted_mdep()).step().step(now=T0 + timedelta(minutes=5))


def training_requested() -> Scene:
    """A person's request started run 1 (`kubectl canarium retrain`): its Job trains."""
    scene = Scene(retraining(), calm_mdep()).annotated(**{ANNOTATION_RETRAIN: REQUEST})
    return scene.step().step(now=T0 + timedelta(minutes=5))


def canarying() -> Scene:
    """Run 1's model passed validation: the ModelDeployment rolls it out as its canary."""
    return training().step(jobs=job("Succeeded", text=result()), now=TRAINED)


def awaiting_approval() -> Scene:
    """approval: Manual; run 1's model passed validation and waits for a person."""
    return training(approval="Manual").step(jobs=job("Succeeded", text=result()), now=TRAINED)


def approve_requested() -> Scene:
    """The approve annotation is on the object; the operator has not acted yet."""
    return awaiting_approval().annotated(**{ANNOTATION_APPROVE: RUN})


def promoted() -> Scene:
    """The candidate was promoted: it serves all traffic (the ModelDeployment's stable)."""
    scene = canarying()
    revision = scene.obj.status.runs[0].revision
    serving = calm_mdep(stable={"name": revision, "modelVersion": "1.0.0-rt1"})
    return scene.step(mdep=serving, now=ROLLED_OUT).step(now=NOW)


def failed() -> Scene:
    """Run 1's Job failed; no drift now: Idle."""
    scene = training().step(
        jobs=job("Failed", message="BackoffLimitExceeded: Job has reached the specified backoff"),
        now=TRAINED,
    )
    return scene.step(mdep=calm_mdep(), now=NOW)


def cooling_down() -> Scene:
    """Run 1's Job failed while drift goes on: the next run waits for the (doubled) cooldown."""
    return training().step(
        jobs=job("Failed", message="DeadlineExceeded: Job was active longer than specified"),
        now=TRAINED,
    )


def rejected() -> Scene:
    """Run 1's model scored worse than the model it replaces: Rejected, never served."""
    scene = training().step(jobs=job("Succeeded", text=result(accuracy=0.9)), now=TRAINED)
    return scene.step(mdep=calm_mdep(), now=NOW)


def rolled_back() -> Scene:
    """The candidate's canary failed its analysis: the ModelDeployment rolled it back."""
    scene = canarying()
    revision = scene.obj.status.runs[0].revision
    back = calm_mdep(
        history=[
            {
                "revision": revision,
                "modelVersion": "1.0.0-rt1",
                "outcome": "RolledBack",
                "time": ROLLED_OUT.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "reason": "analysis failed 2/2 intervals: errorRate 0.2 (limit <= 0.05)",
                "cause": "AnalysisFailed",
            }
        ],
    )
    return scene.step(mdep=back, now=ROLLED_OUT).step(now=NOW)


def discarded() -> Scene:
    """A person discarded the canarying candidate: back to spec.model."""
    scene = canarying().annotated(**{ANNOTATION_DISCARD: RUN})
    return scene.step(mdep=calm_mdep(), now=ROLLED_OUT).step(now=NOW)


def superseded() -> Scene:
    """spec.model changed in Git while the candidate was canarying: Git wins."""
    scene = canarying()
    moved = mdep("2.0.0", status={"phase": "Progressing"})
    return scene.step(mdep=moved, now=ROLLED_OUT).step(now=NOW)


def suspended() -> Scene:
    return Scene(retraining(suspend=True), drifted_mdep()).step()


def suspended_requested() -> Scene:
    """Suspended, with a person's request that waits for the suspend to be lifted."""
    return suspended().annotated(**{ANNOTATION_RETRAIN: REQUEST}).step(now=T0)


def suspended_run_finishing() -> Scene:
    """Suspended (generation 2) while run 1 trains: the run finishes."""
    scene = training()
    return dataclasses.replace(scene, obj=with_spec(scene.obj, suspend=True)).step(
        now=T0 + timedelta(minutes=10)
    )


def deployment_not_found() -> Scene:
    return Scene(retraining(), None).step()


def deployment_claimed() -> Scene:
    """An older ModelRetraining retrains the same ModelDeployment."""
    return Scene(retraining(), drifted_mdep(), claimed_by="iris-nightly").step()


def _phase(scene: Scene, phase: str, *, conditions: bool) -> dict[str, Any]:
    obj = scene.to_dict()
    obj["status"]["phase"] = phase
    if not conditions:
        del obj["status"]["conditions"]
    return obj


def unknown_phase() -> dict[str, Any]:
    """A phase this check does not know (a newer operator's), at rest by its conditions
    (Reconciling and Stalled False): Healthy."""
    return _phase(no_run_yet(), "Archived", conditions=True)


def unknown_phase_reconciling() -> dict[str, Any]:
    """A phase this check does not know (a newer operator's), under way by its conditions
    (Reconciling True): Progressing."""
    obj = _phase(no_run_yet(), "Validating", conditions=True)
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Reconciling":
            condition["status"], condition["reason"] = "True", "Validating"
    return obj


def unknown_phase_without_conditions() -> dict[str, Any]:
    """A phase this check does not know and no conditions to tell: not Healthy."""
    return _phase(no_run_yet(), "Archived", conditions=False)


HEALTH_CASES: dict[str, Callable[[], Scene | dict[str, Any]]] = {
    "progressing_noStatus": no_status,
    "progressing_newGeneration": new_generation,
    "healthy_training": training,
    "healthy_canarying": canarying,
    "healthy_suspendedRunFinishing": suspended_run_finishing,
    "progressing_unknownPhaseReconciling": unknown_phase_reconciling,
    "progressing_unknownPhaseNoConditions": unknown_phase_without_conditions,
    "suspended_awaitingApproval": awaiting_approval,
    "suspended_suspend": suspended,
    "degraded_deploymentNotFound": deployment_not_found,
    "degraded_deploymentClaimed": deployment_claimed,
    "healthy_noRunYet": no_run_yet,
    "healthy_promoted": promoted,
    "healthy_coolingDown": cooling_down,
    "healthy_lastRunFailed": failed,
    "healthy_lastRunRejected": rejected,
    "healthy_lastRunRolledBack": rolled_back,
    "healthy_lastRunDiscarded": discarded,
    "healthy_lastRunSuperseded": superseded,
    "healthy_unknownPhase": unknown_phase,
}

# Inputs of the action tests: one object per state the actions tell apart. Scenes, so the tests
# can hand what an action writes to the operator's planner in the same world.
ACTION_CASES: dict[str, Callable[[], Scene]] = {
    "idle": no_run_yet,
    "training": training_requested,
    "suspended_requested": suspended_requested,
    "awaiting_approval": awaiting_approval,
    "approve_requested": approve_requested,
    "canarying": canarying,
    "promoted": promoted,
    "not_found": deployment_not_found,
}


def write(directory: Path, cases: dict[str, Callable[[], Scene | dict[str, Any]]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, make in cases.items():
        made = make()
        obj = made.to_dict() if isinstance(made, Scene) else made
        text = HEADER + yaml.safe_dump(obj, sort_keys=False, width=100)
        (directory / f"{name}.yaml").write_text(text)


def main() -> int:
    write(HEALTH, HEALTH_CASES)
    write(ACTIONS, ACTION_CASES)  # type: ignore[arg-type]
    print(f"wrote {HEALTH} and {ACTIONS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
