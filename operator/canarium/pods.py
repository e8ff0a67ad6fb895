"""What a revision's serving pods say about why they do not start. Pure: pods (dicts as the API
server returns them) in, typed `PodFailure`s out.

The model server writes why the model did not load to its termination log and exits 1
(serving_image/README.md), so a pod whose model cannot be fetched, fails its sha256 or does not
load crash-loops, and the kubelet reports `lastState.terminated.{exitCode,reason,message}` and
`state.waiting.reason = CrashLoopBackOff`. Image and configuration problems show as other
waiting reasons. Only what needs a person counts as a failure (see `FailureReason`):

- CrashLoopBackOff: the container crashed, was restarted at once, and crashed again. One crash
  followed by a restart that runs does not count. Between two crashes of a loop (restarted
  and running, never Ready since) it still counts, so the phase does not flap with every
  restart; once the container is Ready it no longer does.
- ImagePullBackOff, InvalidImageName, ErrImageNeverPull: the image cannot be had. A single
  ErrImagePull is not a failure yet: it becomes ImagePullBackOff when the next pull fails too.
- CreateContainerConfigError, CreateContainerError, RunContainerError: the container cannot be
  created or started (a missing Secret or ConfigMap key, a bad command...).

Every message is redacted (canarium.redact) and truncated here, before it reaches the state
machine: what the pure core sees may go to status and events as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, get_args

from canarium.observation import FailureReason, PodFailure
from canarium.redact import redact, truncate

MAX_MESSAGE = 512  # characters of a termination or waiting message kept (kubelet: 4096 bytes)
_WAITING_FAILURES: frozenset[str] = frozenset(get_args(FailureReason)) - {"CrashLoopBackOff"}


def _message(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return truncate(redact(" ".join(value.split())), MAX_MESSAGE)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _ready_changed(pod: dict[str, Any]) -> datetime | None:
    """When the pod's Ready condition last changed."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return _time(condition.get("lastTransitionTime"))
    return None


def _never_ready_since(pod: dict[str, Any], started_at: Any) -> bool:
    """Whether the pod has not been Ready since its container (re)started at `started_at`:
    its Ready condition last changed before that. Unknown times count as not Ready."""
    started = _time(started_at)
    changed = _ready_changed(pod)
    return started is None or changed is None or changed <= started


def _container_failure(pod: dict[str, Any], status: dict[str, Any]) -> PodFailure | None:
    if status.get("ready"):
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    container = str(status.get("name", ""))
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    restarts = _int(status.get("restartCount"))
    if reason in _WAITING_FAILURES:
        return PodFailure(
            pod=name,
            container=container,
            reason=reason,
            restart_count=restarts,
            waiting_message=_message(waiting.get("message")),
        )
    terminated_now = state.get("terminated")
    running = state.get("running")
    if reason == "CrashLoopBackOff":
        looping = True
    elif terminated_now is not None:
        looping = restarts >= 1  # the second crash (or later): back-off comes next
    elif running is not None:
        # Restarted after a back-off (a loop's restarts count 2 and more) and not Ready since.
        looping = restarts >= 2 and _never_ready_since(pod, running.get("startedAt"))
    else:
        looping = False
    if not looping:
        return None
    last = terminated_now or (status.get("lastState") or {}).get("terminated") or {}
    exit_code = last.get("exitCode")
    return PodFailure(
        pod=name,
        container=container,
        reason="CrashLoopBackOff",
        restart_count=restarts,
        exit_code=_int(exit_code) if exit_code is not None else None,
        terminated_reason=_message(last.get("reason")),
        termination_message=_message(last.get("message")),
        waiting_message=_message(waiting.get("message")),
    )


def pod_failure(pod: dict[str, Any]) -> PodFailure | None:
    """Why this serving pod fails to start, or None (starting, running, Ready, terminating)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return None  # on its way out: its Deployment replaces it
    for container in sorted(status.get("containerStatuses") or [], key=lambda c: c.get("name", "")):
        failure = _container_failure(pod, container)
        if failure is not None:
            return failure
    return None


def revision_failures(pods: Iterable[dict[str, Any]]) -> tuple[PodFailure | None, int]:
    """(the first failing pod by name, how many fail) among one revision's pods."""
    failures = sorted((f for f in map(pod_failure, pods) if f is not None), key=lambda f: f.pod)
    return (failures[0] if failures else None), len(failures)
