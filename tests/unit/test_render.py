from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from canarium.api import ModelDeployment
from canarium.render import (
    ANNOTATION_REVISION_SPEC,
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    endpoint,
    grpc_endpoint,
    hash_of_revision,
    render_hpa,
    render_revision,
    render_services,
    revision_hash,
    revision_name,
    spec_of_revision,
)
from canarium.routers.gatewayapi import render_httproute
from canarium.settings import Settings
from canarium_serving import contract

from tests.unit.operator_fixtures import SETTINGS, mdep


def _deployment(**kw: object) -> dict:  # type: ignore[type-arg]
    obj = mdep(**kw)  # type: ignore[arg-type]
    return render_revision(
        obj,
        revision_hash(obj.spec),
        spec=obj.spec,
        replicas=obj.spec.serving.replicas,
        role="canary",
        created_as="canary",
        settings=SETTINGS,
    )


def test_revision_hash_ignores_replicas_but_not_the_model() -> None:
    base = revision_hash(mdep("1.0.0", replicas=2).spec)
    assert revision_hash(mdep("1.0.0", replicas=5).spec) == base
    assert revision_hash(mdep("1.0.1", replicas=2).spec) != base
    with_env = mdep(
        "1.0.0", replicas=2, serving={"replicas": 2, "env": [{"name": "A", "value": "1"}]}
    )
    assert revision_hash(with_env.spec) != base


def test_pod_template_carries_the_serving_contract() -> None:
    dep = _deployment(version="2.0.0")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[contract.ENV_MODEL_URI] == "https://models.example.org/iris/2.0.0.onnx"
    assert env[contract.ENV_MODEL_VERSION] == "2.0.0"
    assert env[contract.ENV_DEPLOYMENT] == "iris"
    assert env[contract.ENV_NAMESPACE] == "ml"
    assert env[contract.ENV_REVISION] == dep["metadata"]["name"]
    assert env[contract.ENV_ROLE] == "canary"
    assert container["image"] == "example.org/serving:test"
    assert container["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert container["livenessProbe"]["httpGet"]["path"] == contract.LIVE_PATH
    assert container["ports"] == [
        {"name": "http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": contract.GRPC_PORT, "protocol": "TCP"},
    ]
    # The server listens where the ports say: REST on `http`, V2 gRPC on `grpc`.
    assert env[contract.ENV_PORT] == str(contract.HTTP_PORT) == "8080"
    assert env[contract.ENV_GRPC_PORT] == str(contract.GRPC_PORT) == "8081"


def test_pods_meet_pod_security_restricted() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False


def test_owner_reference_and_labels() -> None:
    dep = _deployment()
    (owner,) = dep["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector[LABEL_DEPLOYMENT] == "iris"
    assert dep["spec"]["template"]["metadata"]["labels"][LABEL_REVISION] == selector[LABEL_REVISION]


def test_revision_spec_round_trips_through_the_annotation() -> None:
    obj = mdep("3.1.4")
    dep = _deployment(version="3.1.4")
    assert (
        json.loads(dep["metadata"]["annotations"][ANNOTATION_REVISION_SPEC])["model"]["version"]
        == "3.1.4"
    )
    spec = spec_of_revision(dep)
    assert spec is not None
    assert revision_hash(spec) == revision_hash(obj.spec)


def test_configmap_and_pvc_models_are_mounted_where_the_server_reads_them() -> None:
    cm = _deployment(model={"uri": "configmap://iris-model/model.onnx", "version": "1"})
    pod = cm["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-configmap"]
    assert mount["mountPath"] == f"{contract.CONFIGMAP_MOUNT_ROOT}/iris-model"
    assert {"name": "model-configmap", "configMap": {"name": "iris-model"}} in pod["volumes"]
    pvc = _deployment(model={"uri": "pvc://models/iris/model.onnx", "version": "1"})
    pod = pvc["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model-pvc"]
    assert mount["mountPath"] == f"{contract.PVC_MOUNT_ROOT}/models"
    assert mount["readOnly"] is True


def test_services_select_entry_stable_and_canary() -> None:
    obj = mdep()
    entry, stable, canary = render_services(obj, "aaa", "bbb")
    assert entry["spec"]["selector"] == {LABEL_DEPLOYMENT: "iris"}
    assert stable["spec"]["selector"] == {LABEL_DEPLOYMENT: "iris", LABEL_REVISION: "aaa"}
    assert canary["spec"]["selector"] == {LABEL_DEPLOYMENT: "iris", LABEL_REVISION: "bbb"}
    # Without a canary, the canary Service points at stable: never an empty Service.
    _, _, canary = render_services(obj, "aaa", None)
    assert canary["spec"]["selector"][LABEL_REVISION] == "aaa"
    assert [s["metadata"]["name"] for s in render_services(obj, "a", None)] == [
        "iris",
        "iris-stable",
        "iris-canary",
    ]


def test_every_service_port_targets_a_named_port_of_the_pods() -> None:
    container = _deployment()["spec"]["template"]["spec"]["containers"][0]
    pod_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for service in render_services(mdep(), "aaa", "bbb"):
        ports = service["spec"]["ports"]
        # Kubernetes requires every port of a multi-port Service to be named, uniquely.
        assert [p["name"] for p in ports] == ["http", "grpc"]
        by_name = {p["name"]: p for p in ports}
        assert {p["targetPort"] for p in ports} <= pod_ports.keys()
        assert by_name["grpc"]["targetPort"] == contract.GRPC_PORT_NAME
        assert pod_ports[by_name["grpc"]["targetPort"]] == contract.GRPC_PORT
        assert pod_ports[by_name["http"]["targetPort"]] == contract.HTTP_PORT


def test_the_status_endpoints_name_the_entry_service_and_its_ports() -> None:
    obj = mdep()
    entry, _, _ = render_services(obj, "aaa", None)
    ports = {p["name"]: p["port"] for p in entry["spec"]["ports"]}
    assert endpoint(obj) == f"http://iris.ml.svc:{ports['http']}/v2/models/iris"
    # A gRPC target is host:port, no scheme and no path (grpcurl, tritonclient.grpc, KServe's
    # InferenceGRPCClient): the model is named in each request.
    assert grpc_endpoint(obj) == f"iris.ml.svc:{ports['grpc']}" == "iris.ml.svc:8081"
    other = ModelDeployment.model_validate(
        {
            **obj.model_dump(by_alias=True, mode="json"),
            "metadata": {"name": "digits", "namespace": "team-b", "uid": "u"},
        }
    )
    assert grpc_endpoint(other) == "digits.team-b.svc:8081"


def test_routers_route_the_http_port_of_the_services() -> None:
    # Services have two ports: an HTTPRoute's backendRefs must name the http one.
    obj = _gateway(parentRefs=[{"name": "edge"}], headerMatch={"name": "X", "value": "1"},
                   mirrorPercent=10)  # fmt: skip
    route = render_httproute(obj, 30, True)
    assert route is not None
    services = {s["metadata"]["name"]: s for s in render_services(obj, "aaa", "bbb")}
    refs = [ref for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]
    refs += [
        f["requestMirror"]["backendRef"]
        for rule in route["spec"]["rules"]
        for f in rule.get("filters", [])
    ]
    assert len(refs) == 4
    for ref in refs:
        (port,) = [p for p in services[ref["name"]]["spec"]["ports"] if p["port"] == ref["port"]]
        assert port["name"] == "http"


def test_hpa_only_with_autoscaling_and_then_no_replicas_written() -> None:
    obj = mdep()
    assert render_hpa(obj, "aaa") is None
    scaled = mdep(serving={"autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    hpa = render_hpa(scaled, "aaa")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-aaa"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    dep = render_revision(
        scaled,
        "aaa",
        spec=scaled.spec,
        replicas=None,
        role="stable",
        created_as="stable",
        settings=SETTINGS,
    )
    assert "replicas" not in dep["spec"]


# --- Whole manifests, written out: every field is read by Kubernetes or by the server ------
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
LABELS = {"app.kubernetes.io/managed-by": "canarium", "canarium.dev/deployment": "iris"}
OWNER = {
    "apiVersion": "canarium.dev/v1alpha1",
    "kind": "ModelDeployment",
    "name": "iris",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def _rich() -> ModelDeployment:
    return mdep(
        "2.0.0",
        model={"uri": "configmap://iris-model/model.onnx", "version": "2.0.0", "sha256": SHA},
        serving={
            "replicas": 4,
            "image": "registry.example.org/serving:9",
            "env": [{"name": "CANARIUM_BATCH_MAX_SIZE", "value": "8"}],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}},
            "nodeSelector": {"pool": "cpu"},
            "tolerations": [{"key": "pool", "operator": "Exists", "effect": "NoSchedule"}],
        },
    )


def test_a_revision_deployment_in_full() -> None:
    obj = _rich()
    settings = Settings(serving_image="example.org/serving:default", progress_deadline_seconds=300)
    dep = render_revision(
        obj,
        "abc1234567",
        spec=obj.spec,
        replicas=4,
        role="stable",
        created_as="canary",
        settings=settings,
    )
    annotations = dep["metadata"].pop("annotations")
    assert annotations.pop("canarium.dev/revision-spec") == (
        '{"model": {"format": "onnx", "sha256": "'
        + SHA
        + '", "uri": "configmap://iris-model/model.onnx", '
        '"version": "2.0.0"}, "serving": {"env": [{"name": "CANARIUM_BATCH_MAX_SIZE", '
        '"value": "8"}], "image": "registry.example.org/serving:9", "nodeSelector": '
        '{"pool": "cpu"}, "resources": {"limits": {"memory": "512Mi"}, "requests": '
        '{"cpu": "100m"}}, "tolerations": [{"effect": "NoSchedule", "key": "pool", '
        '"operator": "Exists"}]}}'
    )
    assert annotations == {
        "canarium.dev/model-version": "2.0.0",
        "canarium.dev/created-as": "canary",
    }
    pod_labels = {**LABELS, "canarium.dev/revision": "abc1234567"}
    assert dep == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "iris-abc1234567",
            "namespace": "ml",
            # The role label is the current role; the pods keep the one they were created as.
            "labels": {**pod_labels, "canarium.dev/role": "stable"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "canarium.dev/deployment": "iris",
                    "canarium.dev/revision": "abc1234567",
                }
            },
            "progressDeadlineSeconds": 300,
            "revisionHistoryLimit": 2,
            # Never fewer ready pods than asked for while a revision's pods are replaced.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "replicas": 4,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8080",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.example.org/serving:9",
                            "env": [
                                {
                                    "name": "CANARIUM_MODEL_URI",
                                    "value": "configmap://iris-model/model.onnx",
                                },
                                {"name": "CANARIUM_MODEL_NAME", "value": "iris"},
                                {"name": "CANARIUM_MODEL_VERSION", "value": "2.0.0"},
                                {"name": "CANARIUM_DEPLOYMENT", "value": "iris"},
                                {"name": "CANARIUM_NAMESPACE", "value": "ml"},
                                {"name": "CANARIUM_REVISION", "value": "iris-abc1234567"},
                                {"name": "CANARIUM_ROLE", "value": "canary"},
                                {"name": "CANARIUM_PORT", "value": "8080"},
                                {"name": "CANARIUM_GRPC_PORT", "value": "8081"},
                                {
                                    "name": "CANARIUM_MODEL_CACHE_DIR",
                                    "value": "/tmp/canarium-models",
                                },
                                {"name": "CANARIUM_MODEL_SHA256", "value": SHA},
                                {"name": "CANARIUM_BATCH_MAX_SIZE", "value": "8"},
                            ],
                            "ports": [
                                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
                            ],
                            "startupProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 60,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": "http"},
                                "periodSeconds": 10,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": "http"},
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 2,
                            },
                            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "model-cache", "mountPath": "/tmp"},
                                {
                                    "name": "model-configmap",
                                    "mountPath": "/mnt/canarium/configmap/iris-model",
                                    "readOnly": True,
                                },
                            ],
                            "resources": {
                                "requests": {"cpu": "100m"},
                                "limits": {"memory": "512Mi"},
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "model-cache", "emptyDir": {}},
                        {"name": "model-configmap", "configMap": {"name": "iris-model"}},
                    ],
                    "nodeSelector": {"pool": "cpu"},
                    "tolerations": [{"key": "pool", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }


def test_a_plain_revision_has_only_the_cache_volume_and_the_default_image() -> None:
    obj = mdep("1.0.0")  # an https:// model, no sha256, image, resources or placement
    dep = render_revision(
        obj, "h", spec=obj.spec, replicas=3, role="stable", created_as="stable", settings=SETTINGS
    )
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example.org/serving:test"
    assert pod["volumes"] == [{"name": "model-cache", "emptyDir": {}}]
    assert container["volumeMounts"] == [{"name": "model-cache", "mountPath": "/tmp"}]
    assert [e["name"] for e in container["env"]][-1] == "CANARIUM_MODEL_CACHE_DIR"
    assert "resources" not in container
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


def test_a_pvc_model_mounts_its_claim_read_only() -> None:
    obj = mdep(model={"uri": "pvc://models/iris/model.onnx", "version": "1"})
    dep = render_revision(
        obj, "h", spec=obj.spec, replicas=1, role="stable", created_as="stable", settings=SETTINGS
    )
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"][1] == {
        "name": "model-pvc",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    }
    assert pod["containers"][0]["volumeMounts"][1] == {
        "name": "model-pvc",
        "mountPath": "/mnt/canarium/pvc/models",
        "readOnly": True,
    }


def test_the_three_services_in_full() -> None:
    def service(name: str, role: str, selector: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": "ml",
                "labels": {**LABELS, "canarium.dev/role": role},
                "ownerReferences": [OWNER],
            },
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                # http first; grpc is HTTP/2 with prior knowledge over cleartext (h2c).
                "ports": [
                    {
                        "name": "http",
                        "port": 80,
                        "targetPort": "http",
                        "protocol": "TCP",
                        "appProtocol": "http",
                    },
                    {
                        "name": "grpc",
                        "port": 8081,
                        "targetPort": "grpc",
                        "protocol": "TCP",
                        "appProtocol": "kubernetes.io/h2c",
                    },
                ],
            },
        }

    iris = {"canarium.dev/deployment": "iris"}
    assert render_services(mdep(), "aaa", "bbb") == [
        service("iris", "entry", iris),
        service("iris-stable", "stable", {**iris, "canarium.dev/revision": "aaa"}),
        service("iris-canary", "canary", {**iris, "canarium.dev/revision": "bbb"}),
    ]


def test_an_hpa_in_full() -> None:
    scaled = mdep(
        serving={
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 6,
                "targetCPUUtilizationPercentage": 70,
            }
        }
    )
    assert render_hpa(scaled, "aaa") == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "iris-aaa",
            "namespace": "ml",
            "labels": {**LABELS, "canarium.dev/revision": "aaa"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-aaa"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def _gateway(**gateway: Any) -> ModelDeployment:
    return mdep(traffic={"router": "gatewayAPI", "gatewayAPI": gateway})


def test_no_httproute_with_the_replicas_router() -> None:
    assert render_httproute(mdep(), 0, False) is None
    assert render_httproute(mdep(traffic={"router": "replicas"}), 30, True) is None


def test_an_httproute_in_full_with_header_match_and_mirror() -> None:
    obj = _gateway(
        parentRefs=[
            {"name": "edge", "namespace": "gateways", "sectionName": "https"},
            {"name": "internal"},
        ],
        hostnames=["iris.example.org"],
        headerMatch={"name": "X-Canary", "value": "yes"},
        mirrorPercent=20,
    )
    assert render_httproute(obj, 30, True) == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "labels": LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "parentRefs": [
                {"name": "edge", "namespace": "gateways", "sectionName": "https"},
                {"name": "internal"},
            ],
            "rules": [
                # Testers' requests reach the canary whatever the weights: a rule before the
                # weighted one.
                {
                    "matches": [
                        {"headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}]}
                    ],
                    "backendRefs": [
                        {"kind": "Service", "name": "iris-canary", "port": 80, "weight": 1}
                    ],
                },
                {
                    "backendRefs": [
                        {"kind": "Service", "name": "iris-stable", "port": 80, "weight": 70},
                        {"kind": "Service", "name": "iris-canary", "port": 80, "weight": 30},
                    ],
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {
                                    "kind": "Service",
                                    "name": "iris-canary",
                                    "port": 80,
                                },
                                "percent": 20,
                            },
                        }
                    ],
                },
            ],
            "hostnames": ["iris.example.org"],
        },
    }


def test_without_a_canary_the_route_has_no_header_rule_and_no_mirror() -> None:
    obj = _gateway(
        parentRefs=[{"name": "edge"}],
        headerMatch={"name": "X-Canary", "value": "yes"},
        mirrorPercent=20,
    )
    route = render_httproute(obj, 0, False)
    assert route is not None
    assert route["spec"] == {
        "parentRefs": [{"name": "edge"}],
        "rules": [
            {
                "backendRefs": [
                    {"kind": "Service", "name": "iris-stable", "port": 80, "weight": 100},
                    {"kind": "Service", "name": "iris-canary", "port": 80, "weight": 0},
                ]
            }
        ],
    }


def test_a_zero_mirror_percent_mirrors_nothing() -> None:
    route = render_httproute(_gateway(parentRefs=[{"name": "edge"}], mirrorPercent=0), 10, True)
    assert route is not None
    assert "filters" not in route["spec"]["rules"][0]


def test_revision_names_survive_an_operator_upgrade() -> None:
    # The hash is sha256 over the sorted, compact-separated JSON of the model and of the
    # serving spec without its pod count, cut to 10 hex digits: a different recipe would
    # rename, and so restart, every revision in every cluster.
    material = (
        '{"model": {"format": "onnx", "uri": "https://models.example.org/iris/1.0.0.onnx", '
        '"version": "1.0.0"}, "serving": {"env": [], "nodeSelector": {}, "tolerations": []}}'
    )
    expected = hashlib.sha256(material.encode()).hexdigest()[:10]
    assert revision_hash(mdep("1.0.0", replicas=3).spec) == expected
    scaled = mdep("1.0.0", serving={"replicas": 2, "autoscaling": {"maxReplicas": 9}})
    assert revision_hash(scaled.spec) == expected
    assert revision_name("iris", expected) == f"iris-{expected}"
    assert hash_of_revision("iris", f"iris-{expected}") == expected


def test_hash_of_revision_strips_only_the_deployment_name() -> None:
    assert hash_of_revision("iris", "iris-abc") == "abc"
    assert hash_of_revision("iris", "iris-v2-abc") == "v2-abc"
    assert hash_of_revision("iris", "other-abc") == "other-abc"


@pytest.mark.parametrize(
    "annotations",
    [
        None,
        {},
        {"canarium.dev/revision-spec": ""},
        {"canarium.dev/revision-spec": "{not json"},
        {"canarium.dev/revision-spec": '{"model": {"uri": "x"}}'},  # no version
    ],
)
def test_a_deployment_without_a_readable_spec_has_none(annotations: dict[str, str] | None) -> None:
    assert spec_of_revision({"metadata": {"annotations": annotations}}) is None


def test_a_deployment_without_metadata_has_no_spec() -> None:
    assert spec_of_revision({}) is None


# --- credentials ------------------------------------------------------------------------------

CREDENTIALS = {
    "replicas": 2,
    "env": [
        {"name": "AWS_REGION", "value": "eu-west-3"},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}},
        },
        {
            "name": "AWS_ENDPOINT_URL",
            "valueFrom": {"configMapKeyRef": {"name": "s3", "key": "endpoint", "optional": True}},
        },
    ],
    "envFrom": [{"prefix": "S3_", "secretRef": {"name": "more-creds", "optional": True}}],
    "serviceAccountName": "model-reader",
}


def test_secret_references_reach_the_pod_as_references() -> None:
    dep = _deployment(serving=CREDENTIALS)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    user = container["env"][-3:]
    assert user == [
        {"name": "AWS_REGION", "value": "eu-west-3"},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}},
        },
        {
            "name": "AWS_ENDPOINT_URL",
            "valueFrom": {"configMapKeyRef": {"name": "s3", "key": "endpoint", "optional": True}},
        },
    ]
    # the operator's variables come first and are plain values it owns
    names = [e["name"] for e in container["env"]]
    assert names.index(contract.ENV_MODEL_URI) < names.index("AWS_SECRET_ACCESS_KEY")
    assert container["envFrom"] == [
        {"prefix": "S3_", "secretRef": {"name": "more-creds", "optional": True}}
    ]
    assert pod["serviceAccountName"] == "model-reader"
    # a ServiceAccount for workload identity does not bring the API token with it
    assert pod["automountServiceAccountToken"] is False


def test_the_api_token_is_mounted_only_when_asked() -> None:
    asked = _deployment(serving={"replicas": 1, "automountServiceAccountToken": True})
    assert asked["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    refused = _deployment(serving={"replicas": 1, "automountServiceAccountToken": False})
    assert refused["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    plain = _deployment()
    pod = plain["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert "envFrom" not in pod["containers"][0]


def test_a_changed_secret_reference_is_a_new_revision_the_secret_value_is_not_read() -> None:
    base = revision_hash(mdep(serving=CREDENTIALS).spec)
    other_key = json.loads(json.dumps(CREDENTIALS))
    other_key["env"][1]["valueFrom"]["secretKeyRef"]["key"] = "rotated-key"
    assert revision_hash(mdep(serving=other_key).spec) != base
    other_account = {**CREDENTIALS, "serviceAccountName": "other"}
    assert revision_hash(mdep(serving=other_account).spec) != base
    no_env_from = {k: v for k, v in CREDENTIALS.items() if k != "envFrom"}
    assert revision_hash(mdep(serving=no_env_from).spec) != base
    token = {**CREDENTIALS, "automountServiceAccountToken": True}
    assert revision_hash(mdep(serving=token).spec) != base
    # the revision's recorded spec holds references, never values: there are none to hold
    dep = _deployment(serving=CREDENTIALS)
    recorded = json.loads(dep["metadata"]["annotations"][ANNOTATION_REVISION_SPEC])
    assert recorded["serving"]["env"][1] == CREDENTIALS["env"][1]  # type: ignore[index]
    restored = spec_of_revision(dep)
    assert restored is not None
    assert revision_hash(restored) == base
