from __future__ import annotations

import json

from canarium.render import (
    ANNOTATION_REVISION_SPEC,
    LABEL_DEPLOYMENT,
    LABEL_REVISION,
    render_hpa,
    render_revision,
    render_services,
    revision_hash,
    spec_of_revision,
)
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
        {"name": "http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"}
    ]


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
