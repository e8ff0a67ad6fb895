"""ModelDeployment: which model, which version, how to serve it and how to roll it out."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from canarium_serving import contract
from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from canarium.api.common import (
    API_VERSION,
    C_IDENTIFIER_PATTERN,
    HTTP_HEADER_NAME_PATTERN,
    INT64,
    LABEL_VALUE_PATTERN,
    LIST_SET,
    ApiObject,
    DnsLabel,
    DnsSubdomain,
    Duration,
    ObjectMeta,
    Quantity,
    Rule,
    SpecModel,
    ensure_unique,
    list_map,
    parse_duration,
    validations,
)
from canarium.api.rolloutpolicy import (
    DriftCheck,
    MetricsProvider,
    RolloutPolicySpec,
    default_provider,
)
from canarium.api.status import ModelDeploymentStatus

MODEL_URI_PATTERN = (
    r"^("
    r"https?://[^\s/?#]+(/\S*)?"
    r"|s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/\S+"
    r"|gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9]/\S+"
    r"|(az|azure)://[a-z0-9][-a-z0-9]{1,61}[a-z0-9]/\S+"
    r"|pvc://[a-z0-9]([-.a-z0-9]*[a-z0-9])?/\S+"
    r"|configmap://[a-z0-9]([-.a-z0-9]*[a-z0-9])?/[-._a-zA-Z0-9]+"
    r"|file:///\S+"
    r")$"
)
# The variables the operator sets on every serving container (the serving contract). Other
# CANARIUM_* server knobs (batching, threads, log level) stay the user's to set.
RESERVED_ENV = (
    contract.ENV_MODEL_URI,
    contract.ENV_MODEL_SHA256,
    contract.ENV_MODEL_NAME,
    contract.ENV_MODEL_VERSION,
    contract.ENV_DEPLOYMENT,
    contract.ENV_NAMESPACE,
    contract.ENV_REVISION,
    contract.ENV_ROLE,
    contract.ENV_PORT,
    contract.ENV_GRPC_PORT,
    contract.ENV_MODEL_CACHE_DIR,
)
MAX_ENV = 100
MAX_ENV_FROM = 32

# ---------------------------------------------------------------------------------------------
# spec.model
# ---------------------------------------------------------------------------------------------


class ModelSpec(SpecModel):
    """The model artifact to serve. Changing version or uri starts a rollout."""

    uri: str = Field(
        min_length=8,
        max_length=2048,
        pattern=MODEL_URI_PATTERN,
        description=(
            "Where the model file is: http(s)://host/path, s3://bucket/key, gs://bucket/key, "
            "az://container/blob (Azure Blob Storage; azure:// too), "
            "pvc://claim/path/in/volume, configmap://name/key (binaryData or data), or "
            "file:///absolute/path inside the serving image. Object stores read their "
            "credentials from the serving container's environment (serving.env valueFrom, "
            "serving.envFrom) or its workload identity (serving.serviceAccountName)."
        ),
    )
    format: Literal["onnx"] = Field("onnx", description="Model file format. Only onnx for now.")
    version: str = Field(
        min_length=1,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description=(
            "Version of the model, free-form but label-value shaped (e.g. 1.4.0, 2024-06-01, "
            "abc123). Shown in status, metrics and revision labels."
        ),
    )
    sha256: str | None = Field(
        None,
        pattern=r"^[a-f0-9]{64}$",
        max_length=64,
        description="Expected SHA-256 of the model file (64 lowercase hex digits); pods refuse "
        "to serve a file that does not match.",
    )


# ---------------------------------------------------------------------------------------------
# spec.serving
# ---------------------------------------------------------------------------------------------


class ResourceRequirements(SpecModel):
    """Compute resources of each serving container."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources, e.g. cpu: 100m, memory: 256Mi.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources, e.g. memory: 512Mi.",
    )


RULE_AUTOSCALING_RANGE = Rule(
    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
    "minReplicas must not be greater than maxReplicas",
    field_path=".minReplicas",
)


class AutoscalingSpec(SpecModel):
    """Scale each revision with a HorizontalPodAutoscaler on CPU. When set, replicas is only the
    starting size."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_AUTOSCALING_RANGE))

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest pods per revision.")
    max_replicas: int = Field(ge=1, le=1000, description="Most pods per revision.")
    target_cpu_utilization_percentage: int = Field(
        80,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilisation (percent of requests) the autoscaler aims for.",
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise RULE_AUTOSCALING_RANGE.fail()
        return self


RULE_ENV_RESERVED = Rule(
    "!(self.name in [" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "])",
    "is set by the operator (model, identity, port and cache of the serving pod)",
    field_path=".name",
    reason="FieldValueForbidden",
)


KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # a Secret or ConfigMap data key, as Kubernetes checks it


class SecretKeySelector(SpecModel):
    """One key of a Secret in the ModelDeployment's namespace (core/v1 SecretKeySelector)."""

    name: DnsSubdomain = Field(description="Name of the Secret.")
    key: str = Field(
        min_length=1, max_length=253, pattern=KEY_PATTERN, description="Key in the Secret."
    )
    optional: bool | None = Field(
        None,
        description="true: a missing Secret or key leaves the variable unset. Absent or false: "
        "the pod does not start until it exists (the revision then fails as RevisionFailed).",
    )


class ConfigMapKeySelector(SpecModel):
    """One key of a ConfigMap in the ModelDeployment's namespace (core/v1 ConfigMapKeySelector)."""

    name: DnsSubdomain = Field(description="Name of the ConfigMap.")
    key: str = Field(
        min_length=1, max_length=253, pattern=KEY_PATTERN, description="Key in the ConfigMap."
    )
    optional: bool | None = Field(
        None,
        description="true: a missing ConfigMap or key leaves the variable unset. Absent or "
        "false: the pod does not start until it exists.",
    )


RULE_ONE_KEY_SOURCE = Rule(
    "has(self.secretKeyRef) != has(self.configMapKeyRef)",
    "set exactly one of secretKeyRef and configMapKeyRef",
    field_path=".secretKeyRef",
    reason="FieldValueInvalid",
)


class EnvVarSource(SpecModel):
    """Where a variable's value comes from: a Secret key or a ConfigMap key, exactly one. The
    kubelet reads it when a pod starts; the operator never reads it, so the value appears in
    no status, event, log or annotation. A changed reference is a new revision (a rollout); a
    changed value is not: pods started afterwards (restarts, scale-ups) get it."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_ONE_KEY_SOURCE))

    secret_key_ref: SecretKeySelector | None = Field(
        None, description="A key of a Secret, e.g. S3 keys: {name: s3-creds, key: secret-key}."
    )
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        None, description="A key of a ConfigMap."
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise RULE_ONE_KEY_SOURCE.fail()
        return self


RULE_ENV_RESERVED = Rule(
    "!(self.name in [" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "])",
    "is set by the operator (model, identity, port and cache of the serving pod)",
    field_path=".name",
    reason="FieldValueForbidden",
)
RULE_ENV_ONE_VALUE = Rule(
    "!(has(self.value) && has(self.valueFrom))",
    "set at most one of value and valueFrom",
    field_path=".valueFrom",
    reason="FieldValueForbidden",
)


class EnvVar(SpecModel):
    """An environment variable of the serving container: a plain value, or valueFrom a Secret
    or ConfigMap key (at most one; neither is the empty string, as in Kubernetes). Credentials
    belong in valueFrom.secretKeyRef, never in value: value is stored in the spec, in Git and in
    the revision's annotation."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_ENV_RESERVED, RULE_ENV_ONE_VALUE))

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=C_IDENTIFIER_PATTERN,
        description="Variable name (a C identifier). The operator's own variables ("
        + ", ".join(RESERVED_ENV)
        + ") are refused; other CANARIUM_* server settings, e.g. CANARIUM_BATCH_MAX_SIZE, "
        "may be set here.",
    )
    value: str | None = Field(
        None,
        max_length=32768,
        description="Plain value (not for secrets: use valueFrom.secretKeyRef).",
    )
    value_from: EnvVarSource | None = Field(
        None, description="Take the value from a Secret or ConfigMap key."
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ENV:
            raise RULE_ENV_RESERVED.fail()
        return value

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise RULE_ENV_ONE_VALUE.fail()
        return self


class SecretEnvSource(SpecModel):
    """A whole Secret as variables (core/v1 SecretEnvSource)."""

    name: DnsSubdomain = Field(description="Name of the Secret.")
    optional: bool | None = Field(
        None, description="true: a missing Secret adds nothing instead of stopping the pod."
    )


class ConfigMapEnvSource(SpecModel):
    """A whole ConfigMap as variables (core/v1 ConfigMapEnvSource)."""

    name: DnsSubdomain = Field(description="Name of the ConfigMap.")
    optional: bool | None = Field(
        None, description="true: a missing ConfigMap adds nothing instead of stopping the pod."
    )


RULE_ONE_ENV_SOURCE = Rule(
    "has(self.secretRef) != has(self.configMapRef)",
    "set exactly one of secretRef and configMapRef",
    field_path=".secretRef",
    reason="FieldValueInvalid",
)


class EnvFromSource(SpecModel):
    """Every key of a Secret or ConfigMap as a variable (exactly one of them), e.g. a Secret
    holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. The operator's own variables
    (CANARIUM_MODEL_URI, ...) always win over keys of the same name."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_ONE_ENV_SOURCE))

    prefix: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=C_IDENTIFIER_PATTERN,
        description="Put in front of every key to make the variable name (a C identifier).",
    )
    secret_ref: SecretEnvSource | None = Field(None, description="The Secret to read.")
    config_map_ref: ConfigMapEnvSource | None = Field(None, description="The ConfigMap to read.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise RULE_ONE_ENV_SOURCE.fail()
        return self


class Toleration(SpecModel):
    """A Kubernetes pod toleration (the fields of core/v1 Toleration)."""

    key: str | None = Field(
        None,
        max_length=316,
        description="Taint key the toleration applies to; empty with operator Exists matches all.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (default Equal, as in Kubernetes)."
    )
    value: str | None = Field(
        None, max_length=63, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; absent matches all effects."
    )
    toleration_seconds: int | None = Field(
        None,
        description="For NoExecute: how long the pod stays bound after the taint appears.",
        json_schema_extra=INT64,
    )


class ServingSpec(SpecModel):
    """How each revision is served: the usual pod knobs."""

    image: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        pattern=r"^\S+$",
        description="Model server image. Absent: the operator's default serving image.",
    )
    replicas: int = Field(
        1,
        ge=0,
        le=1000,
        description="Serving pods of the stable revision (the starting size with autoscaling).",
    )
    resources: ResourceRequirements | None = Field(
        None, description="CPU and memory requests and limits of the serving container."
    )
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Scale each revision on CPU with a HorizontalPodAutoscaler."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Extra environment variables of the serving container (unique names).",
        json_schema_extra=list_map("name"),
    )
    env_from: list[EnvFromSource] | None = Field(
        None,
        max_length=MAX_ENV_FROM,
        description="Secrets and ConfigMaps whose every key becomes a variable of the serving "
        "container. Keys that are not C identifiers are skipped by the kubelet; env wins over "
        "envFrom for the same name.",
    )
    service_account_name: DnsSubdomain | None = Field(
        None,
        description="ServiceAccount the serving pods run as (in the ModelDeployment's "
        "namespace): the workload identity that model stores trust. AWS IRSA: a ServiceAccount "
        "annotated eks.amazonaws.com/role-arn (the EKS pod identity webhook injects "
        "AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE and its own projected token). GKE Workload "
        "Identity: one bound to a Google service account (credentials from the metadata "
        "server). Azure Workload Identity's webhook also needs the pod label "
        "azure.workload.identity/use, which serving pods do not carry yet: use a Secret "
        "(AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN) there. Absent: the namespace's "
        "default ServiceAccount. Anyone who may create ModelDeployments in a namespace may run "
        "pods as its ServiceAccounts and read its Secrets through env, as with Deployments.",
    )
    automount_service_account_token: bool | None = Field(
        None,
        description="Mount the ServiceAccount's Kubernetes API token into the serving pods. "
        "Absent or false (the default): no API token, since the model server never calls the "
        "API server. The identity webhooks above project their own, audience-bound tokens and "
        "do not need it; set true only for a credential provider that reads the API token "
        "itself.",
    )
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels the serving pods must be scheduled on.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=64,
        description="Tolerations of the serving pods.",
    )

    @field_validator("env")
    @classmethod
    def _unique_env(cls, value: list[EnvVar]) -> list[EnvVar]:
        ensure_unique(value, "name", "env")
        return value


# ---------------------------------------------------------------------------------------------
# spec.rollout
# ---------------------------------------------------------------------------------------------


class PolicyRef(SpecModel):
    """A reference to a RolloutPolicy in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the RolloutPolicy.")


RULE_ONE_POLICY = Rule(
    "!(has(self.policyRef) && has(self.policy))",
    "set at most one of policyRef and policy",
    field_path=".policy",
    reason="FieldValueForbidden",
)


class RolloutSpec(SpecModel):
    """How a new revision replaces the current one: policyRef or an inline policy, at most one.
    Neither: the new revision replaces the old one as soon as it is Ready (no canary)."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_ONE_POLICY))

    policy_ref: PolicyRef | None = Field(
        None, description="Use the RolloutPolicy of this name, in the same namespace."
    )
    policy: RolloutPolicySpec | None = Field(
        None, description="An inline policy, with the same fields as a RolloutPolicy's spec."
    )

    @model_validator(mode="after")
    def _one_policy(self) -> RolloutSpec:
        if self.policy_ref is not None and self.policy is not None:
            raise RULE_ONE_POLICY.fail()
        return self


# ---------------------------------------------------------------------------------------------
# spec.traffic
# ---------------------------------------------------------------------------------------------

HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME_PATTERN, min_length=1, max_length=253)]


class ParentRef(SpecModel):
    """A Gateway the HTTPRoute attaches to."""

    name: DnsSubdomain = Field(description="Name of the Gateway.")
    namespace: DnsLabel | None = Field(
        None, description="Namespace of the Gateway. Absent: the ModelDeployment's namespace."
    )
    section_name: DnsSubdomain | None = Field(
        None, description="Listener of the Gateway to attach to. Absent: all listeners."
    )


class HeaderMatch(SpecModel):
    """Requests carrying this header with exactly this value always go to the canary (A/B
    routing, e.g. for testers); other requests follow the weights."""

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=HTTP_HEADER_NAME_PATTERN,
        description="HTTP header name, e.g. X-Canary.",
    )
    value: str = Field(min_length=1, max_length=4096, description="Exact header value.")


class GatewayAPISpec(SpecModel):
    """Traffic through a Gateway API HTTPRoute with weighted backends: exact weights, header
    routing and mirroring. Needs the Gateway API CRDs and a Gateway."""

    parent_refs: list[ParentRef] = Field(
        min_length=1,
        max_length=16,
        description="Gateways the HTTPRoute attaches to.",
    )
    hostnames: list[Hostname] = Field(
        default_factory=list,
        max_length=16,
        description="Hostnames the HTTPRoute matches. Absent: those of the Gateway listeners.",
        json_schema_extra=LIST_SET,
    )
    header_match: HeaderMatch | None = Field(
        None, description="Route requests with this header to the canary, whatever the weights."
    )
    mirror_percent: int | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Copy this percentage of the stable revision's requests to the canary (shadow "
            "traffic: responses are dropped, metrics are kept)."
        ),
    )

    @field_validator("hostnames")
    @classmethod
    def _unique_hostnames(cls, value: list[Hostname]) -> list[Hostname]:
        ensure_unique(value, "", "hostnames")
        return value


RULE_GATEWAY_REQUIRED = Rule(
    "!has(self.router) || self.router != 'gatewayAPI' || has(self.gatewayAPI)",
    "gatewayAPI is required when router is gatewayAPI",
    field_path=".gatewayAPI",
    reason="FieldValueRequired",
)
RULE_GATEWAY_FORBIDDEN = Rule(
    "(has(self.router) && self.router == 'gatewayAPI') || !has(self.gatewayAPI)",
    "gatewayAPI takes effect only with router: gatewayAPI",
    field_path=".gatewayAPI",
    reason="FieldValueForbidden",
)


class TrafficSpec(SpecModel):
    """How requests are split between the stable and the canary revision."""

    model_config = ConfigDict(
        json_schema_extra=validations(RULE_GATEWAY_REQUIRED, RULE_GATEWAY_FORBIDDEN)
    )

    router: Literal["replicas", "gatewayAPI"] = Field(
        "replicas",
        description=(
            "replicas: one Service over both revisions, the weight approximated by pod counts "
            "(works on any cluster; status reports the effective weight). gatewayAPI: an "
            "HTTPRoute with exact weights."
        ),
    )
    gateway_api: GatewayAPISpec | None = Field(
        None, alias="gatewayAPI", description="HTTPRoute settings; required by router gatewayAPI."
    )

    @model_validator(mode="after")
    def _gateway(self) -> TrafficSpec:
        if self.router == "gatewayAPI" and self.gateway_api is None:
            raise RULE_GATEWAY_REQUIRED.fail()
        if self.router != "gatewayAPI" and self.gateway_api is not None:
            raise RULE_GATEWAY_FORBIDDEN.fail()
        return self


# ---------------------------------------------------------------------------------------------
# ModelDeployment
# ---------------------------------------------------------------------------------------------


RULE_MONITORING_CHECKS = Rule(
    "has(self.dataDrift) || has(self.predictionDrift)",
    "monitoring needs dataDrift, predictionDrift or both",
)


class MonitoringSpec(SpecModel):
    """Watch the stable revision while no rollout runs: at every interval, its live inputs
    (dataDrift) and predictions (predictionDrift) in that window are compared with the
    model's reference statistics (what `canarium model build` put in the model). A window with
    too few observations is inconclusive, never drift; a PSI counts as drift only when it is
    shown above maxPSI at alpha for the window's sample size. `windows` such windows in a row
    set the Drifted condition, an event and the canarium_model_drifted metric."""

    model_config = ConfigDict(json_schema_extra=validations(RULE_MONITORING_CHECKS))

    interval: Duration = Field("5m", description="Length of a window, e.g. 5m. Default 5m.")
    data_drift: DriftCheck | None = Field(
        None, description="Live inputs vs the reference histogram of each feature."
    )
    prediction_drift: DriftCheck | None = Field(
        None,
        description="Predictions vs the reference distribution of each output (classes, or "
        "the histogram of a regressor's values).",
    )
    windows: int = Field(
        2,
        ge=1,
        le=100,
        description="Windows in a row shown drifted before Drifted is True (sustained drift); "
        "one window without drift sets it back. Default 2.",
    )
    alpha: float = Field(
        0.01,
        gt=0.0,
        le=0.2,
        description="Chance, per window, that a model that has not drifted is called drifted "
        "(shared by the features and outputs tested). Default 0.01.",
    )
    provider: MetricsProvider = Field(
        default_factory=default_provider,
        description="Where measurements come from. Default: podMetrics.",
    )

    @model_validator(mode="after")
    def _some_check(self) -> MonitoringSpec:
        if self.data_drift is None and self.prediction_drift is None:
            raise RULE_MONITORING_CHECKS.fail()
        return self

    @property
    def interval_seconds(self) -> float:
        """`interval` in seconds."""
        return parse_duration(self.interval)


class ModelDeploymentSpec(SpecModel):
    """Desired state of a ModelDeployment. The operator never writes it."""

    model: ModelSpec = Field(description="The model artifact and its version.")
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="How each revision is served."
    )
    rollout: RolloutSpec | None = Field(
        None,
        description=(
            "How a new version is rolled out. Absent: the new revision replaces the old one "
            "once Ready."
        ),
    )
    traffic: TrafficSpec = Field(
        default_factory=TrafficSpec,
        description="How traffic is split between stable and canary.",
    )
    monitoring: MonitoringSpec | None = Field(
        None,
        description="Watch the stable revision for drift while no rollout runs. Absent: "
        "only rollouts are analysed.",
    )


class ModelDeployment(ApiObject):
    """A model served behind a stable endpoint, with canary rollouts of new versions.

    `ModelDeployment.model_validate(obj)` parses a whole object as the API server returns it:
    metadata is read leniently, unknown top-level keys are ignored, status may be absent, and
    spec defaults are applied as the API server applies them.
    """

    KIND: ClassVar[str] = "ModelDeployment"
    PLURAL: ClassVar[str] = "modeldeployments"

    api_version: str = Field(API_VERSION, description="canarium.dev/v1alpha1")
    kind: Literal["ModelDeployment"] = Field("ModelDeployment", description="ModelDeployment")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus = Field(
        default_factory=ModelDeploymentStatus, description="Observed state."
    )
