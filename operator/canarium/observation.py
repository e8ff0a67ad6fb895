"""What the operator observes of a revision: its Deployment, and why its pods do not start.
Plain data, read by the rollout state machine; `canarium.pods` reads pods into it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from canarium.api import ModelDeploymentSpec, Reason

# Why a serving pod does not start, as the kubelet reports it (a container's waiting reason).
# Each of these needs a person (or a fix elsewhere) and repeats until then. Not included:
# ErrImagePull (a single failed pull; it turns into ImagePullBackOff when it lasts) and a
# container that crashed once (kubelet restarts it at once; CrashLoopBackOff means it crashed
# again). Pods that cannot be scheduled are left to the progress deadline (a cluster
# autoscaler may still add a node).
FailureReason = Literal[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
]
# How canarium-serve starts its termination message (serving_image/canarium_serving/app.py);
# only dropped from what is shown, never read to decide anything.
SERVER_LOAD_FAILURE_PREFIX = "model not loaded: "


@dataclass(frozen=True)
class PodFailure:
    """What one failing serving pod says. Messages are redacted and truncated already: they
    go to status and events as they are."""

    pod: str
    container: str
    reason: FailureReason
    restart_count: int
    # The container's last termination (a crash loop): exit code, the runtime's reason
    # (Error, OOMKilled...) and the termination message the model server wrote.
    exit_code: int | None = None
    terminated_reason: str | None = None
    termination_message: str | None = None
    waiting_message: str | None = None  # the kubelet's detail (image pull, config errors)

    @property
    def cause(self) -> Reason:
        """ModelLoadFailed when the server wrote why the model did not load (it writes its
        termination log for that only); RevisionFailed for any other reason."""
        if self.reason == "CrashLoopBackOff" and self.termination_message:
            return Reason.MODEL_LOAD_FAILED
        return Reason.REVISION_FAILED

    def describe(self) -> str:
        """One line for status and events."""
        if self.reason == "CrashLoopBackOff":
            facts = [f"exit code {self.exit_code}"] if self.exit_code is not None else []
            if self.terminated_reason and self.terminated_reason != "Error":
                facts.append(self.terminated_reason)  # OOMKilled, ContainerCannotRun...
            restarts = self.restart_count
            facts.append(f"{restarts} restart{'' if restarts == 1 else 's'}")
            if self.termination_message:
                why = self.termination_message.removeprefix(SERVER_LOAD_FAILURE_PREFIX)
                return f"model failed to load in pod {self.pod} ({', '.join(facts)}): {why}"
            return (
                f"pod {self.pod} keeps crashing ({', '.join(facts)}); "
                f"see `kubectl logs --previous {self.pod}`"
            )
        what = {
            "ImagePullBackOff": "cannot pull its image",
            "InvalidImageName": "has an invalid image name",
            "ErrImageNeverPull": "cannot pull its image (imagePullPolicy Never)",
        }.get(self.reason, "cannot start its container")
        detail = f": {self.waiting_message}" if self.waiting_message else ""
        return f"pod {self.pod} {what} ({self.reason}){detail}"


@dataclass(frozen=True)
class RevisionObservation:
    """What the operator sees of one revision's Deployment and of its pods."""

    name: str
    rev_hash: str
    spec: ModelDeploymentSpec | None  # the spec it was rendered from
    created_as: str
    replicas: int  # spec.replicas
    ready_replicas: int
    updated_replicas: int
    up_to_date: bool  # the Deployment controller has seen the latest generation
    deadline_exceeded: bool  # progressDeadlineSeconds passed without progress
    # The first (by name) of the revision's pods that fail to start, and how many fail.
    failure: PodFailure | None = None
    failing_pods: int = 0

    @property
    def ready(self) -> bool:
        return (
            self.up_to_date
            and self.ready_replicas >= self.replicas > 0
            and (self.updated_replicas >= self.replicas)
        )

    @property
    def failed(self) -> bool:
        """Its pods fail to start and none is ready: the revision cannot serve. One failing
        pod beside ready ones (a node's trouble) is left to the progress deadline."""
        return self.failure is not None and self.ready_replicas == 0

    def failure_message(self) -> str:
        if self.failure is None:
            return ""
        others = self.failing_pods - 1
        more = f" (and {others} more failing pod{'s' if others > 1 else ''})" if others else ""
        return f"revision {self.name}: {self.failure.describe()}{more}"
