"""Builders of ModelDeployments and observed Deployments for the operator's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from canarium.api import ModelDeployment
from canarium.observation import RevisionObservation
from canarium.reconcile import ReconcileInput, observe_deployment
from canarium.render import render_revision, revision_hash, revision_name
from canarium.settings import Settings

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(serving_image="example.org/serving:test")


def mdep(
    version: str = "1.0.0",
    *,
    replicas: int = 3,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    **spec_extra: Any,
) -> ModelDeployment:
    spec: dict[str, Any] = {
        "model": {"uri": f"https://models.example.org/iris/{version}.onnx", "version": version},
        "serving": {"replicas": replicas},
        **spec_extra,
    }
    return ModelDeployment.model_validate(
        {
            "apiVersion": "canarium.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": "iris",
                "namespace": "ml",
                "uid": "uid-1",
                "generation": generation,
                "resourceVersion": "10",
            },
            "spec": spec,
            "status": status or {},
        }
    )


def observed(
    obj: ModelDeployment,
    *,
    ready: int | None = None,
    deadline: bool = False,
    role: str = "stable",
    pods: list[dict[str, Any]] | None = None,
) -> RevisionObservation:
    """The observed Deployment of `obj`'s revision, with `ready` ready pods (default: all) and
    the given pods (see `pod`)."""
    manifest = render_revision(
        obj,
        revision_hash(obj.spec),
        spec=obj.spec,
        replicas=obj.spec.serving.replicas,
        role=role,
        created_as=role,
        settings=SETTINGS,
    )
    replicas = obj.spec.serving.replicas
    ready = replicas if ready is None else ready
    manifest["metadata"]["generation"] = 1
    manifest["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": replicas,
        "conditions": (
            [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
            if deadline
            else [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
        ),
    }
    return observe_deployment(manifest, pods or [])


def name_of(obj: ModelDeployment) -> str:
    return revision_name(obj.metadata.name, revision_hash(obj.spec))


def inp(obj: ModelDeployment, *revisions: RevisionObservation, **kw: Any) -> ReconcileInput:
    return ReconcileInput(
        mdep=obj,
        revisions={r.name: r for r in revisions},
        now=kw.pop("now", NOW),
        settings=SETTINGS,
        **kw,
    )


# --- Pods as the API server returns them ---------------------------------------------------
SHA_MISMATCH = (
    "model not loaded: sha256 mismatch for 'configmap://iris-model/model.onnx': expected "
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, got "
    "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
)


def _ts(seconds: int) -> str:
    """NOW plus `seconds`, as the API server writes times."""
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    revision: str,
    suffix: str = "x2x9q",
    *,
    ready: bool = False,
    restarts: int = 0,
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    ready_changed: int = 1,
    deleting: bool = False,
) -> dict[str, Any]:
    """A serving pod of `revision` (`<name>-<hash>`), as the API server returns it: its
    container's `state`, `lastState.terminated` (`last`) and restart count; the pod's Ready
    condition last changed at NOW + `ready_changed` seconds."""
    name, _, rev_hash = revision.rpartition("-")
    status = "True" if ready else "False"
    container: dict[str, Any] = {
        "name": "server",
        "image": "ghcr.io/canarium-dev/canarium-serving:0.1.0",
        "imageID": "ghcr.io/canarium-dev/canarium-serving@sha256:" + "ab" * 32,
        "containerID": "containerd://" + "cd" * 32,
        "ready": ready,
        "started": ready,
        "restartCount": restarts,
        "state": state or {"running": {"startedAt": _ts(0)}},
        "lastState": {"terminated": last} if last else {},
    }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{revision}-7c9d8b6f4-{suffix}",
            "generateName": f"{revision}-7c9d8b6f4-",
            "namespace": "ml",
            "uid": f"uid-{suffix}",
            "resourceVersion": "4242",
            "creationTimestamp": _ts(0),
            "labels": {
                "app.kubernetes.io/managed-by": "canarium",
                "canarium.dev/deployment": name,
                "canarium.dev/revision": rev_hash,
                "pod-template-hash": "7c9d8b6f4",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{revision}-7c9d8b6f4",
                    "uid": "uid-rs",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "server", "image": container["image"]}]},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True",
                 "lastTransitionTime": _ts(0)},
                {"type": "Initialized", "status": "True", "lastTransitionTime": _ts(0)},
                {"type": "Ready", "status": status, "lastTransitionTime": _ts(ready_changed),
                 **({} if ready else {"reason": "ContainersNotReady",
                                      "message": "containers with unready status: [server]"})},
                {"type": "ContainersReady", "status": status,
                 "lastTransitionTime": _ts(ready_changed)},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _ts(0)},
            ],
            "hostIP": "10.0.0.5",
            "podIP": "10.244.1.7",
            "startTime": _ts(0),
            "containerStatuses": [container],
            "qosClass": "BestEffort",
        },
    }  # fmt: skip
    if deleting:
        body["metadata"]["deletionTimestamp"] = _ts(30)
        body["metadata"]["deletionGracePeriodSeconds"] = 30
    return body


def terminated(
    message: str | None = SHA_MISMATCH, exit_code: int = 1, reason: str = "Error"
) -> dict[str, Any]:
    """A container's termination as the kubelet reports it (`message`: its termination log)."""
    out: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": _ts(2),
        "finishedAt": _ts(4),
        "containerID": "containerd://" + "ef" * 32,
    }
    if message is not None:
        out["message"] = message
    return out


def crashloop_pod(
    revision: str, suffix: str = "x2x9q", *, restarts: int = 3, **last: Any
) -> dict[str, Any]:
    """A pod whose server exits at start (by default: its model fails its sha256)."""
    return pod(
        revision,
        suffix,
        restarts=restarts,
        state={
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 40s restarting failed container=server "
                f"pod={revision}-7c9d8b6f4-{suffix}_ml(uid-{suffix})",
            }
        },
        last=terminated(**last),
    )


def waiting_pod(revision: str, reason: str, message: str, suffix: str = "x2x9q") -> dict[str, Any]:
    """A pod whose container waits, e.g. ImagePullBackOff or CreateContainerConfigError."""
    return pod(revision, suffix, state={"waiting": {"reason": reason, "message": message}})
