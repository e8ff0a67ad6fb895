"""ModelDeployment status: written by the operator only, through the status subresource."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from canarium.api.common import (
    CONDITION_REASON_PATTERN,
    INT64,
    Condition,
    StatusModel,
    ensure_unique,
    list_map,
)

Phase = Literal["Pending", "Progressing", "Paused", "Healthy", "Degraded"]
Verdict = Literal["Passed", "Failed", "Inconclusive"]
Outcome = Literal["Promoted", "RolledBack", "Aborted", "Replaced"]

MAX_HISTORY = 10
MAX_MEASUREMENTS = 20
MAX_CONDITIONS = 16

# Condition types and their meaning (kstatus/Argo CD/kubectl wait read them).
CONDITION_READY = "Ready"
CONDITION_PROGRESSING = "Progressing"
CONDITION_DEGRADED = "Degraded"
# kstatus' (sigs.k8s.io/cli-utils, read by Flux) "abnormal-true" conditions: Reconciling=True
# reads as InProgress, Stalled=True as Failed; both False (and observedGeneration current) let
# it fall through to Ready. Never both True.
CONDITION_RECONCILING = "Reconciling"
CONDITION_STALLED = "Stalled"
CONDITION_TYPES = (
    CONDITION_READY,
    CONDITION_PROGRESSING,
    CONDITION_DEGRADED,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
)
# Monitoring of the stable revision (spec.monitoring): True when its live inputs or outputs
# have drifted from the model's reference statistics for `windows` windows in a row. Neither
# kstatus nor Argo CD reads it: a drifted model still serves.
CONDITION_DRIFTED = "Drifted"
MAX_DRIFT_FINDINGS = 16


class Reason(StrEnum):
    """The conditions' reasons (CamelCase, as metav1.Condition wants them), and the causes of
    a rollback kept in status.aborted and the history."""

    AVAILABLE = "Available"  # one revision serves everything, ready
    REPLICAS_NOT_READY = "ReplicasNotReady"
    NEW_REVISION_NOT_READY = "NewRevisionNotReady"  # no policy: the new one replaces when ready
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    PAUSED = "Paused"
    BAKING = "Baking"
    POLICY_NOT_FOUND = "PolicyNotFound"
    POLICY_INVALID = "PolicyInvalid"
    # Why a revision cannot serve, or was rolled back or aborted.
    ANALYSIS_FAILED = "AnalysisFailed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    MODEL_LOAD_FAILED = "ModelLoadFailed"  # the server reported that the model did not load
    REVISION_FAILED = "RevisionFailed"  # its pods do not start for another reason
    ABORTED = "Aborted"  # by a person
    SPEC_REVERTED = "SpecReverted"  # a rollout ended by the spec going back to stable
    # A promoted revision failed its bake and the previous revision is gone: nothing to go
    # back to.
    BAKE_FAILED_PREVIOUS_GONE = "BakeFailedPreviousGone"


class RevisionStatus(StatusModel):
    """One serving revision (a Deployment named <name>-<hash>) and the traffic it gets."""

    name: str | None = Field(None, max_length=253, description="Name of the revision's Deployment.")
    model_version: str | None = Field(
        None, max_length=63, description="spec.model.version that this revision serves."
    )
    replicas: int | None = Field(None, ge=0, description="Desired number of serving pods.")
    ready_replicas: int | None = Field(None, ge=0, description="Number of ready serving pods.")
    weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Percentage of the traffic the rollout asks for this revision.",
    )
    effective_weight: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        description=(
            "Percentage of the traffic this revision actually gets, rounded to 0.01. With the "
            "replicas router it follows the ratio of ready pods and may differ from weight."
        ),
    )


class Measurement(StatusModel):
    """The latest result of one analysis check."""

    check: str = Field(
        max_length=63,
        description="Check name: errorRate, latencyP99, predictionDrift, "
        "dataDrift, samples or a custom check's name.",
    )
    value: float | None = Field(None, description="Measured value; absent when there was no data.")
    threshold: str | None = Field(
        None, max_length=256, description="The limit the value was judged against, e.g. '<= 0.01'."
    )
    verdict: Verdict = Field(description="Passed, Failed or Inconclusive (too little data).")
    reason: str | None = Field(None, max_length=1024, description="Why, in a few words.")
    time: datetime = Field(description="When the measurement was taken.")


MAX_EVIDENCE = 8
GRID_POINTS = 41  # canarium.analysis.sequential.GRID_SIZE


class Evidence(StatusModel):
    """What a statistical check has gathered over the rollout and its bake (the judge's state:
    the next interval adds to it)."""

    check: str = Field(
        max_length=63, description="errorRate, latencyP99, predictionDrift or dataDrift."
    )
    decision: Literal["Failed", "Passed"] | None = Field(
        None,
        description="Failed: shown worse than tolerated (at alpha; final). Passed: shown "
        "within tolerance (early promotion may follow). Absent: not shown either way yet.",
    )
    canary_requests: float = Field(0.0, ge=0.0, description="Canary requests judged so far.")
    canary_events: float = Field(
        0.0, ge=0.0, description="Of them, errors (errorRate) or slow requests (latencyP99)."
    )
    stable_requests: float = Field(
        0.0, ge=0.0, description="Stable requests in the same intervals."
    )
    stable_events: float = Field(0.0, ge=0.0, description="Of them, errors or slow requests.")
    unpaired_requests: float = Field(
        0.0,
        ge=0.0,
        description="Canary requests in intervals where stable took none (weight 100, bake), "
        "compared with stable's rate during the rollout.",
    )
    unpaired_events: float = Field(0.0, ge=0.0, description="Of them, errors or slow requests.")
    guard_requests: float = Field(
        0.0, ge=0.0, description="Canary requests judged by the absolute guard (max, maxMs)."
    )
    guard_events: float = Field(
        0.0, ge=0.0, description="Of them, errors (errorRate) or slower than maxMs (latencyP99)."
    )
    ratio: float | None = Field(
        None, description="Estimate: canary rate / stable rate over the paired intervals."
    )
    ratio_lower: float | None = Field(
        None, description="Lower bound of the ratio's confidence sequence (at alpha)."
    )
    ratio_upper: float | None = Field(
        None, description="Upper bound of the ratio's confidence sequence (at alpha)."
    )
    max_ratio: float | None = Field(None, description="The tolerance the evidence is kept for.")
    slow_seconds: float | None = Field(
        None, description="latencyP99: requests slower than this (stable's p99 bound) are slow."
    )
    looks: int = Field(0, ge=0, description="Drift: intervals tested so far.")
    pooled_canary: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Drift: the canary's counts over the rollout (class/<output>: per class; "
        "value/<output>, input/<feature>: cumulative histograms by upper bound).",
    )
    pooled_stable: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="predictionDrift: stable's counts over the same intervals.",
    )
    log_likelihood: list[float] = Field(
        default_factory=list,
        max_length=GRID_POINTS,
        description="The comparison's log-likelihood over a grid of ratios (internal state).",
    )


MonitoringVerdict = Literal["NoDrift", "Drifted", "Inconclusive"]


class DriftFinding(StatusModel):
    """The PSI of one input feature or output in a monitoring window, against the model's
    reference statistics."""

    kind: Literal["input", "output"] = Field(
        description="input: a feature of the live inputs; output: a prediction output."
    )
    name: str = Field(max_length=253, description="The feature or output.")
    psi: float = Field(description="Population stability index of the window vs reference.")
    allowed: float = Field(
        description="The highest PSI maxPSI allows at this sample size (noise included)."
    )
    observations: float = Field(ge=0.0, description="Live values in the window.")


class MonitoringStatus(StatusModel):
    """The stable revision's monitoring (spec.monitoring): the last window judged."""

    revision: str = Field(max_length=253, description="The stable revision monitored.")
    window_start: datetime | None = Field(
        None, description="When the current window started (its first snapshot)."
    )
    last_window_time: datetime | None = Field(None, description="When a window was last judged.")
    windows: int = Field(0, ge=0, description="Windows judged for this revision.")
    consecutive_drifted: int = Field(
        0, ge=0, description="Windows in a row whose PSI was shown above maxPSI."
    )
    last_verdict: MonitoringVerdict | None = Field(
        None,
        description="NoDrift, Drifted (shown above maxPSI in that window) or Inconclusive "
        "(too few observations: never drift).",
    )
    message: str | None = Field(None, max_length=1024, description="The last window, in words.")
    findings: list[DriftFinding] = Field(
        default_factory=list,
        max_length=MAX_DRIFT_FINDINGS,
        description="The last judged window's PSI per feature and output, worst first.",
    )


class AnalysisStatus(StatusModel):
    """Progress of the analysis of the current canary (or of the promoted revision during bake)."""

    intervals: int = Field(0, ge=0, description="Intervals measured so far for this revision.")
    failures: int = Field(
        0, ge=0, description="Failed intervals of this rollout so far (rollback at failureLimit)."
    )
    consecutive_inconclusive: int = Field(
        0, ge=0, description="Inconclusive intervals in a row (pause at inconclusiveLimit)."
    )
    last_run_time: datetime | None = Field(None, description="When the last interval was judged.")
    last_verdict: Verdict | None = Field(None, description="Verdict of the last interval.")
    measurements: list[Measurement] = Field(
        default_factory=list,
        max_length=MAX_MEASUREMENTS,
        description="The latest measurement of every check.",
    )
    evidence: list[Evidence] = Field(
        default_factory=list,
        max_length=MAX_EVIDENCE,
        description="What each statistical check has gathered over the rollout and its bake.",
        json_schema_extra=list_map("check"),
    )


class HistoryEntry(StatusModel):
    """What became of an earlier rollout."""

    revision: str = Field(max_length=253, description="Name of the revision.")
    model_version: str | None = Field(
        None, max_length=63, description="Model version the revision served."
    )
    outcome: Outcome = Field(description="Promoted, RolledBack, Aborted or Replaced.")
    time: datetime = Field(description="When the outcome happened.")
    reason: str | None = Field(None, max_length=1024, description="Why, in a few words.")
    cause: str | None = Field(
        None,
        max_length=128,
        pattern=CONDITION_REASON_PATTERN,
        description="Programmatic identifier (CamelCase) of why a revision was rolled back or "
        "aborted, the Degraded condition's reason: AnalysisFailed, ProgressDeadlineExceeded, "
        "ModelLoadFailed (its model could not be fetched, verified or loaded), RevisionFailed "
        "(its pods did not start), Aborted, SpecReverted (the spec went back to the stable "
        "version mid-rollout), BakeFailedPreviousGone (on a promotion: its bake failed with "
        "the previous revision gone).",
    )


class AbortStatus(StatusModel):
    """A rollout that ended badly and holds: its canary rolled back or aborted, or a promotion
    whose bake failed with nothing to go back to."""

    revision: str = Field(max_length=253, description="Name of the revision.")
    cause: Reason = Field(
        description="Why (the Degraded condition's reason): AnalysisFailed, "
        "ProgressDeadlineExceeded, ModelLoadFailed, RevisionFailed, Aborted or "
        "BakeFailedPreviousGone.",
    )
    message: str | None = Field(None, max_length=1024, description="Why, in a few words.")
    time: datetime = Field(description="When it happened.")


class RetrainedStatus(StatusModel):
    """The model served instead of spec.model: a ModelRetraining's candidate."""

    retraining: str = Field(max_length=253, description="The ModelRetraining.")
    run: str = Field(max_length=63, description="Its run (and Job) that made the model.")
    model_version: str = Field(max_length=63, description="The candidate's version.")
    model_uri: str = Field(max_length=2048, description="The candidate's model file.")
    replaces_version: str = Field(
        max_length=63, description="spec.model.version, which it stands in for."
    )


class ModelDeploymentStatus(StatusModel):
    """Observed state of a ModelDeployment, written by the operator."""

    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The .metadata.generation this status describes.",
        json_schema_extra=INT64,
    )
    phase: Phase | None = Field(
        None, description="Pending, Progressing, Paused, Healthy or Degraded."
    )
    message: str | None = Field(
        None, max_length=32768, description="Human readable summary of the phase."
    )
    ready: str | None = Field(
        None,
        max_length=32,
        description="Ready serving pods over desired serving pods, all revisions, e.g. 3/3.",
    )
    stable: RevisionStatus | None = Field(
        None, description="The revision serving the promoted model version."
    )
    canary: RevisionStatus | None = Field(
        None, description="The revision under rollout; absent when no rollout is in progress."
    )
    current_step: int | None = Field(
        None, ge=0, description="Index of the rollout step being executed (0-based)."
    )
    step_started_at: datetime | None = Field(
        None, description="When the current step started (pause durations count from here)."
    )
    steps_hash: str | None = Field(
        None,
        max_length=64,
        description="Hash of the policy's steps the rollout follows: when the steps change "
        "mid-rollout, the rollout starts the new steps from the first, with the same canary.",
    )
    pause_reason: str | None = Field(
        None, max_length=1024, description="Why the rollout is paused, when phase is Paused."
    )
    analysis: AnalysisStatus | None = Field(
        None, description="Analysis of the current canary or bake."
    )
    previous: RevisionStatus | None = Field(
        None,
        description="The revision that served before the last promotion, kept scaled down "
        "while the promoted one bakes; a failure in that time rolls back to it.",
    )
    bake_until: datetime | None = Field(
        None, description="End of the bake: until then the promoted revision is still analysed."
    )
    aborted: AbortStatus | None = Field(
        None,
        description="Set when a rollout ended badly (a canary rolled back or aborted, or a "
        "bake failed with the previous revision gone): it holds until the spec changes or a "
        "person says retry.",
    )
    last_command: str | None = Field(
        None,
        max_length=256,
        description="The last canarium.dev/command annotation value carried out "
        "(promote, promote-full, abort, retry), so that each is done once.",
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description=f"The last {MAX_HISTORY} rollouts and their outcomes, newest first.",
    )
    monitoring: MonitoringStatus | None = Field(
        None, description="Monitoring of the stable revision for drift (spec.monitoring)."
    )
    retrained: RetrainedStatus | None = Field(
        None,
        description="Set while a ModelRetraining's candidate is served (or rolled out) in "
        "place of spec.model; a change of spec.model in Git ends it.",
    )
    endpoint: str | None = Field(
        None,
        max_length=2048,
        description="In-cluster URL of the Open Inference Protocol (V2) endpoint.",
    )
    grpc_endpoint: str | None = Field(
        None,
        max_length=2048,
        description="In-cluster target (host:port) of the Open Inference Protocol (V2) gRPC "
        "endpoint (inference.GRPCInferenceService).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Ready, Progressing and Degraded conditions, kstatus' Reconciling "
        "(a rollout, replacement or bake under way, or paused) and Stalled (it ended where a "
        "person must act: rolled back, progress deadline, model load failure, invalid "
        "policy), and Drifted with spec.monitoring (metav1.Condition).",
        json_schema_extra=list_map("type"),
    )

    @field_validator("conditions")
    @classmethod
    def _unique_conditions(cls, value: list[Condition]) -> list[Condition]:
        ensure_unique(value, "type", "conditions")
        return value

    def condition(self, type_: str) -> Condition | None:
        """The condition of the given type, if present."""
        return next((c for c in self.conditions if c.type == type_), None)
