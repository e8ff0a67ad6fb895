"""ModelRetraining: when and how a ModelDeployment's model is retrained, and what became of it.

The closed loop (DESIGN.md): a ModelRetraining names a ModelDeployment and a Job template. On
sustained drift (the ModelDeployment's Drifted condition), on a cron schedule or on a person's
request (`kubectl canarium retrain`), the operator runs the template as a Job, with what the run
needs in its environment (canarium_serving.contract, training section). The Job packages its
model (`canarium model build`) and reports it; the operator validates it (its report, the
held-out score against the model it replaces) and makes it the ModelDeployment's *candidate*:
the ModelDeployment rolls it out under its RolloutPolicy as if its spec had changed, with
analysis, bake and automatic rollback.

The user's objects are never written. The candidate lives in this object's status and is tied
to the spec.model it replaces: Git stays the source of truth for the base. Changing
spec.model in Git (to pin the candidate there, or to anything else) supersedes the candidate;
`kubectl canarium retrain NAME --discard` or deleting this object goes back to spec.model
under the same policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Final, Literal

from pydantic import Field, field_validator

from canarium.api.common import (
    API_VERSION,
    DNS_SUBDOMAIN_PATTERN,
    INT64,
    ApiObject,
    Condition,
    Duration,
    ObjectMeta,
    SpecModel,
    StatusModel,
    list_map,
    parse_duration,
)

# The annotations `kubectl canarium retrain` writes on a ModelRetraining (metadata is not spec:
# the operator's API for a person's commands, as Argo Rollouts' and Flux's `reconcile.*`).
ANNOTATION_RETRAIN = "canarium.dev/retrain-requested-at"  # a new value: run now
ANNOTATION_APPROVE = "canarium.dev/approve-run"  # the run whose candidate a person approved
ANNOTATION_DISCARD = "canarium.dev/discard-run"  # the run whose candidate a person discarded

MAX_RUNS: Final = 10
METRICS_LOWER_IS_BETTER: Final = frozenset({"mae"})
# Kubernetes CronJob's macros; cronsim reads the five fields only.
CRON_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_expression(schedule: str) -> str:
    """The five-field form of a schedule (a macro such as @daily expanded)."""
    return CRON_MACROS.get(schedule.strip(), schedule.strip())


def next_schedule_time(schedule: str, after: datetime) -> datetime:
    """The first time the cron `schedule` (UTC) fires strictly after `after`."""
    from cronsim import CronSim  # imported here: the training image has canarium, no cronsim

    fire: datetime = next(CronSim(cron_expression(schedule), after))
    return fire


class DeploymentRef(SpecModel):
    """The ModelDeployment whose model this retrains (same namespace)."""

    name: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Its name."
    )


class TriggerSpec(SpecModel):
    """When a run starts. A person's `kubectl canarium retrain` always can."""

    on_drift: bool = Field(
        True,
        description="Run when the ModelDeployment's Drifted condition is True (spec.monitoring: "
        "drift shown for `windows` windows in a row). Once per drift episode, and again after "
        "the cooldown while drift persists. Default true.",
    )
    schedule: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="A cron schedule in UTC, as a CronJob's (e.g. '0 3 * * 0', '@daily'). A "
        "time that comes while a run or a candidate is under way is skipped.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from cronsim import CronSim, CronSimError

            try:
                CronSim(cron_expression(value), datetime(2000, 1, 1))
            except CronSimError as exc:
                raise ValueError(f"invalid cron schedule {value!r}: {exc}") from None
        return value


class JobTemplate(SpecModel):
    """A batch/v1 Job's metadata and spec, as a CronJob's jobTemplate. The operator adds env to
    every container (the output URI, the base model, the drift report: see `kubectl explain`
    on spec.output), restartPolicy Never and backoffLimit 0 where the template sets none."""

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Labels and annotations for the Job.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    spec: dict[str, Any] = Field(
        description="A batch/v1 JobSpec: at least template.spec.containers. The API server "
        "checks it when the Job is made; a Job it refuses is a failed run with its message.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @field_validator("spec")
    @classmethod
    def _has_containers(cls, value: dict[str, Any]) -> dict[str, Any]:
        pod = (value.get("template") or {}).get("spec") or {}
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            raise ValueError("jobTemplate.spec.template.spec.containers must list a container")
        return value


class OutputSpec(SpecModel):
    """Where runs write their models: each run to a folder of its own, <uri>/<run name>, given to
    the Job as CANARIUM_OUTPUT_URI. A candidate's model must be in its run's folder."""

    uri: str = Field(
        min_length=8,
        max_length=1024,
        pattern=r"^(s3|gs|az|azure|pvc)://[^\s]+$",
        description="A folder the model server can read: s3://bucket/prefix, gs://, az://, or "
        "pvc://claim/path (the Job mounts the claim itself).",
    )


class ValidationSpec(SpecModel):
    """What a candidate must score on its held-out data (its report's metrics) to be rolled out.
    A candidate that does not is Rejected: no canary, stable untouched."""

    metric: str = Field(
        "accuracy",
        min_length=1,
        max_length=63,
        description="A held-out metric of the report: accuracy, f1_macro (classifiers), r2, mae "
        "(regressors; lower mae is better). Default accuracy.",
    )
    minimum: float | None = Field(
        None, description="The least the metric may be (for mae: the most). Absent: no floor."
    )
    not_worse_than_base: bool = Field(
        True,
        description="Refuse a candidate that scores worse than the model it replaces on the "
        "same held-out rows (the run's base metrics), by more than tolerance. Default true.",
    )
    tolerance: float = Field(0.0, ge=0.0, description="How much worse counts as not worse.")


Approval = Literal["Automatic", "Manual"]


class ModelRetrainingSpec(SpecModel):
    """Desired retraining of a ModelDeployment's model. The operator never writes it."""

    deployment_ref: DeploymentRef = Field(description="The ModelDeployment to retrain.")
    job_template: JobTemplate = Field(description="The Job that trains and packages a model.")
    output: OutputSpec = Field(description="Where runs write their models.")
    triggers: TriggerSpec = Field(default_factory=TriggerSpec, description="When a run starts.")
    cooldown: Duration = Field(
        "1h",
        description="Least time from the end of a run to the start of the next one started by "
        "drift; doubled after every run in a row that fails, is rejected or rolled back (up to "
        "16 times). A person's request skips it. Default 1h.",
    )
    max_concurrent: int = Field(
        1, ge=1, le=10, description="Runs (Jobs) at most at the same time. Default 1."
    )
    validation: ValidationSpec = Field(
        default_factory=ValidationSpec, description="What a candidate must score."
    )
    approval: Approval = Field(
        "Automatic",
        description="Automatic: a valid candidate is rolled out at once. Manual: it waits for "
        "`kubectl canarium retrain NAME --approve`.",
    )
    suspend: bool = Field(False, description="No new runs (runs under way finish).")
    history_limit: int = Field(
        3, ge=0, le=10, description="Finished Jobs kept (newest first); older ones are deleted."
    )

    @property
    def cooldown_seconds(self) -> float:
        return parse_duration(self.cooldown)


# --- status --------------------------------------------------------------------------------

Trigger = Literal["drift", "schedule", "manual"]
RunPhase = Literal[
    "Running",  # the Job runs
    "Failed",  # the Job failed, could not be made, or reported no model
    "Rejected",  # its model failed validation
    "AwaitingApproval",  # valid; waits for a person (approval: Manual)
    "Canarying",  # the candidate: the ModelDeployment rolls it out
    "Promoted",  # the candidate serves all traffic
    "RolledBack",  # the rollout (or its bake) rolled it back
    "Superseded",  # spec.model changed in Git, or a newer candidate came
    "Discarded",  # a person discarded it
]
ACTIVE_PHASES: Final = frozenset({"AwaitingApproval", "Canarying"})
FAILED_PHASES: Final = frozenset({"Failed", "Rejected", "RolledBack"})
RetrainingPhase = Literal[
    "Idle", "Training", "AwaitingApproval", "Canarying", "CoolingDown", "Suspended", "Stalled"
]


class ModelRef(StatusModel):
    """A model as spec.model names it."""

    uri: str = Field(max_length=2048, description="Where the model file is.")
    version: str = Field(max_length=63, description="Its version.")
    sha256: str | None = Field(None, max_length=64, description="Its SHA-256.")


class RetrainingRun(StatusModel):
    """One run: its trigger, its Job, its model and what became of it."""

    name: str = Field(max_length=63, description="The run, and its Job's name.")
    trigger: Trigger = Field(description="drift, schedule or manual.")
    reason: str | None = Field(None, max_length=1024, description="Why it started.")
    phase: RunPhase = Field(description="Where it stands.")
    message: str | None = Field(None, max_length=1024, description="What happened, in words.")
    start_time: datetime = Field(description="When its Job was made.")
    completion_time: datetime | None = Field(None, description="When its Job ended.")
    base: ModelRef | None = Field(None, description="The model it started from (serving then).")
    model: ModelRef | None = Field(None, description="The model it made.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="The model's held-out metrics."
    )
    base_metrics: dict[str, float] = Field(
        default_factory=dict, description="The base model's metrics on the same held-out rows."
    )
    revision: str | None = Field(
        None, max_length=253, description="The ModelDeployment revision that serves it."
    )


class CandidateStatus(StatusModel):
    """The model the ModelDeployment runs instead of its spec.model, while spec.model is still
    `replaces`."""

    run: str = Field(max_length=63, description="The run that made it.")
    model: ModelRef = Field(description="The candidate model.")
    replaces: ModelRef = Field(description="The ModelDeployment's spec.model it stands in for.")
    approved: bool = Field(True, description="False while it waits for a person.")
    accepted_time: datetime = Field(description="When it was validated.")
    fallback_run: str | None = Field(
        None,
        max_length=63,
        description="The promoted candidate it follows, if any: served again should this one "
        "be rolled back, rejected by a person or discarded.",
    )
    fallback_model: ModelRef | None = Field(None, description="That candidate's model.")


class ModelRetrainingStatus(StatusModel):
    """Observed state of a ModelRetraining, written by the operator."""

    observed_generation: int | None = Field(
        None, ge=0, description="The .metadata.generation this status describes.",
        json_schema_extra=INT64,
    )  # fmt: skip
    phase: RetrainingPhase | None = Field(
        None,
        description="Idle, Training, AwaitingApproval, Canarying, CoolingDown, Suspended or "
        "Stalled (it cannot work: e.g. its ModelDeployment does not exist).",
    )
    message: str | None = Field(None, max_length=1024, description="Where it stands, in words.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Ready, Reconciling (a run or candidate under way), Stalled.",
        json_schema_extra=list_map("type"),
    )
    runs: list[RetrainingRun] = Field(
        default_factory=list, max_length=MAX_RUNS, description="The latest runs, newest first."
    )
    runs_started: int = Field(0, ge=0, description="Runs started so far (names the next).")
    candidate: CandidateStatus | None = Field(
        None, description="The retrained model the ModelDeployment runs, if any."
    )
    consecutive_failures: int = Field(
        0, ge=0, description="Runs in a row that failed, were rejected or rolled back."
    )
    cooldown_until: datetime | None = Field(
        None, description="No run started by drift before this time."
    )
    last_schedule_time: datetime | None = Field(
        None, description="The last time the schedule fired (run or skipped)."
    )
    next_schedule_time: datetime | None = Field(None, description="When it fires next.")
    handled_request: str | None = Field(
        None, max_length=128, description="The last `retrain` request that started a run."
    )


class ModelRetraining(ApiObject):
    """Retraining of a ModelDeployment's model on drift, on a schedule or on request; the
    retrained model is validated and rolled out as the ModelDeployment's next canary."""

    KIND: ClassVar[str] = "ModelRetraining"
    PLURAL: ClassVar[str] = "modelretrainings"

    api_version: str = Field(API_VERSION, description="canarium.dev/v1alpha1")
    kind: Literal["ModelRetraining"] = Field("ModelRetraining", description="ModelRetraining")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: ModelRetrainingSpec = Field(description="Desired state.")
    status: ModelRetrainingStatus = Field(
        default_factory=ModelRetrainingStatus, description="Observed state."
    )
