"""The pydantic API models: parsing, defaults, validation rules, duration strings."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium.api import (
    API_VERSION,
    Condition,
    HistoryEntry,
    Measurement,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RevisionStatus,
    RolloutPolicy,
    RolloutPolicySpec,
    format_duration,
    parse_duration,
)
from canarium.api.rolloutpolicy import (
    MetricsProvider,
    PodMetricsProvider,
    exactly_one_of,
)
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
INVALID = REPO / "tests" / "e2e" / "invalid"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def minimal_spec() -> dict[str, Any]:
    return {"model": {"uri": "configmap://iris-model/model.onnx", "version": "1.0.0"}}


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("0s", 0.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2m0.5s", 120.5),
        ("1h1m1s1ms", 3661.001),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "30", "s", "-5s", "5 m", "1d", "1.s", ".5s", "5us", "30S", " 30s", "30s ", "1h-1m"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 0.25, 1, 59, 60, 90, 3600, 5400, 3661.001, 86400])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_examples() -> None:
    assert format_duration(90) == "1m30s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(0) == "0s"
    with pytest.raises(ValueError, match="negative"):
        format_duration(-1)


# --- examples -----------------------------------------------------------------------------


def test_iris_example_parses() -> None:
    md = ModelDeployment.model_validate(load(EXAMPLES / "iris.yaml"))
    assert md.metadata.name == "iris"
    assert md.spec.model.version == "1.0.0"
    assert md.spec.model.uri.startswith("configmap://")
    assert md.spec.rollout is not None
    assert md.spec.rollout.policy_ref is not None
    assert md.spec.rollout.policy_ref.name == "default-canary"
    assert md.spec.rollout.policy is None
    assert md.spec.traffic.router == "replicas"
    assert md.spec.serving.resources is not None
    assert md.spec.serving.resources.requests == {"cpu": "100m", "memory": "128Mi"}


def test_rolloutpolicy_example_parses() -> None:
    rp = RolloutPolicy.model_validate(load(EXAMPLES / "rolloutpolicy.yaml"))
    assert rp.metadata.name == "default-canary"
    steps = rp.spec.steps
    assert [s.set_weight for s in steps] == [10, None, 50, None, 100]
    assert [s.pause.seconds if s.pause else None for s in steps] == [None, 30, None, 30, None]
    analysis = rp.spec.analysis
    assert analysis is not None
    assert analysis.provider.pod_metrics is not None
    assert analysis.provider.prometheus is None
    assert analysis.checks.error_rate is not None
    assert analysis.checks.latency_p99 is not None
    assert analysis.checks.prediction_drift is not None
    assert analysis.checks.prediction_drift.max_psi == 0.2
    assert analysis.interval_seconds == 10
    assert analysis.initial_delay_seconds == 5
    assert rp.spec.bake_seconds == 60


def test_policy_ref_matches_example_policy() -> None:
    md = ModelDeployment.model_validate(load(EXAMPLES / "iris.yaml"))
    rp = RolloutPolicy.model_validate(load(EXAMPLES / "rolloutpolicy.yaml"))
    assert md.spec.rollout is not None
    assert md.spec.rollout.policy_ref is not None
    assert md.spec.rollout.policy_ref.name == rp.metadata.name


# --- defaults -----------------------------------------------------------------------------


def test_spec_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate(minimal_spec())
    assert spec.model.format == "onnx"
    assert spec.model.sha256 is None
    assert spec.serving.replicas == 1
    assert spec.serving.image is None
    assert spec.serving.env == []
    assert spec.rollout is None
    assert spec.traffic.router == "replicas"
    assert spec.traffic.gateway_api is None
    assert spec.to_dict() == {
        "model": {
            "uri": "configmap://iris-model/model.onnx",
            "version": "1.0.0",
            "format": "onnx",
        },
        "serving": {"replicas": 1, "env": [], "nodeSelector": {}, "tolerations": []},
        "traffic": {"router": "replicas"},
    }


def test_analysis_defaults() -> None:
    spec = RolloutPolicySpec.model_validate(
        {
            "steps": [{"setWeight": 20}],
            "analysis": {"checks": {"predictionDrift": {}, "errorRate": {"max": 0.01}}},
        }
    )
    analysis = spec.analysis
    assert analysis is not None
    assert analysis.interval == "30s"
    assert analysis.interval_seconds == 30
    assert analysis.initial_delay_seconds == 0
    assert analysis.failure_limit == 1
    assert analysis.inconclusive_limit is None
    assert analysis.min_samples == 50
    assert analysis.provider.pod_metrics is not None
    assert analysis.checks.prediction_drift is not None
    assert analysis.checks.prediction_drift.max_psi == 0.2
    assert spec.bake is None
    assert spec.bake_seconds == 0


def test_autoscaling_defaults_and_alias() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {**minimal_spec(), "serving": {"autoscaling": {"maxReplicas": 5}}}
    )
    autoscaling = spec.serving.autoscaling
    assert autoscaling is not None
    assert autoscaling.min_replicas == 1
    assert autoscaling.target_cpu_utilization_percentage == 80
    assert spec.to_dict()["serving"]["autoscaling"] == {
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 80,
    }


# --- parsing whole objects from the API server -------------------------------------------


def api_object() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "0b7e2c2e-3d4f-4a51-9c8f-7f3f8b0e5a11",
            "generation": 3,
            "resourceVersion": "12345",
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "labels": {"team": "ds"},
            "annotations": {"kopf.zalando.org/last-handled-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
        },
        "spec": {
            **minimal_spec(),
            "serving": {"replicas": 2},
            "traffic": {"router": "replicas"},
        },
        "status": {
            "observedGeneration": 2,
            "phase": "Progressing",
            "stable": {"name": "iris-abc", "weight": 90, "effectiveWeight": 75.0},
            "kopf": {"progress": {}},
            "someFutureField": True,
        },
    }


def test_parse_api_object() -> None:
    md = ModelDeployment.model_validate(api_object())
    assert md.metadata.name == "iris"
    assert md.metadata.namespace == "ml"
    assert md.metadata.generation == 3
    assert md.metadata.labels == {"team": "ds"}
    assert md.metadata.creation_timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert md.spec.serving.replicas == 2
    assert md.status.phase == "Progressing"
    assert md.status.observed_generation == 2
    assert md.status.stable is not None
    assert md.status.stable.effective_weight == 75.0


@pytest.mark.parametrize("status", [None, "absent"])
def test_parse_api_object_without_status(status: str | None) -> None:
    obj = api_object()
    if status == "absent":
        del obj["status"]
    else:
        obj["status"] = None
    md = ModelDeployment.model_validate(obj)
    assert md.status == ModelDeploymentStatus()
    assert md.status.phase is None


def test_spec_parse_ignores_metadata_and_status() -> None:
    obj = api_object()
    obj["metadata"]["generation"] = "not-a-number-but-irrelevant-for-spec"
    spec = ModelDeploymentSpec.model_validate(obj["spec"])
    assert spec.serving.replicas == 2


def test_spec_is_immutable() -> None:
    spec = ModelDeploymentSpec.model_validate(minimal_spec())
    with pytest.raises(ValidationError):
        spec.model.version = "2"  # type: ignore[misc]


def test_snake_case_construction() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://bucket-a/models/iris.onnx", "version": "2"},
            "rollout": {"policy_ref": {"name": "p"}},
        }
    )
    assert spec.rollout is not None
    assert spec.rollout.to_dict() == {"policyRef": {"name": "p"}}


def test_policy_object() -> None:
    rp = RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "p", "namespace": "ml"},
            "spec": {"steps": [{"pause": {}}]},
        }
    )
    assert rp.spec.steps[0].pause is not None
    assert rp.spec.steps[0].pause.seconds is None
    assert rp.status.conditions == []


# --- status -------------------------------------------------------------------------------


def test_status_round_trip() -> None:
    now = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    status = ModelDeploymentStatus(
        observed_generation=4,
        phase="Progressing",
        message="step 1 of 5: 10% to canary",
        ready="4/4",
        stable=RevisionStatus(
            name="iris-1a2b", model_version="1.0.0", replicas=3, ready_replicas=3, weight=90
        ),
        canary=RevisionStatus(
            name="iris-3c4d",
            model_version="1.1.0",
            replicas=1,
            ready_replicas=1,
            weight=10,
            effective_weight=25.0,
        ),
        current_step=0,
        step_started_at=now,
        history=[
            HistoryEntry(revision="iris-0000", model_version="0.9.0", outcome="Promoted", time=now)
        ],
        conditions=[
            Condition(
                type="Ready",
                status="True",
                observed_generation=4,
                last_transition_time=now,
                reason="StableServing",
                message="",
            )
        ],
    )
    data = status.to_dict()
    assert data["stepStartedAt"] == "2025-05-06T07:08:09Z"
    assert data["canary"]["effectiveWeight"] == 25.0
    assert data["conditions"][0]["lastTransitionTime"] == "2025-05-06T07:08:09Z"
    assert data["conditions"][0]["observedGeneration"] == 4
    assert "pauseReason" not in data
    assert ModelDeploymentStatus.model_validate(data) == status
    assert status.condition("Ready") is not None
    assert status.condition("Degraded") is None


def test_status_bounds() -> None:
    now = datetime.now(UTC)
    entry = HistoryEntry(revision="r", outcome="RolledBack", time=now)
    with pytest.raises(ValidationError):
        ModelDeploymentStatus(history=[entry] * 11)
    with pytest.raises(ValidationError):
        Measurement(check="errorRate", verdict="Maybe", time=now)
    cond = Condition(type="Ready", status="True", last_transition_time=now, reason="Ok", message="")
    with pytest.raises(ValidationError, match="Duplicate value"):
        ModelDeploymentStatus(conditions=[cond, cond])
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", last_transition_time=now, reason="", message="")


def test_status_assignment_is_validated() -> None:
    status = ModelDeploymentStatus()
    status.phase = "Healthy"
    with pytest.raises(ValidationError):
        status.phase = "Happy"  # type: ignore[assignment]


# --- validation rules ---------------------------------------------------------------------


def spec_with(**parts: Any) -> dict[str, Any]:
    spec = minimal_spec()
    spec.update(copy.deepcopy(parts))
    return spec


@pytest.mark.parametrize(
    "uri",
    [
        "http://models.example.com/iris.onnx",
        "https://models.example.com:8443/a/b/iris.onnx?x=1",
        "s3://my-bucket/models/iris/1.onnx",
        "pvc://models/iris/1.onnx",
        "configmap://iris-model/model.onnx",
        "file:///models/iris.onnx",
    ],
)
def test_model_uri_accepted(uri: str) -> None:
    ModelDeploymentSpec.model_validate(spec_with(model={"uri": uri, "version": "1"}))


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://host/model.onnx",
        "models/iris.onnx",
        "file://relative/model.onnx",
        "s3://bucket",
        "s3://Bad_Bucket/key",
        "pvc://claim",
        "configmap://name/a/b",
        "https://host/with space",
        "http://",
    ],
)
def test_model_uri_rejected(uri: str) -> None:
    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(spec_with(model={"uri": uri, "version": "1"}))


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"replicas": -1}, "greater than or equal to 0"),
        ({"replicas": 1001}, "less than or equal to 1000"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must not be"),
        ({"autoscaling": {"maxReplicas": 2, "targetCPUUtilizationPercentage": 0}}, "greater"),
        ({"env": [{"name": "1BAD"}]}, "pattern"),
        ({"env": [{"name": "CANARIUM_MODEL_URI", "value": "x"}]}, "is set by the operator"),
        ({"env": [{"name": "A"}, {"name": "A"}]}, "Duplicate value"),
        ({"resources": {"requests": {"cpu": "1 core"}}}, "pattern"),
        ({"tolerations": [{"operator": "Maybe"}]}, "Exists"),
    ],
)
def test_serving_rules(serving: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelDeploymentSpec.model_validate(spec_with(serving=serving))


def test_traffic_rules() -> None:
    gw = {"parentRefs": [{"name": "public", "namespace": "gateways"}]}
    ok = ModelDeploymentSpec.model_validate(
        spec_with(traffic={"router": "gatewayAPI", "gatewayAPI": gw})
    )
    assert ok.traffic.gateway_api is not None
    assert ok.traffic.gateway_api.parent_refs[0].namespace == "gateways"
    with pytest.raises(ValidationError, match="gatewayAPI is required"):
        ModelDeploymentSpec.model_validate(spec_with(traffic={"router": "gatewayAPI"}))
    with pytest.raises(ValidationError, match="takes effect only with router"):
        ModelDeploymentSpec.model_validate(spec_with(traffic={"gatewayAPI": gw}))
    with pytest.raises(ValidationError, match="Duplicate value"):
        ModelDeploymentSpec.model_validate(
            spec_with(
                traffic={
                    "router": "gatewayAPI",
                    "gatewayAPI": {**gw, "hostnames": ["a.example.com", "a.example.com"]},
                }
            )
        )


def test_rollout_rules() -> None:
    with pytest.raises(ValidationError, match="at most one of policyRef and policy"):
        ModelDeploymentSpec.model_validate(
            spec_with(rollout={"policyRef": {"name": "p"}, "policy": {"steps": [{"pause": {}}]}})
        )
    spec = ModelDeploymentSpec.model_validate(spec_with(rollout={}))
    assert spec.rollout is not None
    assert spec.rollout.policy is None
    assert spec.rollout.policy_ref is None


@pytest.mark.parametrize(
    ("steps", "ok"),
    [
        ([{"setWeight": 10}, {"pause": {}}, {"setWeight": 10}, {"setWeight": 100}], True),
        ([{"pause": {"duration": "1m"}}], True),
        ([{"setWeight": 0}, {"setWeight": 100}], True),
        ([{"setWeight": 50}, {"pause": {}}, {"setWeight": 40}], False),
        ([{"setWeight": 10, "pause": {}}], False),
        ([{}], False),
        ([], False),
        ([{"setWeight": 5}] * 21, False),
        ([{"setWeight": 101}], False),
        ([{"pause": {"duration": "soon"}}], False),
    ],
)
def test_steps(steps: list[dict[str, Any]], ok: bool) -> None:
    if ok:
        RolloutPolicySpec.model_validate({"steps": steps})
    else:
        with pytest.raises(ValidationError):
            RolloutPolicySpec.model_validate({"steps": steps})


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"checks": {}}, "at least one check"),
        ({"checks": {"errorRate": {"max": 1.5}}}, "less than or equal to 1"),
        ({"checks": {"latencyP99": {"maxMs": 0}}}, "greater than 0"),
        ({"failureLimit": 0, "checks": {"errorRate": {"max": 0.1}}}, "greater than or equal"),
        ({"interval": "often", "checks": {"errorRate": {"max": 0.1}}}, "pattern"),
        (
            {"provider": {}, "checks": {"errorRate": {"max": 0.1}}},
            "exactly one of podMetrics or prometheus",
        ),
        (
            {"provider": {"prometheus": {"address": "prom:9090"}}, "checks": {"dataDrift": {}}},
            "pattern",
        ),
        ({"checks": {"custom": [{"name": "x", "query": "up"}]}}, "needs min, max or both"),
        (
            {"checks": {"custom": [{"name": "x", "query": "up", "min": 2, "max": 1}]}},
            "must not be greater than its max",
        ),
        (
            {
                "checks": {
                    "custom": [
                        {"name": "x", "query": "up", "min": 1},
                        {"name": "x", "query": "up", "max": 1},
                    ]
                }
            },
            "Duplicate value",
        ),
    ],
)
def test_analysis_rules(analysis: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutPolicySpec.model_validate({"steps": [{"setWeight": 10}], "analysis": analysis})


def test_prometheus_provider() -> None:
    spec = RolloutPolicySpec.model_validate(
        {
            "steps": [{"setWeight": 10}],
            "analysis": {
                "provider": {
                    "prometheus": {
                        "address": "http://prometheus.monitoring:9090",
                        "headers": [{"name": "X-Scope-OrgID", "value": "ml"}],
                    }
                },
                "checks": {
                    "custom": [
                        {
                            "name": "p95",
                            "query": 'histogram_quantile(0.95, rate(x{role="{{role}}"}[1m]))',
                            "max": 0.3,
                        }
                    ]
                },
            },
        }
    )
    assert spec.analysis is not None
    assert spec.analysis.provider.prometheus is not None
    assert spec.analysis.provider.pod_metrics is None
    assert spec.analysis.checks.custom[0].max == 0.3


@pytest.mark.parametrize(
    "provider",
    [{}, {"podMetrics": {}, "prometheus": {"address": "http://prometheus.monitoring:9090"}}],
    ids=["none", "two"],
)
def test_exactly_one_provider(provider: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="set exactly one of podMetrics or prometheus"):
        MetricsProvider.model_validate(provider)


def test_provider_type_and_settings() -> None:
    pod = MetricsProvider.model_validate({"podMetrics": {}})
    assert (pod.type, pod.settings) == ("podMetrics", PodMetricsProvider())
    prom = MetricsProvider.model_validate({"prometheus": {"address": "http://p:9090"}})
    assert (prom.type, prom.settings) == ("prometheus", prom.prometheus)


def test_the_provider_rule_names_every_provider() -> None:
    """The CEL rule comes from the fields: a provider added to the model is in it."""
    (rule,) = MetricsProvider.model_json_schema()["x-kubernetes-validations"]
    assert rule == {
        "rule": "[has(self.podMetrics), has(self.prometheus)].exists_one(x, x)",
        "message": "set exactly one of podMetrics or prometheus",
    }

    class MoreProviders(MetricsProvider):
        another: PodMetricsProvider | None = None

    (rule,) = MoreProviders.model_json_schema()["x-kubernetes-validations"]
    assert rule["rule"] == (
        "[has(self.podMetrics), has(self.prometheus), has(self.another)].exists_one(x, x)"
    )
    with pytest.raises(ValidationError, match="set exactly one of podMetrics, prometheus or"):
        MoreProviders.model_validate({"podMetrics": {}, "another": {}})


def test_exactly_one_of_grows_with_its_fields() -> None:
    rule = exactly_one_of("a", "b", "c")
    assert rule.rule == "[has(self.a), has(self.b), has(self.c)].exists_one(x, x)"
    assert rule.message == "set exactly one of a, b or c"


def test_unknown_fields_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelDeploymentSpec.model_validate(spec_with(replicas=3))


# --- the invalid manifests of the e2e suite are invalid for the models too ----------------


INVALID_FILES = sorted(INVALID.glob("*.yaml"))


def test_enough_invalid_manifests() -> None:
    assert len(INVALID_FILES) >= 12
    for path in INVALID_FILES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# expect: "), path.name
        assert len(first) > len("# expect: ") + 5, path.name


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_manifest_rejected_by_models(path: Path) -> None:
    obj = load(path)
    model = {"ModelDeployment": ModelDeployment, "RolloutPolicy": RolloutPolicy}[obj["kind"]]
    with pytest.raises(ValidationError):
        model.model_validate(obj)


# --- credentials: env valueFrom, envFrom, serviceAccountName ------------------------------

SECRET_KEY = {"name": "s3-creds", "key": "secret-key"}


def test_env_value_from_secret_and_configmap_and_env_from() -> None:
    spec = ModelDeploymentSpec.model_validate(
        spec_with(
            serving={
                "env": [
                    {"name": "AWS_REGION", "value": "eu-west-3"},
                    {
                        "name": "AWS_SECRET_ACCESS_KEY",
                        "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}},
                    },
                    {
                        "name": "AWS_ENDPOINT_URL",
                        "valueFrom": {
                            "configMapKeyRef": {"name": "s3", "key": "endpoint", "optional": True}
                        },
                    },
                ],
                "envFrom": [
                    {"secretRef": {"name": "azure-creds"}},
                    {"prefix": "S3_", "configMapRef": {"name": "s3", "optional": False}},
                ],
                "serviceAccountName": "model-reader",
                "automountServiceAccountToken": True,
            }
        )
    )
    serving = spec.to_dict()["serving"]
    assert serving["env"][1] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}},
    }
    assert serving["env"][2]["valueFrom"]["configMapKeyRef"]["optional"] is True
    assert serving["envFrom"] == [
        {"secretRef": {"name": "azure-creds"}},
        {"prefix": "S3_", "configMapRef": {"name": "s3", "optional": False}},
    ]
    assert serving["serviceAccountName"] == "model-reader"
    assert serving["automountServiceAccountToken"] is True


def test_new_credential_fields_are_absent_by_default() -> None:
    # Absent, not empty: revision hashes of existing specs must not change.
    serving = ModelDeploymentSpec.model_validate(minimal_spec()).serving
    assert serving.env_from is None
    assert serving.service_account_name is None
    assert serving.automount_service_account_token is None
    env = ModelDeploymentSpec.model_validate(spec_with(serving={"env": [{"name": "A"}]}))
    assert env.serving.env[0].to_dict() == {"name": "A"}


@pytest.mark.parametrize(
    ("serving", "location", "message"),
    [
        (
            {"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": SECRET_KEY}}]},
            "serving.env.0",
            "set at most one of value and valueFrom",
        ),
        (
            {
                "env": [
                    {
                        "name": "A",
                        "valueFrom": {
                            "secretKeyRef": SECRET_KEY,
                            "configMapKeyRef": {"name": "c", "key": "k"},
                        },
                    }
                ]
            },
            "serving.env.0.valueFrom",
            "set exactly one of secretKeyRef and configMapKeyRef",
        ),
        (
            {"env": [{"name": "A", "valueFrom": {}}]},
            "serving.env.0.valueFrom",
            "set exactly one of secretKeyRef and configMapKeyRef",
        ),
        (
            {
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}
                ]
            },
            "serving.env.0.valueFrom.secretKeyRef.name",
            "pattern",
        ),
        (
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a/b"}}}]},
            "serving.env.0.valueFrom.secretKeyRef.key",
            "pattern",
        ),
        (
            {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
            "serving.env.0.valueFrom.fieldRef",
            "Extra inputs are not permitted",
        ),
        (
            {"env": [{"name": "CANARIUM_MODEL_URI", "valueFrom": {"secretKeyRef": SECRET_KEY}}]},
            "serving.env.0.name",
            "is set by the operator",
        ),
        (
            {"envFrom": [{"prefix": "S3_"}]},
            "serving.envFrom.0",
            "set exactly one of secretRef and configMapRef",
        ),
        (
            {"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]},
            "serving.envFrom.0",
            "set exactly one of secretRef and configMapRef",
        ),
        (
            {"envFrom": [{"prefix": "1X", "secretRef": {"name": "a"}}]},
            "serving.envFrom.0.prefix",
            "pattern",
        ),
        ({"serviceAccountName": "Not A Name"}, "serving.serviceAccountName", "pattern"),
    ],
)
def test_credential_rules_name_the_field(
    serving: dict[str, Any], location: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        ModelDeploymentSpec.model_validate(spec_with(serving=serving))
    locations = [".".join(str(part) for part in e["loc"]) for e in info.value.errors()]
    assert any(loc.startswith(location) for loc in locations), locations


@pytest.mark.parametrize(
    "uri",
    ["gs://my-bucket/models/iris.onnx", "az://models/iris/1.onnx", "azure://models/iris.onnx"],
)
def test_object_store_uris_accepted(uri: str) -> None:
    ModelDeploymentSpec.model_validate(spec_with(model={"uri": uri, "version": "1"}))


@pytest.mark.parametrize("uri", ["gs://bucket", "az://Container/x.onnx", "abfs://c/x.onnx"])
def test_object_store_uris_rejected(uri: str) -> None:
    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(spec_with(model={"uri": uri, "version": "1"}))
