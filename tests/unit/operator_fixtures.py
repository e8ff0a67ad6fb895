"""Builders of ModelDeployments and observed Deployments for the operator's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from canarium.api import ModelDeployment
from canarium.reconcile import ReconcileInput, RevisionObservation, observe_deployment
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
    obj: ModelDeployment, *, ready: int | None = None, deadline: bool = False, role: str = "stable"
) -> RevisionObservation:
    """The observed Deployment of `obj`'s revision, with `ready` ready pods (default: all)."""
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
    return observe_deployment(manifest)


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
