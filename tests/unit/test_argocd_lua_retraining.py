"""The Argo CD health check and actions of ModelRetrainings (manifests/argocd/canarium.dev/
ModelRetraining), run in gopher-lua as Argo CD runs them (tests/argocd_lua.py), over every case
of health_test.yaml and action_test.yaml, as argo-cd's own util/lua tests do; then what each
action writes handed to the operator's planner (canarium.retraining) and set against
`kubectl canarium retrain`.
"""

from __future__ import annotations

import json
import re
import time
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium.api.modelretraining import (
    ANNOTATION_APPROVE,
    ANNOTATION_DISCARD,
    ANNOTATION_RETRAIN,
    ModelRetraining,
    RetrainingPhase,
    RunPhase,
)
from canarium.cli import CliError, retrain_target

from tests import argocd_lua
from tests.argocd_lua import RETRAINING_ACTIONS
from tests.unit import argocd_testdata_retraining as scenes

KIND = "ModelRetraining"
SCRIPTS = argocd_lua.scripts(KIND)
HEALTH_TESTS = yaml.safe_load((SCRIPTS / "health_test.yaml").read_text())["tests"]
ACTION_TESTS = yaml.safe_load((SCRIPTS / "actions" / "action_test.yaml").read_text())
DISCOVERY = ACTION_TESTS["discoveryTests"]
ACTION_CASES = ACTION_TESTS["actionTests"]
# The annotation each action writes, as `kubectl canarium retrain [--approve | --discard]`.
ANNOTATION = {
    "retrain": ANNOTATION_RETRAIN,
    "approve": ANNOTATION_APPROVE,
    "discard": ANNOTATION_DISCARD,
}
REQUESTED_AT = "%Y-%m-%dT%H:%M:%SZ"  # the CLI's form (canarium.cli._retrain)


def _load(relative: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((SCRIPTS / relative).read_text())
    return obj


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


# --- health -----------------------------------------------------------------------------------
@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm-libs", "open-libs"])
@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_health(case: dict[str, Any], open_libs: bool) -> None:
    obj = _load(case["inputPath"])
    assert obj["kind"] == KIND
    assert argocd_lua.health(obj, open_libs=open_libs) == case["healthStatus"]


@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_health_test_names_say_the_expected_status(case: dict[str, Any]) -> None:
    """testdata/<status>_<what>.yaml: a regenerated health_test.yaml cannot quietly flip one."""
    prefix = Path(case["inputPath"]).stem.split("_", 1)[0]
    assert case["healthStatus"]["status"] == prefix.capitalize()


def test_health_testdata_covers_every_phase_and_every_end_of_a_run() -> None:
    """Every phase the operator writes (and none yet), every phase a run ends in as the newest
    run, and the states the check tells apart."""
    objects = {t["inputPath"]: _load(t["inputPath"]) for t in HEALTH_TESTS}
    statuses = [o.get("status") or {} for o in objects.values()]
    assert {s.get("phase") for s in statuses} >= {None, *typing.get_args(RetrainingPhase)}
    newest = {s["runs"][0]["phase"] for s in statuses if s.get("runs")}
    assert newest == set(typing.get_args(RunPhase))
    names = " ".join(objects)
    for state in ("noStatus", "newGeneration", "suspendedRunFinishing", "unknownPhase"):
        assert state in names, state


@pytest.mark.parametrize(
    "path",
    sorted(
        str(p.relative_to(SCRIPTS))
        for p in (SCRIPTS / "testdata").glob("*.yaml")
        if "unknown" not in p.name  # deliberately from a newer operator
    )
    + sorted(str(p.relative_to(SCRIPTS)) for p in (SCRIPTS / "actions" / "testdata").glob("*")),
)
def test_testdata_objects_are_valid_modelretrainings(path: str) -> None:
    """The testdata keeps the status shape the operator writes (regenerate it with
    `python -m tests.unit.argocd_testdata_retraining` when that changes)."""
    ModelRetraining.model_validate(_load(path))


@pytest.mark.parametrize(
    "path",
    ["testdata/healthy_lastRunFailed.yaml", "testdata/healthy_lastRunRejected.yaml",
     "testdata/healthy_lastRunRolledBack.yaml"],
)  # fmt: skip
def test_a_run_that_failed_leaves_it_healthy_though_not_ready(path: str) -> None:
    """Ready=False (RunFailed...) is the run's story; the retraining itself works: Healthy,
    the run's end in the message."""
    obj = _load(path)
    ready = _condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == (
        "False",
        "Run" + obj["status"]["runs"][0]["phase"],
    )
    health = argocd_lua.health(obj)
    assert health["status"] == "Healthy"
    assert obj["status"]["runs"][0]["phase"] in health["message"]


@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_a_status_older_than_the_spec_is_progressing_whatever_it_says(
    case: dict[str, Any],
) -> None:
    obj = _load(case["inputPath"])
    obj["metadata"]["generation"] = generation = obj["metadata"]["generation"] + 1
    expected = "Waiting for the operator to observe "
    expected += "the ModelRetraining" if "status" not in obj else f"generation {generation}"
    assert argocd_lua.health(obj) == {"status": "Progressing", "message": expected}


def test_the_conditions_alone_decide_when_the_phase_is_missing() -> None:
    stalled = _load("testdata/degraded_deploymentNotFound.yaml")
    del stalled["status"]["phase"]
    del stalled["status"]["message"]
    assert argocd_lua.health(stalled) == {
        "status": "Degraded",
        "message": "ModelDeployment 'iris' not found",  # the condition's message
    }
    awaiting = _load("testdata/suspended_awaitingApproval.yaml")
    del awaiting["status"]["phase"]
    assert argocd_lua.health(awaiting)["status"] == "Suspended"
    # Training: the conditions say at rest (Reconciling False: a run is not the spec applied).
    training = _load("testdata/healthy_training.yaml")
    del training["status"]["phase"]
    assert argocd_lua.health(training)["status"] == "Healthy"


def test_stalled_wins_over_suspend_and_a_run_under_way_is_not_suspended() -> None:
    """Suspended and without its ModelDeployment: lifting the suspend would not make it work.
    Suspended while a run trains: the run finishes (spec.suspend stops new runs only)."""
    stalled = _load("testdata/degraded_deploymentNotFound.yaml")
    stalled["spec"]["suspend"] = True
    assert argocd_lua.health(stalled)["status"] == "Degraded"
    finishing = _load("testdata/healthy_suspendedRunFinishing.yaml")
    assert finishing["spec"]["suspend"] is True
    assert argocd_lua.health(finishing)["status"] == "Healthy"
    assert argocd_lua.health(finishing)["message"] == finishing["status"]["message"]


def test_spec_suspend_is_suspended_with_a_message_even_without_one_from_the_operator() -> None:
    obj = _load("testdata/suspended_suspend.yaml")
    del obj["status"]["message"]
    obj["status"]["phase"] = "Idle"  # as an operator that does not know Suspended would write
    assert argocd_lua.health(obj) == {
        "status": "Suspended",
        "message": "suspended: no new runs (spec.suspend)",
    }


# --- actions: discovery -----------------------------------------------------------------------
@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm-libs", "open-libs"])
@pytest.mark.parametrize("case", DISCOVERY, ids=[t["inputPath"] for t in DISCOVERY])
def test_discovery(case: dict[str, Any], open_libs: bool) -> None:
    found = argocd_lua.discover_actions(_load(f"actions/{case['inputPath']}"), open_libs=open_libs)
    assert {name: a["disabled"] for name, a in found.items()} == {
        a["name"]: a["disabled"] for a in case["result"]
    }


def test_every_action_has_its_script_and_is_discovered() -> None:
    folders = {p.parent.name for p in (SCRIPTS / "actions").glob("*/action.lua")}
    assert folders == set(RETRAINING_ACTIONS)
    found = argocd_lua.discover_actions(_load("actions/testdata/idle.yaml"))
    assert set(found) == set(RETRAINING_ACTIONS)
    assert {t["inputPath"] for t in DISCOVERY} == {
        f"testdata/{name}.yaml" for name in scenes.ACTION_CASES
    }


@pytest.mark.parametrize("case", DISCOVERY, ids=[t["inputPath"] for t in DISCOVERY])
def test_approve_and_discard_are_offered_only_where_the_cli_would_do_them(
    case: dict[str, Any],
) -> None:
    """An enabled approve or discard names the run `kubectl canarium retrain --approve/--discard`
    would name; where the CLI refuses (no candidate, approved already), the action is disabled."""
    obj = _load(f"actions/{case['inputPath']}")
    found = argocd_lua.discover_actions(obj)
    for verb in ("approve", "discard"):
        try:
            run, _ = retrain_target(obj, verb, "")
        except CliError:
            assert found[verb]["disabled"], verb
            continue
        if not found[verb]["disabled"]:
            after = argocd_lua.run_action(obj, verb)
            assert _annotations(after)[ANNOTATION[verb]] == run


# --- actions: what they write -----------------------------------------------------------------
def _normalized(obj: dict[str, Any], expected: str | None) -> dict[str, Any]:
    """The object with its request time replaced by the expected file's (as Argo CD's
    testNormalizer does with time-stamped annotations), after checking it is the CLI's form
    of about now."""
    obj = json.loads(json.dumps(obj))
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_RETRAIN)
    if value is not None and expected is not None:
        when = datetime.strptime(value, REQUESTED_AT).replace(tzinfo=UTC)
        assert abs(when.timestamp() - time.time()) < 10, value
        annotations[ANNOTATION_RETRAIN] = expected
    return obj


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}/{t['inputPath']}" for t in ACTION_CASES]
)
def test_action(case: dict[str, Any]) -> None:
    before = _load(f"actions/{case['inputPath']}")
    expected = _load(f"actions/{case['expectedOutputPath']}")
    assert not argocd_lua.discover_actions(before)[case["action"]]["disabled"]
    after = argocd_lua.run_action(before, case["action"])
    assert _normalized(after, _annotations(expected).get(ANNOTATION_RETRAIN)) == expected


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}/{t['inputPath']}" for t in ACTION_CASES]
)
def test_action_changes_exactly_the_annotation_the_cli_sets(case: dict[str, Any]) -> None:
    """What Argo CD patches (the merge patch from the live object to the action's result) is
    one annotation, with the value `kubectl canarium retrain` writes (canarium/cli.py)."""
    action = case["action"]
    before = _load(f"actions/{case['inputPath']}")
    patch = argocd_lua.merge_patch(before, argocd_lua.run_action(before, action))
    assert set(patch) == {"metadata"}
    assert set(patch["metadata"]) == {"annotations"}
    assert set(patch["metadata"]["annotations"]) == {ANNOTATION[action]}
    value = patch["metadata"]["annotations"][ANNOTATION[action]]
    if action == "retrain":
        when = datetime.strptime(value, REQUESTED_AT).replace(tzinfo=UTC)
        assert when.strftime(REQUESTED_AT) == value
    else:
        assert value == retrain_target(before, action, "")[0]


def _carried_out(name: str, action: str) -> tuple[scenes.Scene, Any]:
    """The scene's object after the action (Argo CD's merge patch of its annotations), and the
    operator's next step on it in the same world."""
    scene = scenes.ACTION_CASES[name]()
    live = scene.to_dict()
    patch = argocd_lua.merge_patch(live, argocd_lua.run_action(live, action))
    annotated = scene.annotated(**patch["metadata"]["annotations"])
    return annotated, annotated.plan()


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}/{t['inputPath']}" for t in ACTION_CASES]
)
def test_the_operator_carries_out_what_the_action_writes(case: dict[str, Any]) -> None:
    """The action's annotation, handed to the operator's planner with the world of the scene:
    retrain starts a run (or waits while one is under way), approve rolls the candidate out,
    discard withdraws it. Then approve and discard are offered no more (nothing left to do),
    retrain again once the operator took the request (a new one queues the next run)."""
    action = case["action"]
    name = Path(case["inputPath"]).stem
    before = scenes.ACTION_CASES[name]()
    scene, plan = _carried_out(name, action)
    status = plan.status
    if action == "retrain":
        request = scene.obj.metadata.annotations[ANNOTATION_RETRAIN]
        if before.obj.status.phase == "Training":  # busy: the request waits, still pending
            assert plan.create == []
            assert status.get("handledRequest") != request
        else:
            assert [j["metadata"]["annotations"]["canarium.dev/trigger"] for j in plan.create] == [
                "manual"
            ]
            assert status["handledRequest"] == request
            assert status["runs"][0]["reason"] == f"requested at {request}"
    elif action == "approve":
        assert status["candidate"]["approved"] is True
        assert status["runs"][0]["phase"] == "Canarying"
        assert plan.candidate_changed
    else:
        assert status.get("candidate") is None
        assert status["runs"][0]["phase"] == "Discarded"
        assert plan.candidate_changed
    written = scene.to_dict()
    written["status"] = status
    offered = argocd_lua.discover_actions(written)
    busy = action == "retrain" and before.obj.status.phase == "Training"
    assert offered[action]["disabled"] is (busy or action != "retrain")


def test_retrain_on_an_object_without_annotations_or_status() -> None:
    obj = _load("testdata/progressing_noStatus.yaml")
    assert "annotations" not in obj["metadata"]
    assert not argocd_lua.discover_actions(obj)["retrain"]["disabled"]
    after = argocd_lua.run_action(obj, "retrain")
    assert set(_annotations(after)) == {ANNOTATION_RETRAIN}
    assert {n: a["disabled"] for n, a in argocd_lua.discover_actions(after).items()} == {
        "retrain": True,  # requested: the operator has not taken it yet
        "approve": True,
        "discard": True,
    }


@pytest.mark.parametrize(
    ("path", "action", "message"),
    [
        ("actions/testdata/idle.yaml", "approve", "no candidate awaiting approval"),
        ("actions/testdata/idle.yaml", "discard", "no candidate to discard"),
        ("testdata/progressing_noStatus.yaml", "discard", "no candidate to discard"),
        (
            "actions/testdata/canarying.yaml",
            "approve",
            "candidate of run iris-retrain-1 is approved already",
        ),
    ],
)
def test_approve_and_discard_refuse_as_the_cli_does(path: str, action: str, message: str) -> None:
    """Argo CD offers them disabled there; run anyway (argocd app actions run), they fail with
    the reason and change nothing."""
    obj = _load(path)
    assert argocd_lua.discover_actions(obj)[action]["disabled"]
    with pytest.raises(CliError):
        retrain_target(obj, action, "")
    with pytest.raises(argocd_lua.LuaError, match=re.escape(message)):
        argocd_lua.run_action(obj, action)


def test_a_retrain_request_already_taken_can_be_made_again() -> None:
    """The operator took the request (handledRequest): a new one is offered, and queues the
    next run; one it has not taken yet is not offered twice."""
    obj = _load("actions/testdata/training.yaml")
    taken = _annotations(obj)[ANNOTATION_RETRAIN]
    assert obj["status"]["handledRequest"] == taken
    assert not argocd_lua.discover_actions(obj)["retrain"]["disabled"]
    waiting = _load("actions/testdata/suspended_requested.yaml")
    assert "handledRequest" not in waiting["status"]
    assert argocd_lua.discover_actions(waiting)["retrain"]["disabled"]


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action 'promote'"):
        argocd_lua.run_action(_load("actions/testdata/idle.yaml"), "promote")
