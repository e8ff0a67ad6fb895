"""Why a revision's pods do not start: facts taken from pods as the API server returns them,
and what of them may reach status and events (nothing secret)."""

from __future__ import annotations

from typing import Any

import pytest
from canarium.pods import MAX_MESSAGE, pod_failure, revision_failures
from canarium.redact import redact

from tests.unit.operator_fixtures import (
    SHA_MISMATCH,
    crashloop_pod,
    pod,
    terminated,
    waiting_pod,
)

REV = "iris-5d1c0e7f2a"
POD = f"{REV}-7c9d8b6f4-x2x9q"


def test_crash_loop_with_the_servers_termination_message() -> None:
    failure = pod_failure(crashloop_pod(REV, restarts=3))
    assert failure is not None
    assert failure.reason == "CrashLoopBackOff"
    assert failure.cause == "ModelLoadFailed"
    assert failure.pod == POD
    assert failure.container == "server"
    assert failure.restart_count == 3
    assert failure.exit_code == 1
    assert failure.terminated_reason == "Error"
    assert failure.termination_message == SHA_MISMATCH
    assert failure.describe() == (
        f"model failed to load in pod {POD} (exit code 1, 3 restarts): sha256 mismatch for "
        "'configmap://iris-model/model.onnx': expected "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, got "
        "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
    )


def test_crash_loop_without_a_message_is_a_revision_failure() -> None:
    failure = pod_failure(crashloop_pod(REV, message=None, exit_code=137, reason="OOMKilled"))
    assert failure is not None
    assert failure.cause == "RevisionFailed"
    assert failure.termination_message is None
    assert "(exit code 137, OOMKilled, 3 restarts)" in failure.describe()
    assert "kubectl logs --previous" in failure.describe()


@pytest.mark.parametrize(
    ("reason", "message", "describes"),
    [
        (
            "ImagePullBackOff",
            'Back-off pulling image "ghcr.io/acme/serving:nope"',
            "cannot pull its image (ImagePullBackOff)",
        ),
        (
            "CreateContainerConfigError",
            'secret "model-credentials" not found',
            "cannot start its container (CreateContainerConfigError)",
        ),
        (
            "InvalidImageName",
            'Failed to apply default image tag "ghcr.io/Acme:x": invalid reference format',
            "has an invalid image name (InvalidImageName)",
        ),
        (
            "RunContainerError",
            "failed to create containerd task: exec: canarium-serve: not found",
            "cannot start its container (RunContainerError)",
        ),
    ],
)
def test_waiting_reasons_that_need_a_person(reason: str, message: str, describes: str) -> None:
    failure = pod_failure(waiting_pod(REV, reason, message))
    assert failure is not None
    assert failure.reason == reason
    assert failure.cause == "RevisionFailed"
    assert failure.waiting_message == message
    assert failure.describe() == f"pod {POD} {describes}: {message}"


@pytest.mark.parametrize(
    ("what", "body"),
    [
        # A single failed pull may be the registry's hiccup: ImagePullBackOff follows if not.
        ("ErrImagePull", waiting_pod(REV, "ErrImagePull", "rpc error: code = Unknown")),
        ("ContainerCreating", waiting_pod(REV, "ContainerCreating", "")),
        ("starting", pod(REV)),
        ("running and ready", pod(REV, ready=True)),
        # Restarted once (a transient failure) and now Running and Ready.
        ("restarted once, ready", pod(REV, ready=True, restarts=1, last=terminated())),
        # Crashed once, restarted at once, loading again (not Ready since the pod started):
        # not a loop yet.
        ("restarted once, loading", pod(REV, restarts=1, last=terminated(), ready_changed=-10)),
        # A loop that ended: restarted, loaded and Ready within the second it started.
        ("ready after a loop",
         pod(REV, ready=True, restarts=3, last=terminated(), ready_changed=0)),
        # The first crash, before the kubelet restarts it.
        ("first crash", pod(REV, state={"terminated": terminated()})),
        # A loop that ended: the pod became Ready after its last restart, then not Ready
        # (a readiness blip), which is not a failure to start.
        (
            "ready since its last restart",
            pod(REV, restarts=4, last=terminated(), ready_changed=60),
        ),
        # Going away: its Deployment replaces it (after a rollback or a scale-down).
        ("terminating", {**crashloop_pod(REV), "metadata": {
            **crashloop_pod(REV)["metadata"], "deletionTimestamp": "2026-11-23T12:00:30Z"}}),
    ],
)  # fmt: skip
def test_not_failures(what: str, body: dict[str, Any]) -> None:
    assert pod_failure(body) is None, what


def test_between_two_crashes_of_a_loop_it_still_fails() -> None:
    """Restarted after a back-off and not Ready since: still the loop (the phase does not flap
    with every restart); the second crash counts before its back-off starts."""
    running = pod(REV, restarts=3, last=terminated(), ready_changed=-30)
    failure = pod_failure(running)
    assert failure is not None
    assert failure.reason == "CrashLoopBackOff"
    assert failure.termination_message == SHA_MISMATCH
    second_crash = pod(REV, restarts=1, state={"terminated": terminated()})
    failure = pod_failure(second_crash)
    assert failure is not None
    assert failure.restart_count == 1


def test_messages_are_truncated() -> None:
    failure = pod_failure(crashloop_pod(REV, message="model not loaded: " + "x" * 5000))
    assert failure is not None
    assert failure.termination_message is not None
    assert len(failure.termination_message) == MAX_MESSAGE
    assert failure.termination_message.endswith("…")


def test_revision_failures_names_the_first_pod_and_counts() -> None:
    pods = [
        crashloop_pod(REV, "zzzzz"),
        pod(REV, "bbbbb", ready=True),
        crashloop_pod(REV, "aaaaa"),
    ]
    failure, count = revision_failures(pods)
    assert failure is not None
    assert failure.pod == f"{REV}-7c9d8b6f4-aaaaa"
    assert count == 2
    assert revision_failures([pod(REV, ready=True)]) == (None, 0)
    assert revision_failures([]) == (None, 0)


# --- Nothing secret reaches status or events ------------------------------------------------
SECRETS = (
    "s3cr3t-pa55",
    "alice",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "deadbeefcafe0123456789",
    "FwoGZXIvYXdzEXAMPLESESSION",
    "sv=2022&sig=",
    "eyJhbGciOiJSUzI1NiJ9.payload.sig",
)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (
            "cannot fetch https://alice:s3cr3t-pa55@models.example.org/iris/2.onnx: HTTP 403",
            "https://<redacted>@models.example.org/iris/2.onnx: HTTP 403",
        ),
        (
            "cannot fetch https://bucket.s3.us-east-1.amazonaws.com/iris.onnx?X-Amz-Algorithm="
            "AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261123%2Fus-east-1%2Fs3"
            "%2Faws4_request&X-Amz-Date=20261123T120000Z&X-Amz-Expires=3600&X-Amz-Signature="
            "deadbeefcafe0123456789&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLESESSION: timed out",
            "https://bucket.s3.us-east-1.amazonaws.com/iris.onnx?<redacted>: timed out",
        ),
        (
            "sha256 mismatch for 'https://acct.blob.core.windows.net/m/iris.onnx?sv=2022&sig="
            "deadbeefcafe0123456789': expected a, got b",
            "'https://acct.blob.core.windows.net/m/iris.onnx?<redacted>': expected a, got b",
        ),
        (
            'cannot fetch s3://models/iris.onnx: HTTP 403 Forbidden: <?xml version="1.0"?>'
            "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE"
            "</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 20261123T120000Z "
            "deadbeefcafe0123456789",
            "<Code>SignatureDoesNotMatch</Code><AWSAccessKeyId><redacted></AWSAccessKeyId>",
        ),
        (
            "env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY is wrong",
            "AWS_SECRET_ACCESS_KEY=<redacted> is wrong",
        ),
        (
            "HTTP 401 with Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig",
            "Bearer <redacted>",
        ),
        (
            "key AKIAIOSFODNN7EXAMPLE has no access",
            "key <redacted> has no access",
        ),
    ],
)
def test_redact_removes_credentials(text: str, kept: str) -> None:
    out = redact(text)
    for secret in SECRETS:
        assert secret not in out, (secret, out)
    assert kept in out, out


@pytest.mark.parametrize(
    "text",
    [
        SHA_MISMATCH,
        "model not loaded: model file not found: /mnt/canarium/pvc/models/iris.onnx "
        "(from 'pvc://models/iris.onnx')",
        "model not loaded: cannot fetch https://models.example.org/iris/2.onnx: HTTP 404 Not Found",
        'secret "model-credentials" not found',
        "couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/model-credentials",
    ],
)
def test_redact_keeps_what_is_not_secret(text: str) -> None:
    assert redact(text) == text


def test_pod_messages_are_redacted_before_they_leave_the_pod() -> None:
    leaky = (
        "model not loaded: cannot fetch https://alice:s3cr3t-pa55@models.example.org/x.onnx"
        "?X-Amz-Signature=deadbeefcafe0123456789: HTTP 403"
    )
    failure = pod_failure(crashloop_pod(REV, message=leaky))
    assert failure is not None
    assert failure.termination_message is not None
    for secret in SECRETS:
        assert secret not in failure.describe()
    assert "models.example.org/x.onnx" in failure.termination_message
    waiting = pod_failure(
        waiting_pod(REV, "ImagePullBackOff", 'Back-off pulling "https://u:s3cr3t-pa55@r.io/i"')
    )
    assert waiting is not None
    assert "s3cr3t-pa55" not in waiting.describe()
