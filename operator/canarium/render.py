"""Rendering: the children a ModelDeployment asks for, as plain manifests. Pure: no I/O.

One revision = one Deployment `<name>-<hash>`, the hash taken over everything that shapes the
pods (model and serving spec, not the replica count). Services: `<name>` (the entry: every ready
pod of every revision, so the replica ratio is the traffic split), `<name>-stable` and
`<name>-canary` (one revision each; the canary Service points at stable when there is no canary,
so it is never empty). Each Service has two ports: `http` (V2 REST and /metrics, first: traffic
routers route it) and `grpc` (V2 gRPC, inference.GRPCInferenceService, on every pod too).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

from canarium_serving import contract

from canarium.api import API_VERSION, ModelDeployment, ModelDeploymentSpec
from canarium.settings import Settings

MANAGER = "canarium"  # field manager of every server-side apply, and the managed-by label
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "canarium.dev/deployment"  # the ModelDeployment's name
LABEL_REVISION = "canarium.dev/revision"  # the revision hash (pod template label)
LABEL_ROLE = "canarium.dev/role"  # on Deployments only: changes without restarting pods
ANNOTATION_MODEL_VERSION = "canarium.dev/model-version"
ANNOTATION_CREATED_AS = "canarium.dev/created-as"  # the role a revision was created for
# The model and serving spec a revision was made from: the stable revision keeps serving its
# own model while the user's spec already names the next one.
ANNOTATION_REVISION_SPEC = "canarium.dev/revision-spec"

SERVICE_PORT = 80  # the Services' `http` port (V2 REST): the one traffic routers route
SERVICE_GRPC_PORT = 8081  # the Services' `grpc` port (V2 gRPC), as KServe's
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"  # gRPC is HTTP/2 with prior knowledge, cleartext
MODEL_CACHE_VOLUME = "model-cache"
RUN_AS = 65532  # the serving image's non-root user
HASH_LENGTH = 10
PRESTOP_SLEEP_SECONDS = 5


def revision_material(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """Everything that shapes a revision's pods: model and serving spec, not the pod count."""
    serving = spec.serving.to_dict()
    serving.pop("replicas", None)
    serving.pop("autoscaling", None)
    return {"model": spec.model.to_dict(), "serving": serving}


def revision_hash(spec: ModelDeploymentSpec) -> str:
    """A short, stable hash of `revision_material`."""
    material = json.dumps(revision_material(spec), sort_keys=True).encode()
    return hashlib.sha256(material).hexdigest()[:HASH_LENGTH]


def spec_of_revision(deployment: dict[str, Any]) -> ModelDeploymentSpec | None:
    """The spec a revision's Deployment was rendered from, if it carries a readable one."""
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    raw = annotations.get(ANNOTATION_REVISION_SPEC)
    if not raw:
        return None
    try:
        return ModelDeploymentSpec.model_validate(json.loads(raw))
    except ValueError:
        return None


def revision_name(name: str, rev_hash: str) -> str:
    return f"{name}-{rev_hash}"


def hash_of_revision(name: str, revision: str) -> str:
    """The hash part of a revision name made by `revision_name`."""
    return revision.removeprefix(f"{name}-")


def service_names(name: str) -> tuple[str, str, str]:
    """(entry, stable, canary) Service names."""
    return name, f"{name}-stable", f"{name}-canary"


def endpoint(mdep: ModelDeployment) -> str:
    """The in-cluster URL of the V2 REST model endpoint, through the entry Service."""
    meta = mdep.metadata
    return f"http://{meta.name}.{meta.namespace}.svc:{SERVICE_PORT}/v2/models/{meta.name}"


def grpc_endpoint(mdep: ModelDeployment) -> str:
    """The in-cluster gRPC target of the V2 gRPC endpoint, through the entry Service: host:port,
    no scheme or path (what grpcurl, tritonclient.grpc and KServe's InferenceGRPCClient take;
    the model is named in each request)."""
    meta = mdep.metadata
    return f"{meta.name}.{meta.namespace}.svc:{SERVICE_GRPC_PORT}"


def owner_reference(mdep: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "name": mdep.metadata.name,
        "uid": mdep.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(
    mdep: ModelDeployment, name: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The metadata of every object made for a ModelDeployment: owned by it, labelled as ours."""
    return {
        "name": name,
        "namespace": mdep.metadata.namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGER,
            LABEL_DEPLOYMENT: mdep.metadata.name,
            **(labels or {}),
        },
        "ownerReferences": [owner_reference(mdep)],
    }


def _model_volume(uri: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The volume and mount a pvc:// or configmap:// model needs, as the server expects them
    (contract.PVC_MOUNT_ROOT/<claim>, contract.CONFIGMAP_MOUNT_ROOT/<name>)."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "pvc":
        volume = {
            "name": "model-pvc",
            "persistentVolumeClaim": {"claimName": parsed.netloc, "readOnly": True},
        }
        mount_path = f"{contract.PVC_MOUNT_ROOT}/{parsed.netloc}"
    elif parsed.scheme == "configmap":
        volume = {"name": "model-configmap", "configMap": {"name": parsed.netloc}}
        mount_path = f"{contract.CONFIGMAP_MOUNT_ROOT}/{parsed.netloc}"
    else:
        return None
    return volume, {"name": volume["name"], "mountPath": mount_path, "readOnly": True}


def render_revision(
    mdep: ModelDeployment,
    rev_hash: str,
    *,
    spec: ModelDeploymentSpec,
    replicas: int | None,
    role: str,
    created_as: str,
    settings: Settings,
) -> dict[str, Any]:
    """The Deployment of one revision.

    `spec` is the spec the revision was made from (the stable revision keeps serving its own
    model while the user's spec already names a newer one). `replicas` None leaves the count to
    the HorizontalPodAutoscaler. `created_as` is the role baked into the pods' env; `role` the
    current one, on the Deployment's labels only, so promotion restarts nothing.
    """
    name = mdep.metadata.name
    revision = revision_name(name, rev_hash)
    pod_labels = {LABEL_MANAGED_BY: MANAGER, LABEL_DEPLOYMENT: name, LABEL_REVISION: rev_hash}
    serving = spec.serving
    model = spec.model
    env: list[dict[str, Any]] = [
        {"name": contract.ENV_MODEL_URI, "value": model.uri},
        {"name": contract.ENV_MODEL_NAME, "value": name},
        {"name": contract.ENV_MODEL_VERSION, "value": model.version},
        {"name": contract.ENV_DEPLOYMENT, "value": name},
        {"name": contract.ENV_NAMESPACE, "value": mdep.metadata.namespace},
        {"name": contract.ENV_REVISION, "value": revision},
        {"name": contract.ENV_ROLE, "value": created_as},
        {"name": contract.ENV_PORT, "value": str(contract.HTTP_PORT)},
        {"name": contract.ENV_GRPC_PORT, "value": str(contract.GRPC_PORT)},
        {"name": contract.ENV_MODEL_CACHE_DIR, "value": contract.DEFAULT_MODEL_CACHE_DIR},
    ]
    if model.sha256:
        env.append({"name": contract.ENV_MODEL_SHA256, "value": model.sha256})
    # User variables after the operator's: Kubernetes lets env win over envFrom, so a Secret
    # key named like a contract variable cannot override it. Secret values are never read
    # here: the pod carries references only, the kubelet resolves them.
    env.extend(e.to_dict() for e in serving.env)

    volumes: list[dict[str, Any]] = [{"name": MODEL_CACHE_VOLUME, "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": MODEL_CACHE_VOLUME, "mountPath": "/tmp"}]
    model_volume = _model_volume(model.uri)
    if model_volume:
        volumes.append(model_volume[0])
        mounts.append(model_volume[1])

    container: dict[str, Any] = {
        "name": "server",
        "image": serving.image or settings.serving_image,
        "env": env,
        "ports": [
            {
                "name": contract.HTTP_PORT_NAME,
                "containerPort": contract.HTTP_PORT,
                "protocol": "TCP",
            },
            {
                "name": contract.GRPC_PORT_NAME,
                "containerPort": contract.GRPC_PORT,
                "protocol": "TCP",
            },
        ],
        # Loading a large model takes a while: the startup probe gives it up to 5 minutes,
        # then liveness takes over. Readiness is false until the model is loaded.
        "startupProbe": _probe(contract.LIVE_PATH, period=5, failures=60),
        "livenessProbe": _probe(contract.LIVE_PATH, period=10, failures=3),
        "readinessProbe": _probe(contract.READY_PATH, period=5, failures=2),
        # Endpoints drop a terminating pod a moment after it gets SIGTERM; a short sleep
        # first lets in-flight traffic drain instead of failing (no 503s while shifting).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if serving.resources:
        container["resources"] = serving.resources.to_dict()
    if serving.env_from:
        container["envFrom"] = [source.to_dict() for source in serving.env_from]

    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 30,
        # The model server never calls the API server: no token unless asked for.
        "automountServiceAccountToken": bool(serving.automount_service_account_token),
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if serving.service_account_name:
        pod_spec["serviceAccountName"] = serving.service_account_name
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    if serving.tolerations:
        pod_spec["tolerations"] = [t.to_dict() for t in serving.tolerations]

    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": {LABEL_DEPLOYMENT: name, LABEL_REVISION: rev_hash}},
        "progressDeadlineSeconds": settings.progress_deadline_seconds,
        "revisionHistoryLimit": 2,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(contract.HTTP_PORT),
                    "prometheus.io/path": contract.METRICS_PATH,
                },
            },
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    metadata = object_metadata(mdep, revision, {LABEL_REVISION: rev_hash, LABEL_ROLE: role})
    metadata["annotations"] = {
        ANNOTATION_MODEL_VERSION: model.version,
        ANNOTATION_CREATED_AS: created_as,
        ANNOTATION_REVISION_SPEC: json.dumps(revision_material(spec), sort_keys=True),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": deployment_spec,
    }


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": contract.HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _service(
    mdep: ModelDeployment, name: str, selector: dict[str, str], role: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(mdep, name, {LABEL_ROLE: role}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            # http first (what takes a Service's first port gets REST); routers use SERVICE_PORT.
            "ports": [
                {
                    "name": contract.HTTP_PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": contract.HTTP_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": contract.GRPC_PORT_NAME,
                    "port": SERVICE_GRPC_PORT,
                    "targetPort": contract.GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": GRPC_APP_PROTOCOL,
                },
            ],
        },
    }


def render_services(
    mdep: ModelDeployment, stable_hash: str, canary_hash: str | None
) -> list[dict[str, Any]]:
    """The entry, stable and canary Services."""
    name = mdep.metadata.name
    entry, stable, canary = service_names(name)
    return [
        _service(mdep, entry, {LABEL_DEPLOYMENT: name}, "entry"),
        _service(mdep, stable, {LABEL_DEPLOYMENT: name, LABEL_REVISION: stable_hash}, "stable"),
        _service(
            mdep,
            canary,
            {LABEL_DEPLOYMENT: name, LABEL_REVISION: canary_hash or stable_hash},
            "canary",
        ),
    ]


def render_hpa(mdep: ModelDeployment, rev_hash: str) -> dict[str, Any] | None:
    """The HorizontalPodAutoscaler of one revision, when autoscaling is set."""
    autoscaling = mdep.spec.serving.autoscaling
    if autoscaling is None:
        return None
    revision = revision_name(mdep.metadata.name, rev_hash)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(mdep, revision, {LABEL_REVISION: rev_hash}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": revision},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }
