"""The kinds of objects the operator reads and writes, with the plurals their API paths use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments")
SERVICE = Resource("v1", "Service", "services")
HPA = Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
POD = Resource("v1", "Pod", "pods")
EVENT = Resource("v1", "Event", "events")
CONFIG_MAP = Resource("v1", "ConfigMap", "configmaps")  # analysis recordings
MODEL_DEPLOYMENT = Resource("canarium.dev/v1alpha1", "ModelDeployment", "modeldeployments")
ROLLOUT_POLICY = Resource("canarium.dev/v1alpha1", "RolloutPolicy", "rolloutpolicies")
MODEL_RETRAINING = Resource("canarium.dev/v1alpha1", "ModelRetraining", "modelretrainings")
JOB = Resource("batch/v1", "Job", "jobs")  # retraining runs

# The children every ModelDeployment has, whatever its router: revisions, autoscalers, Services.
CORE_CHILDREN = (DEPLOYMENT, SERVICE, HPA)
