"""The I/O side of ModelRetrainings (canarium.retraining_controller) over a fake API client:
Jobs made and followed, results read from their pods, the candidate handed to its
ModelDeployment's reconcile."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from canarium.controller import Controller
from canarium.retraining_controller import job_state, result_of_pods

from tests.unit.operator_fixtures import name_of
from tests.unit.test_controller import KEY, _body, _controller
from tests.unit.test_retraining import OUTPUT, SHA_B, drifted_mdep, result, retraining


def _job(name: str, *conditions: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/managed-by": "canarium",
                "canarium.dev/retraining": "iris-retrain",
            },
        },
        "status": {"conditions": list(conditions)},
    }


def _pod(created: str, message: str | None) -> dict[str, Any]:
    terminated = {"exitCode": 0, **({"message": message} if message else {})}
    return {
        "metadata": {"name": f"p-{created}", "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "train", "state": {"terminated": terminated}}]},
    }


def test_job_states_from_their_conditions() -> None:
    assert job_state(_job("j")) == ("Active", "")
    done = {"type": "Complete", "status": "True"}
    assert job_state(_job("j", done)) == ("Succeeded", "")
    # Kubernetes 1.31+: SuccessCriteriaMet / FailureTarget come before Complete / Failed.
    assert job_state(_job("j", {"type": "SuccessCriteriaMet", "status": "True"}))[0] == "Succeeded"
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit"}  # fmt: skip
    assert job_state(_job("j", failed)) == (
        "Failed",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    )
    assert job_state(_job("j", {"type": "FailureTarget", "status": "True"})) == (
        "Failed",
        "Failed",
    )
    assert job_state(_job("j", {"type": "Failed", "status": "False"}))[0] == "Active"


def test_the_result_is_the_newest_pods_termination_message() -> None:
    old = _pod("2026-11-23T10:00:00Z", '{"format":"old"}')
    new = _pod("2026-11-23T11:00:00Z", '{"format":"new"}')
    assert result_of_pods([old, new]) == '{"format":"new"}'
    # A pod that ended without one (or with a log line) does not hide an older pod's result.
    assert result_of_pods([old, _pod("2026-11-23T12:00:00Z", "Error")]) == '{"format":"old"}'
    assert result_of_pods([_pod("2026-11-23T12:00:00Z", None)]) is None
    assert result_of_pods([]) is None


def _retraining_body(**status: Any) -> dict[str, Any]:
    body = retraining(status=status or None).model_dump(by_alias=True, mode="json")
    body["status"] = status
    return body


def _merged(old: Any, patch: Any) -> Any:
    """A JSON merge patch applied (RFC 7386), as the API server does."""
    if not isinstance(patch, dict):
        return patch
    out = dict(old) if isinstance(old, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


def _through_a_run() -> Controller:
    """A drifted ModelDeployment's run, made, followed to its end and its candidate accepted
    (asserting each step's API calls); the controller afterwards."""
    controller, kube = _controller()
    rc = controller.retraining
    dep = drifted_mdep()
    mdep_body = dep.model_dump(by_alias=True, mode="json")
    controller.mdeps[KEY] = mdep_body
    rc.retrainings[("ml", "iris-retrain")] = _retraining_body()
    status: dict[str, Any] = {}

    def settle() -> None:
        """The object as the API server has it after the status patches (the fake answers
        with the patch alone)."""
        nonlocal status
        for verb, args in kube.calls:
            if verb == "patch_status":
                status = _merged(status, args[1])
        kube.calls[:] = [c for c in kube.calls if c[0] != "patch_status"]
        body = _retraining_body()
        body["status"] = status
        body["metadata"]["resourceVersion"] = str(len(str(status)))
        rc.retrainings[("ml", "iris-retrain")] = body

    async def scenario() -> None:
        # Drifted: the Job is made, the status records the run, an event says so.
        await rc.reconcile_key(("ml", "iris-retrain"))
        await controller.events.flush()
        assert ("apply", "iris-retrain-1") in kube.calls
        assert ("event", "RetrainingStarted") in kube.calls
        assert rc.jobs[("ml", "iris-retrain")]["iris-retrain-1"]["kind"] == "Job"
        patched = next(args for verb, args in kube.calls if verb == "patch_status")
        assert patched[1]["runs"][0]["phase"] == "Running"
        settle()

        # The Job completes: its pods' termination message is the result.
        complete = _job("iris-retrain-1", {"type": "Complete", "status": "True"})
        rc.on_job("MODIFIED", complete)
        kube.lists[("Pod", "ml")] = [_pod("2026-11-23T12:00:00Z", result())]
        kube.calls.clear()
        await rc.reconcile_key(("ml", "iris-retrain"))
        listed = [args for verb, args in kube.calls if verb == "list"]
        assert listed == [("Pod", "ml", "batch.kubernetes.io/job-name=iris-retrain-1")]
        await controller.events.flush()
        assert ("event", "CandidateAccepted") in kube.calls
        assert KEY in controller._queued  # the ModelDeployment looks again
        settle()
        # Its result is read once: the next pass lists no pods.
        kube.calls.clear()
        await rc.reconcile_key(("ml", "iris-retrain"))
        assert [verb for verb, _ in kube.calls if verb == "list"] == []

    asyncio.run(scenario())
    return controller


def test_a_run_is_made_followed_and_its_candidate_accepted() -> None:
    controller = _through_a_run()
    status = controller.retraining.retrainings[("ml", "iris-retrain")]["status"]
    assert status["candidate"]["model"]["uri"] == f"{OUTPUT}/iris-retrain-1/model.onnx"
    assert status["runs"][0]["phase"] == "Canarying"


def test_the_deployment_serves_the_candidate_until_git_moves() -> None:
    controller = _through_a_run()
    dep = drifted_mdep()

    # The ModelDeployment's input: the candidate in place of spec.model, and whence.
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.mdep.spec.model.uri == f"{OUTPUT}/iris-retrain-1/model.onnx"
    assert inp.mdep.spec.model.sha256 == SHA_B
    assert inp.retrained is not None
    assert (inp.retrained.retraining, inp.retrained.run) == ("iris-retrain", "iris-retrain-1")
    assert inp.retrained.replaces_version == "1.0.0"
    assert name_of(inp.mdep) != name_of(dep)

    # Git moves spec.model: the candidate no longer applies, even before the status says so.
    moved = _body(version="2.0.0")
    controller.mdeps[KEY] = moved
    inp = controller.build_input(KEY)
    assert inp is not None
    assert inp.mdep.spec.model.version == "2.0.0"
    assert inp.retrained is None


def test_the_oldest_retraining_of_a_deployment_owns_it() -> None:
    controller, _ = _controller()
    rc = controller.retraining
    older = _retraining_body()
    older["metadata"]["creationTimestamp"] = "2026-11-01T00:00:00Z"
    newer = _retraining_body()
    newer["metadata"]["name"] = "second"
    newer["metadata"]["creationTimestamp"] = "2026-11-20T00:00:00Z"
    rc.retrainings[("ml", "second")] = newer
    rc.retrainings[("ml", "iris-retrain")] = older
    owner = rc.owner_of(KEY)
    assert owner is not None
    assert owner.metadata.name == "iris-retrain"
    assert rc.owner_of(("ml", "other")) is None
    assert rc.owner_of(("elsewhere", "iris")) is None


def test_ended_runs_are_counted_once_and_failures_in_a_row_are_a_gauge() -> None:
    from canarium import metrics
    from prometheus_client import REGISTRY

    # A name of its own: the registry is the process's, and a test may run twice in one
    # (mutation testing does).
    name = f"counted-{uuid.uuid4().hex[:8]}"
    key = ("ml", name)

    def runs(*phases: str) -> dict[str, Any]:
        return {
            "consecutiveFailures": phases.count("Failed"),
            "runs": [
                {"name": f"r-{i}", "trigger": "drift", "phase": p} for i, p in enumerate(phases)
            ],
        }

    def count(phase: str) -> float:
        labels = {"namespace": "ml", "modelretraining": name, "trigger": "drift"}
        value = REGISTRY.get_sample_value(
            "canarium_retraining_runs_total", {**labels, "phase": phase}
        )
        return value or 0.0

    def failures() -> float | None:
        return REGISTRY.get_sample_value(
            "canarium_retraining_consecutive_failures",
            {"namespace": "ml", "modelretraining": name},
        )

    metrics.observe_retraining(key, None, runs("Running"))
    assert count("Failed") == 0.0
    assert failures() == 0.0
    metrics.observe_retraining(key, runs("Running"), runs("Failed"))
    metrics.observe_retraining(key, runs("Failed"), runs("Failed"))  # no change: not again
    assert count("Failed") == 1.0
    assert failures() == 1.0
    metrics.observe_retraining(key, runs("Failed"), runs("Failed", "Failed"))
    assert count("Failed") == 2.0
    assert failures() == 2.0
    assert count("Running") == 0.0  # not an end
    metrics.observe_retraining(key, None, None)
    assert failures() is None
