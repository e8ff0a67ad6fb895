"""plan_retraining(input) -> RetrainingPlan: what a ModelRetraining does next. Pure.

A run goes Running (its Job) -> Failed, or -> Rejected / AwaitingApproval / Canarying (its
report validated) -> Promoted / RolledBack (what its ModelDeployment made of it), or
Superseded / Discarded. The candidate (status.candidate) is what the ModelDeployment serves in
place of its spec.model; `candidate_for` is the ModelDeployment's side of that. The I/O layer
(canarium.retraining_controller) gathers the input from its caches, makes and deletes Jobs,
patches the status and records events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from canarium_serving import contract
from canarium_serving.manifest import ManifestError, TrainingResult, parse_training_result

from canarium.api import Condition, ModelDeployment, ModelDeploymentSpec, ModelSpec
from canarium.api.modelretraining import (
    ACTIVE_PHASES,
    ANNOTATION_APPROVE,
    ANNOTATION_DISCARD,
    ANNOTATION_RETRAIN,
    FAILED_PHASES,
    MAX_RUNS,
    METRICS_LOWER_IS_BETTER,
    CandidateStatus,
    ModelRef,
    ModelRetraining,
    ModelRetrainingStatus,
    RetrainingRun,
    RunPhase,
    Trigger,
    next_schedule_time,
)
from canarium.api.status import CONDITION_DRIFTED, CONDITION_RECONCILING, CONDITION_STALLED
from canarium.render import LABEL_MANAGED_BY, MANAGER, revision_hash, revision_name
from canarium.rollout import Event

LABEL_RETRAINING: Final = "canarium.dev/retraining"  # on its Jobs: the ModelRetraining's name
LABEL_RUN: Final = "canarium.dev/run"
MAX_BACKOFF_DOUBLINGS: Final = 4  # cooldown x16 at most
CONDITION_READY: Final = "Ready"

JobState = Literal["Active", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobObservation:
    """A run's Job as the cache has it."""

    name: str
    state: JobState
    message: str = ""  # why it failed (its Failed condition)
    completion_time: datetime | None = None
    result: str | None = None  # the training container's termination message, once it ended


@dataclass(frozen=True)
class RetrainingInput:
    retraining: ModelRetraining
    mdep: ModelDeployment | None  # None: it does not exist
    jobs: dict[str, JobObservation]  # this ModelRetraining's Jobs by name
    now: datetime
    claimed_by: str | None = None  # an older ModelRetraining of the same ModelDeployment


@dataclass
class RetrainingPlan:
    status: dict[str, Any]
    create: list[dict[str, Any]] = field(default_factory=list)  # Jobs to make
    delete: list[str] = field(default_factory=list)  # Jobs to delete (history limit)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds
    candidate_changed: bool = False  # the ModelDeployment has to look again


def model_ref(model: ModelSpec) -> ModelRef:
    return ModelRef(uri=model.uri, version=model.version, sha256=model.sha256)


def same_model(ref: ModelRef, model: ModelSpec) -> bool:
    return (ref.uri, ref.version, ref.sha256) == (model.uri, model.version, model.sha256)


def candidate_for(mdep: ModelDeployment, retraining: ModelRetraining | None) -> ModelSpec | None:
    """The model a ModelDeployment serves instead of its spec.model: its retraining's
    approved candidate, while spec.model is still the model that candidate replaces (a change
    in Git wins)."""
    if retraining is None or retraining.spec.deployment_ref.name != mdep.metadata.name:
        return None
    candidate = retraining.status.candidate
    if candidate is None or not candidate.approved:
        return None
    if not same_model(candidate.replaces, mdep.spec.model):
        return None
    return ModelSpec(
        uri=candidate.model.uri,
        version=candidate.model.version,
        sha256=candidate.model.sha256,
        format=mdep.spec.model.format,
    )


def with_model(spec: ModelDeploymentSpec, model: ModelSpec | None) -> ModelDeploymentSpec:
    """`spec` serving `model` instead of its own (the spec itself when None)."""
    return spec if model is None else spec.model_copy(update={"model": model})


def candidate_revision(mdep: ModelDeployment, model: ModelRef) -> str:
    """The revision (Deployment name) that serves `model` under this ModelDeployment's spec."""
    spec = with_model(
        mdep.spec,
        ModelSpec(uri=model.uri, version=model.version, sha256=model.sha256),
    )
    return revision_name(mdep.metadata.name, revision_hash(spec))


def candidate_version(git_version: str, run_number: int) -> str:
    """The version a run's model gets: the Git version and the run, e.g. 1.4.0-rt3, cut to a
    label value's 63 characters."""
    suffix = f"-rt{run_number}"
    return git_version[: 63 - len(suffix)].rstrip("-_.") + suffix


def run_name(retraining: str, run_number: int) -> str:
    suffix = f"-{run_number}"
    return retraining[: 63 - len(suffix)].rstrip("-.") + suffix


def output_folder(uri: str, run: str) -> str:
    return uri.rstrip("/") + "/" + run


def check_candidate(
    retraining: ModelRetraining, run: RetrainingRun, result: TrainingResult
) -> str | None:
    """Why a run's reported model may not be rolled out; None when it may."""
    folder = output_folder(retraining.spec.output.uri, run.name) + "/"
    if not result.model_uri.startswith(folder):
        return f"its model {result.model_uri} is not in the run's folder {folder}"
    validation = retraining.spec.validation
    metric = validation.metric
    value = result.metrics.get(metric)
    lower_better = metric in METRICS_LOWER_IS_BETTER
    if value is None and (validation.minimum is not None or validation.not_worse_than_base):
        known = ", ".join(sorted(result.metrics)) or "none"
        return f"it reported no held-out {metric} (it reported: {known})"
    floor = validation.minimum
    if (
        value is not None
        and floor is not None
        and (value > floor if lower_better else value < floor)
    ):
        bound = "at most" if lower_better else "at least"
        return f"held-out {metric} {value:.4g}, the policy wants {bound} {floor:g}"
    base = result.base_metrics.get(metric)
    if value is not None and validation.not_worse_than_base and base is not None:
        worse = (value - base) if lower_better else (base - value)
        if worse > validation.tolerance:
            return (
                f"held-out {metric} {value:.4g} is worse than the model it replaces "
                f"({base:.4g} on the same rows; tolerance {validation.tolerance:g})"
            )
    return None


def drift_report(mdep: ModelDeployment) -> dict[str, Any]:
    """What the Job gets in CANARIUM_DRIFT_REPORT: the last monitoring window."""
    monitoring = mdep.status.monitoring
    if monitoring is None:
        return {}
    return monitoring.to_dict()


def render_job(
    retraining: ModelRetraining,
    mdep: ModelDeployment,
    run: RetrainingRun,
    env: dict[str, str],
) -> dict[str, Any]:
    """The run's Job: the template, labelled and owned, with the run's env in every container
    (before the template's own env, which may not set these names)."""
    template = retraining.spec.job_template
    meta = template.metadata
    spec: dict[str, Any] = json.loads(json.dumps(template.spec))
    spec.setdefault("backoffLimit", 0)
    pod = spec.setdefault("template", {})
    pod_spec = pod.setdefault("spec", {})
    pod_spec.setdefault("restartPolicy", "Never")
    injected = [{"name": k, "value": v} for k, v in env.items()]
    for container in pod_spec.get("containers") or []:
        own = [e for e in container.get("env") or [] if e.get("name") not in env]
        container["env"] = injected + own
    labels = {
        **(meta.get("labels") or {}),
        LABEL_MANAGED_BY: MANAGER,
        LABEL_RETRAINING: retraining.metadata.name,
        LABEL_RUN: run.name,
    }
    pod_meta = pod.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), LABEL_RUN: run.name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run.name,
            "namespace": retraining.metadata.namespace,
            "labels": labels,
            "annotations": {
                **(meta.get("annotations") or {}),
                "canarium.dev/trigger": run.trigger,
                "canarium.dev/deployment": mdep.metadata.name,
            },
            "ownerReferences": [
                {
                    "apiVersion": retraining.api_version,
                    "kind": retraining.kind,
                    "name": retraining.metadata.name,
                    "uid": retraining.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "spec": spec,
    }


class _Planner:
    def __init__(self, inp: RetrainingInput) -> None:
        self.inp = inp
        self.retraining = inp.retraining
        self.spec = inp.retraining.spec
        self.now = inp.now
        self.status: ModelRetrainingStatus = inp.retraining.status.model_copy(deep=True)
        self.runs = {run.name: run for run in self.status.runs}
        self.plan = RetrainingPlan(status={})
        self.waits: list[datetime] = []

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.plan.events.append(Event(type_, reason, message))

    def set_run(self, run: RetrainingRun, **update: Any) -> RetrainingRun:
        new = run.model_copy(update=update)
        self.runs[run.name] = new
        return new

    def finish(self, run: RetrainingRun, phase: RunPhase, message: str) -> None:
        """A run's end: its phase, the failure count and the cooldown that follows."""
        self.set_run(run, phase=phase, message=message)
        if phase in FAILED_PHASES:
            self.status.consecutive_failures += 1
        elif phase == "Promoted":
            self.status.consecutive_failures = 0
        doublings = min(self.status.consecutive_failures, MAX_BACKOFF_DOUBLINGS)
        pause = self.spec.cooldown_seconds * (2**doublings)
        self.status.cooldown_until = self.now + timedelta(seconds=pause)

    # --- runs under way ------------------------------------------------------------------
    def follow_jobs(self) -> None:
        for run in list(self.runs.values()):
            if run.phase != "Running":
                continue
            job = self.inp.jobs.get(run.name)
            if job is None:
                self.finish(run, "Failed", "its Job is gone (deleted before it ended)")
                self.event("Warning", "RetrainingFailed", f"run {run.name}: its Job is gone")
            elif job.state == "Failed":
                ended = self.set_run(run, completion_time=job.completion_time or self.now)
                message = f"its Job failed: {job.message or 'no reason given'}"
                self.finish(ended, "Failed", message)
                self.event("Warning", "RetrainingFailed", f"run {run.name}: {message}")
            elif job.state == "Succeeded":
                ended = self.set_run(run, completion_time=job.completion_time or self.now)
                self.take_result(ended, job)

    def take_result(self, run: RetrainingRun, job: JobObservation) -> None:
        if not job.result:
            message = (
                "its Job succeeded but reported no model: the training container must end "
                "with canarium_serving.packaging's TrainingContext.report_result (it writes "
                f"{contract.TRAINING_ENV_RESULT_FILE}, the termination message)"
            )
            self.finish(run, "Failed", message)
            self.event("Warning", "RetrainingFailed", f"run {run.name}: {message}")
            return
        try:
            result = parse_training_result(job.result, f"run {run.name}'s result")
        except ManifestError as exc:
            self.finish(run, "Failed", str(exc))
            self.event("Warning", "RetrainingFailed", str(exc))
            return
        model = ModelRef(uri=result.model_uri, version=result.version, sha256=result.sha256)
        run = self.set_run(
            run, model=model, metrics=result.metrics, base_metrics=result.base_metrics
        )
        problem = check_candidate(self.retraining, run, result)
        if problem is not None:
            message = f"candidate {result.version} rejected: {problem}"
            self.finish(run, "Rejected", message)
            self.event("Warning", "CandidateRejected", f"run {run.name}: {message}")
            return
        mdep = self.inp.mdep
        if mdep is None:
            self.finish(run, "Failed", "its ModelDeployment is gone")
            return
        old = self.status.candidate
        if old is None and run.base is not None and not same_model(run.base, mdep.spec.model):
            # It trained from a model that no longer serves: spec.model changed in Git (or the
            # candidate it started from was withdrawn) while it ran. Git wins.
            message = (
                f"candidate {model.version} superseded: it was trained from "
                f"{run.base.version}, and {mdep.spec.model.version} serves now"
            )
            self.finish(run, "Superseded", message)
            self.event("Normal", "CandidateSuperseded", f"run {run.name}: {message}")
            return
        fallback: tuple[str, ModelRef] | None = None
        if old is not None:
            old_run = self.runs.get(old.run)
            # A candidate whose run left status.runs (10 newer runs) was promoted: no run
            # starts while a candidate awaits approval or is canaried.
            if old_run is None or old_run.phase == "Promoted":
                # It serves until the new one is promoted, and again if the new one fails.
                fallback = (old.run, old.model)
            elif old.fallback_run is not None and old.fallback_model is not None:
                fallback = (old.fallback_run, old.fallback_model)
            if old_run is not None and old_run.phase in ACTIVE_PHASES:
                self.finish(old_run, "Superseded", f"a newer candidate came from run {run.name}")
        approved = self.spec.approval == "Automatic"
        replaces = old.replaces if old is not None else model_ref(mdep.spec.model)
        self.status.candidate = CandidateStatus(
            run=run.name,
            model=model,
            replaces=replaces,
            approved=approved,
            accepted_time=self.now,
            fallback_run=fallback[0] if fallback else None,
            fallback_model=fallback[1] if fallback else None,
        )
        self.plan.candidate_changed = True
        revision = candidate_revision(mdep, model)
        scores = _scores(result, self.spec.validation.metric)
        if approved:
            self.set_run(
                run,
                phase="Canarying",
                revision=revision,
                message=f"candidate {model.version} ({scores}) is rolled out as the canary",
            )
            self.event(
                "Normal",
                "CandidateAccepted",
                f"run {run.name}: {model.version} ({scores}) is the next canary of "
                f"{mdep.metadata.name}",
            )
        else:
            self.set_run(
                run,
                phase="AwaitingApproval",
                revision=revision,
                message=f"candidate {model.version} ({scores}) waits for "
                f"`kubectl canarium retrain {self.retraining.metadata.name} --approve`",
            )
            self.event(
                "Normal", "CandidateAwaitingApproval", f"run {run.name}: {model.version} ({scores})"
            )

    # --- the candidate -------------------------------------------------------------------
    def end_candidate(
        self, candidate: CandidateStatus, phase: RunPhase, message: str, *, fall_back: bool = True
    ) -> None:
        """The candidate is over: the promoted candidate it followed serves again (unless Git
        moved: `fall_back` False), else spec.model."""
        run = self.runs.get(candidate.run)
        if run is not None and run.phase in ACTIVE_PHASES | {"Promoted"}:
            self.finish(run, phase, message)
        self.status.candidate = None
        before = self.runs.get(candidate.fallback_run or "")
        if not fall_back and before is not None and before.phase == "Promoted":
            self.set_run(before, phase="Superseded", message=message)
        if fall_back and candidate.fallback_run and candidate.fallback_model:
            self.status.candidate = CandidateStatus(
                run=candidate.fallback_run,
                model=candidate.fallback_model,
                replaces=candidate.replaces,
                approved=True,
                accepted_time=self.now,
            )
        self.plan.candidate_changed = True

    def follow_candidate(self) -> None:
        candidate = self.status.candidate
        mdep = self.inp.mdep
        if candidate is None or mdep is None:
            return
        annotations = self.retraining.metadata.annotations
        run = self.runs.get(candidate.run)
        if not same_model(candidate.replaces, mdep.spec.model):
            message = (
                f"spec.model changed in Git (to {mdep.spec.model.version}): Git wins over "
                f"candidate {candidate.model.version}"
            )
            self.end_candidate(candidate, "Superseded", message, fall_back=False)
            self.event("Normal", "CandidateSuperseded", message)
            return
        if annotations.get(ANNOTATION_DISCARD) == candidate.run:
            message = (
                f"candidate {candidate.model.version} discarded by a person: back to "
                f"spec.model {mdep.spec.model.version}"
            )
            self.end_candidate(candidate, "Discarded", message)
            self.event("Normal", "CandidateDiscarded", message)
            return
        if not candidate.approved:
            if annotations.get(ANNOTATION_APPROVE) != candidate.run:
                return
            self.status.candidate = candidate = candidate.model_copy(update={"approved": True})
            self.plan.candidate_changed = True
            if run is not None:
                run = self.set_run(
                    run,
                    phase="Canarying",
                    message=f"candidate {candidate.model.version} approved; rolled out as the "
                    "canary",
                )
            self.event("Normal", "CandidateApproved", f"run {candidate.run} approved")
        if run is None or run.revision is None:
            return
        outcome = _outcome(mdep, run.revision, candidate.accepted_time)
        if outcome is not None and run.phase in ACTIVE_PHASES | {"Promoted"}:
            message = f"candidate {candidate.model.version} rolled back: {outcome}"
            self.end_candidate(candidate, "RolledBack", message)
            self.event("Warning", "CandidateRolledBack", f"run {run.name}: {message}")
            return
        status = mdep.status
        promoted = (
            status.stable is not None and status.stable.name == run.revision and not status.canary
        )
        if promoted and run.phase == "Canarying":
            message = f"candidate {candidate.model.version} promoted: it serves all traffic"
            self.finish(run, "Promoted", message)
            self.event("Normal", "CandidatePromoted", f"run {run.name}: {message}")
            before = self.runs.get(candidate.fallback_run or "")
            if before is not None and before.phase == "Promoted":
                self.set_run(before, phase="Superseded", message=f"replaced by run {run.name}")
            self.status.candidate = candidate.model_copy(
                update={"fallback_run": None, "fallback_model": None}
            )

    # --- new runs ------------------------------------------------------------------------
    def busy(self) -> str | None:
        """Why no run may start now; None when one may."""
        running = sum(run.phase == "Running" for run in self.runs.values())
        if running >= self.spec.max_concurrent:
            return f"{running} run(s) under way (maxConcurrent {self.spec.max_concurrent})"
        candidate = self.status.candidate
        if candidate is not None:
            run = self.runs.get(candidate.run)
            if run is not None and run.phase in ACTIVE_PHASES:
                return f"candidate {candidate.model.version} of run {run.name} is {run.phase}"
        mdep = self.inp.mdep
        if mdep is not None and mdep.status.canary is not None:
            return f"{mdep.metadata.name} is rolling out"
        return None

    def drifted(self) -> str | None:
        """The drift that calls for a run, in words; None when there is none."""
        mdep = self.inp.mdep
        if mdep is None or not self.spec.triggers.on_drift:
            return None
        condition = mdep.status.condition(CONDITION_DRIFTED)
        if condition is None or condition.status != "True":
            return None
        monitoring = mdep.status.monitoring
        stable = mdep.status.stable
        if monitoring is None or stable is None or monitoring.revision != stable.name:
            return None
        return condition.message

    def schedule_due(self) -> bool:
        """Whether the schedule fired since it last did (the latest time only: missed ones are
        not made up for); keeps last/next schedule times."""
        schedule = self.spec.triggers.schedule
        if schedule is None:
            self.status.last_schedule_time = self.status.next_schedule_time = None
            return False
        since = self.status.last_schedule_time or self.retraining.metadata.creation_timestamp
        since = since or self.now
        due = False
        fire = next_schedule_time(schedule, since)
        while fire <= self.now:
            due = True
            self.status.last_schedule_time = fire
            fire = next_schedule_time(schedule, fire)
        self.status.next_schedule_time = fire
        self.waits.append(fire)
        return due

    def start_runs(self) -> None:
        mdep = self.inp.mdep
        scheduled = self.schedule_due()  # keeps the schedule's times even when nothing starts
        request = self.retraining.metadata.annotations.get(ANNOTATION_RETRAIN)
        requested = bool(request) and request != self.status.handled_request
        if mdep is None or self.spec.suspend or self.inp.claimed_by is not None:
            return
        why_busy = self.busy()
        drift = self.drifted()
        cooled = self.status.cooldown_until is None or self.now >= self.status.cooldown_until
        trigger: Trigger | None = None
        reason = ""
        if requested:
            trigger, reason = "manual", f"requested at {request}"
        elif scheduled:
            trigger, reason = "schedule", f"schedule {self.spec.triggers.schedule}"
        elif drift is not None and cooled:
            trigger, reason = "drift", drift
        elif drift is not None and self.status.cooldown_until is not None:
            self.waits.append(self.status.cooldown_until)
        if trigger is None:
            return
        if why_busy is not None:
            if trigger == "schedule":
                self.event("Normal", "ScheduleSkipped", f"the schedule fired while {why_busy}")
            return
        if trigger == "manual":
            self.status.handled_request = request
        self.start(mdep, trigger, reason)

    def start(self, mdep: ModelDeployment, trigger: Trigger, reason: str) -> None:
        number = self.status.runs_started + 1
        self.status.runs_started = number
        name = run_name(self.retraining.metadata.name, number)
        candidate = self.status.candidate
        # The base: what serves now (a promoted candidate, else spec.model).
        base = candidate.model if candidate is not None else model_ref(mdep.spec.model)
        git_version = candidate.replaces.version if candidate else mdep.spec.model.version
        version = candidate_version(git_version, number)
        run = RetrainingRun(
            name=name,
            trigger=trigger,
            reason=reason[:1024],
            phase="Running",
            message=f"Job {name} trains {version}",
            start_time=self.now,
            base=base,
        )
        self.runs[name] = run
        env = {
            contract.TRAINING_ENV_OUTPUT_URI: output_folder(self.spec.output.uri, name),
            contract.ENV_MODEL_NAME: mdep.metadata.name,
            contract.ENV_MODEL_VERSION: version,
            contract.TRAINING_ENV_BASE_MODEL_URI: base.uri,
            contract.TRAINING_ENV_BASE_MODEL_VERSION: base.version,
            contract.TRAINING_ENV_TRIGGER: trigger,
            contract.ENV_DEPLOYMENT: mdep.metadata.name,
            contract.ENV_NAMESPACE: mdep.metadata.namespace or "",
            contract.TRAINING_ENV_RESULT_FILE: contract.DEFAULT_RESULT_FILE,
        }
        if base.sha256:
            env[contract.TRAINING_ENV_BASE_MODEL_SHA256] = base.sha256
        if trigger == "drift":
            env[contract.TRAINING_ENV_DRIFT_REPORT] = json.dumps(
                drift_report(mdep), separators=(",", ":")
            )
        self.plan.create.append(render_job(self.retraining, mdep, run, env))
        self.event("Normal", "RetrainingStarted", f"run {name} ({trigger}: {reason})"[:1024])

    # --- the whole -------------------------------------------------------------------------
    def prune_jobs(self) -> None:
        finished = [
            run.name
            for run in sorted(self.runs.values(), key=_newest, reverse=True)
            if run.phase != "Running" and run.name in self.inp.jobs
        ]
        self.plan.delete.extend(finished[self.spec.history_limit :])

    def run(self) -> RetrainingPlan:
        self.follow_jobs()
        self.follow_candidate()
        self.start_runs()
        self.prune_jobs()
        runs = sorted(self.runs.values(), key=_newest, reverse=True)
        self.status.runs = runs[:MAX_RUNS]
        self.phase()
        self.status.observed_generation = self.retraining.metadata.generation
        self.plan.status = self.status.to_dict()
        if self.waits:
            wait = min(self.waits)
            self.plan.requeue_after = max((wait - self.now).total_seconds(), 0.0) + 0.5
        return self.plan

    def phase(self) -> None:
        status = self.status
        mdep_name = self.spec.deployment_ref.name
        stalled: str | None = None
        if self.inp.mdep is None:
            stalled = f"ModelDeployment {mdep_name!r} not found"
        elif self.inp.claimed_by is not None:
            stalled = (
                f"ModelDeployment {mdep_name!r} is retrained by ModelRetraining "
                f"{self.inp.claimed_by!r} (the older one); this one does nothing"
            )
        running = [run for run in status.runs if run.phase == "Running"]
        candidate_run = self.runs.get(status.candidate.run) if status.candidate else None
        cooling = status.cooldown_until is not None and self.now < status.cooldown_until
        if stalled is not None:
            phase, message = "Stalled", stalled
        elif running:
            phase, message = "Training", f"run {running[0].name}: {running[0].message}"
        elif candidate_run is not None and candidate_run.phase in ACTIVE_PHASES:
            phase, message = candidate_run.phase, candidate_run.message or ""
        elif self.spec.suspend:
            phase, message = "Suspended", "suspended: no new runs"
        elif cooling and self.drifted() is not None:
            assert status.cooldown_until is not None
            phase = "CoolingDown"
            message = f"drifted; the next run may start at {_iso(status.cooldown_until)}"
        else:
            phase = "Idle"
            last = status.runs[0] if status.runs else None
            message = f"last run {last.name}: {last.phase}" if last else "no run yet"
            if last is not None and last.message:
                message += f" ({last.message})"
        status.phase = phase  # type: ignore[assignment]
        status.message = message[:1024]
        last_run = status.runs[0] if status.runs else None
        failed = last_run is not None and last_run.phase in FAILED_PHASES
        values: dict[str, Literal["True", "False"]] = {
            CONDITION_READY: "False" if stalled or failed else "True",
            # Runs are not the spec being applied: they start from data (drift, a schedule, a
            # request) and may train for hours. Reconciling=True would hold Flux's `wait` and
            # Argo CD's sync (kstatus InProgress) for as long; the phase says what goes on.
            CONDITION_RECONCILING: "False",
            CONDITION_STALLED: "True" if stalled else "False",
        }
        reasons = {
            CONDITION_READY: "Stalled"
            if stalled
            else (f"Run{last_run.phase}" if failed and last_run else phase),
            CONDITION_RECONCILING: phase,
            CONDITION_STALLED: "DeploymentNotFound"
            if self.inp.mdep is None
            else ("DeploymentClaimed" if stalled else "AsExpected"),
        }
        old = {c.type: c for c in status.conditions}
        conditions = []
        for type_, value in values.items():
            was = old.get(type_)
            changed = was is None or was.status != value
            conditions.append(
                Condition(
                    type=type_,
                    status=value,
                    observed_generation=self.retraining.metadata.generation,
                    last_transition_time=self.now
                    if changed or was is None
                    else was.last_transition_time,
                    reason=reasons[type_],
                    message=status.message or "",
                )
            )
        status.conditions = conditions


def _newest(run: RetrainingRun) -> tuple[datetime, int]:
    """Runs in the order they started (the run number breaks ties within a second)."""
    number = run.name.rpartition("-")[2]
    return run.start_time, int(number) if number.isdigit() else 0


def _outcome(mdep: ModelDeployment, revision: str, since: datetime) -> str | None:
    """How the ModelDeployment ended `revision`'s rollout badly (rolled back or aborted, as
    the canary or in its bake) since `since`; None when it has not."""
    status = mdep.status
    if status.aborted is not None and status.aborted.revision == revision:
        return status.aborted.message or status.aborted.cause
    for entry in status.history:
        if (
            entry.revision == revision
            and entry.outcome in ("RolledBack", "Aborted")
            and entry.time >= since
        ):
            return entry.reason or entry.outcome
    return None


def _scores(result: TrainingResult, metric: str) -> str:
    value = result.metrics.get(metric)
    base = result.base_metrics.get(metric)
    text = f"held-out {metric} {value:.4g}" if value is not None else f"no held-out {metric}"
    return text + (f", the model it replaces {base:.4g}" if base is not None else "")


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_retraining(inp: RetrainingInput) -> RetrainingPlan:
    """What one ModelRetraining does now: follow its Jobs, its candidate, start a run when a
    trigger calls for one, and its new status."""
    return _Planner(inp).run()
