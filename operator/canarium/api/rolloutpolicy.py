"""RolloutPolicy: how a new model version is rolled out and judged."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from canarium.api.common import (
    API_VERSION,
    HTTP_HEADER_NAME_PATTERN,
    INT64,
    ApiObject,
    Condition,
    DnsLabel,
    Duration,
    ObjectMeta,
    Rule,
    SpecModel,
    StatusModel,
    ensure_unique,
    list_map,
    parse_duration,
    validations,
)

MAX_STEPS = 20
MAX_CUSTOM_CHECKS = 10

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------


class PauseStep(SpecModel):
    """Hold the current weight. With a duration the rollout continues on its own once the time
    has passed (and analysis has not failed); without one (`pause: {}`) it waits for a person
    (`kubectl canarium promote`)."""

    duration: Duration | None = Field(
        None,
        description=(
            "How long to hold, e.g. 30s, 5m, 1h30m. Absent: wait until promoted by a person."
        ),
    )

    @property
    def seconds(self) -> float | None:
        """The duration in seconds, or None for an indefinite pause."""
        return None if self.duration is None else parse_duration(self.duration)


RULE_ONE_ACTION = Rule(
    "has(self.setWeight) != has(self.pause)",
    "each step sets exactly one of setWeight or pause",
)


class RolloutStep(SpecModel):
    """One step of a canary rollout: exactly one of setWeight or pause."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_ONE_ACTION))

    set_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Send this percentage (0-100) of the traffic to the canary.",
    )
    pause: PauseStep | None = Field(
        None,
        description="Hold the current weight for a duration, or until promoted when empty.",
    )

    @model_validator(mode="after")
    def _one_action(self) -> RolloutStep:
        if (self.set_weight is None) == (self.pause is None):
            raise RULE_ONE_ACTION.fail()
        return self


RULE_WEIGHTS_SORTED = Rule(
    "self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
    "setWeight values must never decrease from one step to the next",
)

# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


class PodMetricsProvider(SpecModel):
    """Scrape the serving pods' /metrics through the API server's pod proxy: no Prometheus
    needed. Takes no settings."""


class HttpHeader(SpecModel):
    """An HTTP header sent with every query (not for secrets: the value is stored in plain
    text)."""

    name: str = Field(
        description="Header name.", min_length=1, max_length=256, pattern=HTTP_HEADER_NAME_PATTERN
    )
    value: str = Field(description="Header value.", max_length=4096)


class PrometheusProvider(SpecModel):
    """Query a Prometheus-compatible HTTP API."""

    address: str = Field(
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.",
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
    )
    headers: list[HttpHeader] = Field(
        default_factory=list,
        max_length=16,
        description="Extra HTTP headers for every query, e.g. X-Scope-OrgID for multi-tenancy.",
        json_schema_extra=list_map("name"),
    )

    @field_validator("headers")
    @classmethod
    def _unique_headers(cls, value: list[HttpHeader]) -> list[HttpHeader]:
        ensure_unique(value, "name", "headers")
        return value


def exactly_one_of(*fields: str) -> Rule:
    """A rule that exactly one of the optional `fields` (as spelled in the API) is set, for any
    number of them."""
    listed = ", ".join(fields[:-1]) + f" or {fields[-1]}"
    present = ", ".join(f"has(self.{f})" for f in fields)
    return Rule(f"[{present}].exists_one(x, x)", f"set exactly one of {listed}")


class MetricsProvider(SpecModel):
    """Where measurements come from: exactly one provider."""

    # The rule is made from the fields when the schema is, so a provider is just a field.
    model_config = ConfigDict(
        json_schema_extra=lambda schema, cls: schema.update(validations(cls.one_provider_rule()))
    )

    pod_metrics: PodMetricsProvider | None = Field(
        None, description="Scrape the serving pods through the API server (no Prometheus needed)."
    )
    prometheus: PrometheusProvider | None = Field(None, description="Query a Prometheus server.")

    @classmethod
    def one_provider_rule(cls) -> Rule:
        """Exactly one of the providers (every field) is set."""
        return exactly_one_of(*(field.alias or name for name, field in cls.model_fields.items()))

    @model_validator(mode="after")
    def _one_provider(self) -> MetricsProvider:
        if len(self._set_fields()) != 1:
            raise self.one_provider_rule().fail()
        return self

    def _set_fields(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    @property
    def type(self) -> str:
        """The provider's type: the name of its field in the API, e.g. podMetrics."""
        (name,) = self._set_fields()
        return type(self).model_fields[name].alias or name

    @property
    def settings(self) -> SpecModel:
        """The chosen provider's own settings (the value of its field)."""
        (name,) = self._set_fields()
        value: SpecModel = getattr(self, name)
        return value


ALPHA_DESCRIPTION = (
    "The highest chance, at most, that the analysis rolls back a canary that is within every "
    "tolerance, however long the rollout and the bake run and whatever the traffic: evidence "
    "accumulates over the whole rollout and a check fails only once it is this sure. It is "
    "shared out evenly between the statistical checks. Default 0.01 (1%)."
)


class ErrorRateCheck(SpecModel):
    """Compare the canary's error rate with stable's, over the whole rollout and its bake.
    Every answer that is not 2xx counts: server errors (5xx) and requests the model rejects
    (4xx), so a canary whose model refuses inputs that the stable one accepts fails; 4xx that
    stable gets as often do not count against the canary. Fails only when the evidence shows,
    at the analysis' alpha, that the canary errs more than maxRatio times as often as stable (or
    more often than max); few requests mean weak evidence, which holds, never fails."""

    max_ratio: float = Field(
        1.5,
        ge=1.0,
        le=100.0,
        description=(
            "Tolerated degradation: the canary may err up to this many times as often as "
            "stable, e.g. 1.5 (50% more errors). Default 1.5."
        ),
    )
    max: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "Optional absolute guard, a fraction between 0 and 1, e.g. 0.05: fail when the "
            "evidence shows that more than this share of the canary's requests fail, whatever "
            "stable does. Also judges intervals where stable takes no traffic."
        ),
    )


class LatencyCheck(SpecModel):
    """Compare the canary's slow requests with stable's, over the whole rollout and its bake:
    a request is slow when it takes longer than stable's 99th percentile (the histogram
    bucket bound at it, fixed from stable's first measured interval), so stable has about 1%
    of them. Fails when the evidence shows, at the analysis' alpha, that the canary has more
    than maxRatio times stable's share of slow requests, or (maxMs) that its p99 is above
    maxMs."""

    max_ratio: float = Field(
        2.0,
        ge=1.0,
        le=100.0,
        description=(
            "Tolerated degradation: the canary's share of requests slower than stable's p99 may "
            "be up to this many times stable's share, e.g. 2. Default 2."
        ),
    )
    max_ms: float | None = Field(
        None,
        gt=0.0,
        le=3_600_000.0,
        description=(
            "Optional absolute guard: fail when the evidence shows that more than 1% of the "
            "canary's requests take longer than this many milliseconds (its p99 is above it)."
        ),
    )


class DriftCheck(SpecModel):
    """Fail when the population stability index (PSI) is shown to be above maxPSI: each
    interval's PSI is tested against the PSI that maxPSI and the sample size allow, at a share
    of the analysis' alpha that shrinks with every look, so a small sample's noisy PSI does not
    fail. Rule of thumb: below 0.1 no shift, 0.1-0.25 moderate shift, above 0.25 major shift."""

    max_psi: float = Field(
        0.2,
        ge=0.0,
        le=100.0,
        alias="maxPSI",
        description="Tolerated population stability index. Default 0.2.",
    )


RULE_CUSTOM_BOUNDS = Rule("has(self.min) || has(self.max)", "a custom check needs min, max or both")
RULE_CUSTOM_ORDER = Rule(
    "!has(self.min) || !has(self.max) || self.min <= self.max",
    "a custom check's min must not be greater than its max",
)


class CustomCheck(SpecModel):
    """A PromQL query whose value must stay within [min, max]. Needs the prometheus provider."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_CUSTOM_BOUNDS, RULE_CUSTOM_ORDER))

    name: DnsLabel = Field(description="Name of the check, shown in status measurements.")
    query: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "PromQL query returning one number. The placeholders {{namespace}}, {{deployment}}, "
            "{{revision}} and {{role}} (stable or canary) are replaced before it runs."
        ),
    )
    min: float | None = Field(None, description="Lowest acceptable value (inclusive).")
    max: float | None = Field(None, description="Highest acceptable value (inclusive).")

    @model_validator(mode="after")
    def _bounds(self) -> CustomCheck:
        if self.min is None and self.max is None:
            raise RULE_CUSTOM_BOUNDS.fail()
        if self.min is not None and self.max is not None and self.min > self.max:
            raise RULE_CUSTOM_ORDER.fail()
        return self


RULE_SOME_CHECK = Rule(
    "has(self.errorRate) || has(self.latencyP99) || has(self.predictionDrift)"
    " || has(self.dataDrift) || (has(self.custom) && size(self.custom) > 0)",
    "set at least one check",
)


class AnalysisChecks(SpecModel):
    """The checks run at every analysis interval against the canary (or, during bake, the newly
    promoted revision). At least one must be set."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_SOME_CHECK))

    error_rate: ErrorRateCheck | None = Field(
        None,
        description="Error rate compared with stable's: every non-2xx answer, 4xx included.",
    )
    latency_p99: LatencyCheck | None = Field(
        None, description="Share of requests slower than stable's p99, and a p99 guard."
    )
    prediction_drift: DriftCheck | None = Field(
        None,
        description=(
            "Maximum PSI between the canary's and the stable revision's output distributions."
        ),
    )
    data_drift: DriftCheck | None = Field(
        None,
        description=(
            "Maximum PSI between live input features and the model's reference statistics."
        ),
    )
    custom: list[CustomCheck] = Field(
        default_factory=list,
        max_length=MAX_CUSTOM_CHECKS,
        description="Raw PromQL checks with bounds (prometheus provider only).",
        json_schema_extra=list_map("name"),
    )

    @field_validator("custom")
    @classmethod
    def _unique_custom(cls, value: list[CustomCheck]) -> list[CustomCheck]:
        ensure_unique(value, "name", "custom")
        return value

    @model_validator(mode="after")
    def _some_check(self) -> AnalysisChecks:
        if not (
            self.error_rate
            or self.latency_p99
            or self.prediction_drift
            or self.data_drift
            or self.custom
        ):
            raise RULE_SOME_CHECK.fail()
        return self


def default_provider() -> MetricsProvider:
    return MetricsProvider(pod_metrics=PodMetricsProvider())


class AnalysisSpec(SpecModel):
    """Measure the canary at every interval and judge it against stable. The statistical
    checks (errorRate, latencyP99, the drifts) roll back as soon as the evidence is strong
    enough, with the chance of rolling back a good canary bounded by alpha; intervals with too
    little traffic are inconclusive and hold the rollout, they never fail it."""

    interval: Duration = Field("30s", description="Time between two measurements, e.g. 30s.")
    initial_delay: Duration | None = Field(
        None, description="Wait this long after a weight change before the first measurement."
    )
    failure_limit: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "Roll back after this many failed intervals of the custom checks. The statistical "
            "checks need no count: their evidence accumulates, and they fail at once when it "
            "is strong enough."
        ),
    )
    alpha: float = Field(0.01, gt=0.0, le=0.2, description=ALPHA_DESCRIPTION)
    early_promotion: bool = Field(
        False,
        description=(
            "Promote as soon as the comparisons with stable (errorRate, latencyP99) show, at "
            "alpha, that the canary is within their tolerance, skipping the remaining steps "
            "and pauses (a pause for a person still waits). Default false."
        ),
    )
    inconclusive_limit: int | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            "Pause the rollout for a person after this many consecutive inconclusive intervals. "
            "0 or absent: keep holding (and measuring) until enough data arrives."
        ),
    )
    min_samples: int = Field(
        50,
        ge=1,
        le=100_000_000,
        description=(
            "Fewest canary requests an interval needs for a step to pass; fewer is "
            "inconclusive and holds, never a failure (the evidence still accumulates)."
        ),
    )
    provider: MetricsProvider = Field(
        default_factory=default_provider,
        description="Where measurements come from. Default: podMetrics.",
    )
    checks: AnalysisChecks = Field(description="What is measured and the limits.")

    @property
    def interval_seconds(self) -> float:
        """`interval` in seconds."""
        return parse_duration(self.interval)

    @property
    def initial_delay_seconds(self) -> float:
        """`initialDelay` in seconds (0 when absent)."""
        return 0.0 if self.initial_delay is None else parse_duration(self.initial_delay)


RULE_BAKE_NEEDS_ANALYSIS = Rule(
    "!has(self.bake) || has(self.analysis)",
    "bake needs analysis: a bake judges the promoted version with the analysis checks; "
    "add analysis or remove bake",
    field_path=".bake",
)


class RolloutPolicySpec(SpecModel):
    """How a new model version is rolled out: weight steps and pauses, analysis of the canary,
    and an optional bake time after promotion. After the last step the canary is promoted to
    100% of the traffic."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_BAKE_NEEDS_ANALYSIS))

    steps: list[RolloutStep] = Field(
        min_length=1,
        max_length=MAX_STEPS,
        description=(
            "Ordered steps: setWeight moves traffic to the canary, pause holds it. setWeight "
            "values never decrease."
        ),
        json_schema_extra=validations(RULE_WEIGHTS_SORTED),
    )
    analysis: AnalysisSpec | None = Field(
        None,
        description="Judge the canary from metrics while it runs. Absent: no automatic judgement.",
    )
    bake: Duration | None = Field(
        None,
        description=(
            "Keep analysing a promoted version this long; a failure then rolls back to the "
            "previous revision, which is kept scaled down until the bake ends."
        ),
    )

    @field_validator("steps")
    @classmethod
    def _weights_sorted(cls, value: list[RolloutStep]) -> list[RolloutStep]:
        weights = [s.set_weight for s in value if s.set_weight is not None]
        if weights != sorted(weights):
            raise RULE_WEIGHTS_SORTED.fail()
        return value

    @model_validator(mode="after")
    def _bake_needs_analysis(self) -> RolloutPolicySpec:
        if self.bake is not None and self.analysis is None:
            raise RULE_BAKE_NEEDS_ANALYSIS.fail()
        return self

    @property
    def bake_seconds(self) -> float:
        """`bake` in seconds (0 when absent)."""
        return 0.0 if self.bake is None else parse_duration(self.bake)


class RolloutPolicyStatus(StatusModel):
    """Observed state of a RolloutPolicy."""

    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The .metadata.generation the operator last checked.",
        json_schema_extra=INT64,
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready is True when the policy is valid and usable.",
        json_schema_extra=list_map("type"),
    )


PolicyKind = Literal["RolloutPolicy"]


class RolloutPolicy(ApiObject):
    """A reusable rollout strategy, referenced by ModelDeployments through
    spec.rollout.policyRef. Parse a raw object from the API server with `model_validate`."""

    KIND: ClassVar[str] = "RolloutPolicy"
    PLURAL: ClassVar[str] = "rolloutpolicies"

    api_version: str = Field(API_VERSION, description="canarium.dev/v1alpha1")
    kind: PolicyKind = Field("RolloutPolicy", description="RolloutPolicy")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: RolloutPolicySpec = Field(description="The rollout strategy.")
    status: RolloutPolicyStatus = Field(
        default_factory=RolloutPolicyStatus, description="Observed state."
    )
