"""The Argo CD health check and actions (manifests/argocd), run in gopher-lua as Argo CD runs
them (tests/argocd_lua.py), over every case of health_test.yaml and action_test.yaml, as
argo-cd's own util/lua tests do; plus the argocd-cm kustomize Component built from the files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium.api import ModelDeployment
from canarium.rollout import ANNOTATION_COMMAND, ANNOTATION_PAUSED, parse_command

from tests import argocd_lua
from tests.argocd_lua import ACTIONS, ARGOCD, REPO, SCRIPTS

HEALTH_TESTS = yaml.safe_load((SCRIPTS / "health_test.yaml").read_text())["tests"]
ACTION_TESTS = yaml.safe_load((SCRIPTS / "actions" / "action_test.yaml").read_text())
COMMAND = re.compile(r"^(?P<verb>[a-z-]+)@(?P<ns>\d{19})$")


def _load(relative: str, base: Path = SCRIPTS) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((base / relative).read_text())
    return obj


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


# --- health -----------------------------------------------------------------------------------
@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm-libs", "open-libs"])
@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_health(case: dict[str, Any], open_libs: bool) -> None:
    obj = _load(case["inputPath"])
    assert argocd_lua.health(obj, open_libs=open_libs) == case["healthStatus"]


@pytest.mark.parametrize("case", HEALTH_TESTS, ids=[t["inputPath"] for t in HEALTH_TESTS])
def test_health_test_names_say_the_expected_status(case: dict[str, Any]) -> None:
    """testdata/<status>_<what>.yaml: a regenerated health_test.yaml cannot quietly flip one."""
    prefix = Path(case["inputPath"]).stem.split("_", 1)[0]
    assert case["healthStatus"]["status"] == prefix.capitalize()


def test_health_testdata_covers_every_phase_and_state() -> None:
    """Every phase the operator writes, and the states the mapping distinguishes."""
    objects = {t["inputPath"]: _load(t["inputPath"]) for t in HEALTH_TESTS}
    phases = {(o.get("status") or {}).get("phase") for o in objects.values()}
    assert {None, "Progressing", "Paused", "Healthy", "Degraded"} <= phases  # None: Pending
    names = " ".join(objects)
    for state in (
        "noStatus", "newGeneration", "canary", "baking", "pauseStep", "userPause",
        "rolledBack", "aborted", "ModelLoadFailed", "progressDeadline", "policyInvalid",
    ):  # fmt: skip
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
def test_testdata_objects_are_valid_modeldeployments(path: str) -> None:
    """The testdata keeps the status shape the operator writes (regenerate it with
    `python -m tests.unit.argocd_testdata` when that changes)."""
    ModelDeployment.model_validate(_load(path))


def test_a_condition_older_than_the_spec_is_progressing_whatever_it_says() -> None:
    obj = _load("testdata/degraded_rolledBack.yaml")
    obj["metadata"]["generation"] = generation = obj["metadata"]["generation"] + 1
    assert argocd_lua.health(obj) == {
        "status": "Progressing",
        "message": f"Waiting for the operator to observe generation {generation}",
    }


def test_stalled_without_a_degraded_phase_is_degraded() -> None:
    obj = _load("testdata/progressing_canary.yaml")
    for condition in obj["status"]["conditions"]:
        if condition["type"] == "Stalled":
            condition["status"] = "True"
    del obj["status"]["message"]
    assert argocd_lua.health(obj)["status"] == "Degraded"


# --- actions ----------------------------------------------------------------------------------
DISCOVERY = ACTION_TESTS["discoveryTests"]


@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm-libs", "open-libs"])
@pytest.mark.parametrize("case", DISCOVERY, ids=[t["inputPath"] for t in DISCOVERY])
def test_discovery(case: dict[str, Any], open_libs: bool) -> None:
    found = argocd_lua.discover_actions(_load(f"actions/{case['inputPath']}"), open_libs=open_libs)
    assert {name: a["disabled"] for name, a in found.items()} == {
        a["name"]: a["disabled"] for a in case["result"]
    }


def test_every_action_has_its_script_and_is_discovered() -> None:
    folders = {p.parent.name for p in (SCRIPTS / "actions").glob("*/action.lua")}
    assert folders == set(ACTIONS)
    found = argocd_lua.discover_actions(_load("actions/testdata/canary.yaml"))
    assert set(found) == set(ACTIONS)


def _normalized(obj: dict[str, Any], expected_ns: str) -> dict[str, Any]:
    """The object with its command's timestamp replaced (as Argo CD's testNormalizer does with
    time-stamped annotations), after checking it is a nanosecond time of about now."""
    obj = json.loads(json.dumps(obj))
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_COMMAND)
    if value is not None:
        match = COMMAND.match(value)
        assert match, value
        assert abs(int(match["ns"]) - time.time_ns()) < 10 * 10**9, value
        annotations[ANNOTATION_COMMAND] = f"{match['verb']}@{expected_ns}"
    return obj


ACTION_CASES = ACTION_TESTS["actionTests"]


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}/{t['inputPath']}" for t in ACTION_CASES]
)
def test_action(case: dict[str, Any]) -> None:
    before = _load(f"actions/{case['inputPath']}")
    expected = _load(f"actions/{case['expectedOutputPath']}")
    after = argocd_lua.run_action(before, case["action"])
    expected_ns = COMMAND.match(_annotations(expected).get(ANNOTATION_COMMAND, "x@" + "0" * 19))
    assert expected_ns is not None
    assert _normalized(after, expected_ns["ns"]) == expected


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{t['action']}/{t['inputPath']}" for t in ACTION_CASES]
)
def test_action_changes_exactly_the_annotation_the_cli_sets(case: dict[str, Any]) -> None:
    """What Argo CD patches (the merge patch from the live object to the action's result) is
    one annotation, with the value `kubectl canarium VERB` writes (canarium/cli.py)."""
    action = case["action"]
    before = _load(f"actions/{case['inputPath']}")
    patch = argocd_lua.merge_patch(before, argocd_lua.run_action(before, action))
    assert set(patch) == {"metadata"}
    assert set(patch["metadata"]) == {"annotations"}
    annotations = patch["metadata"]["annotations"]
    if action == "pause":
        assert annotations == {ANNOTATION_PAUSED: "true"}
    elif action == "resume":
        assert annotations == {ANNOTATION_PAUSED: None}
    else:
        assert set(annotations) == {ANNOTATION_COMMAND}
        value = annotations[ANNOTATION_COMMAND]
        assert COMMAND.match(value), value
        assert parse_command(value) == action, "the operator reads the verb"


def test_a_command_value_already_used_is_not_written_again() -> None:
    """os.time() has seconds only: when the annotation or the last command carried out already
    holds this second's value, the action takes the next nanosecond, so the operator sees a new
    command (it carries out each value once)."""
    obj = _load("actions/testdata/canary.yaml")
    now = int(time.time())
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_COMMAND] = f"promote@{now}000000000"
    obj["status"]["lastCommand"] = f"promote@{now}000000001"
    value = _annotations(argocd_lua.run_action(obj, "promote"))[ANNOTATION_COMMAND]
    assert value not in (f"promote@{now}000000000", f"promote@{now}000000001")
    if value.startswith(f"promote@{now}"):  # not a second later
        assert value == f"promote@{now}000000002"


def test_actions_on_an_object_without_annotations() -> None:
    obj = _load("actions/testdata/canary.yaml")
    obj["metadata"].pop("annotations", None)
    assert _annotations(argocd_lua.run_action(obj, "pause")) == {ANNOTATION_PAUSED: "true"}
    assert COMMAND.match(_annotations(argocd_lua.run_action(obj, "abort"))[ANNOTATION_COMMAND])
    assert argocd_lua.merge_patch(obj, argocd_lua.run_action(obj, "resume")) == {}


def test_resume_leaves_an_empty_object_not_an_array() -> None:
    """Lua cannot tell {} from []; Argo CD restores objects the live object had (and so does
    the runner): nodeSelector {} and an emptied annotations map stay objects."""
    after = argocd_lua.run_action(_load("actions/testdata/paused.yaml"), "resume")
    assert after["metadata"]["annotations"] == {}
    assert after["spec"]["serving"]["nodeSelector"] == {}


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action 'restart'"):
        argocd_lua.run_action(_load("actions/testdata/canary.yaml"), "restart")


# --- the runner is Argo CD's environment ------------------------------------------------------
def test_runner_gives_argocd_cm_scripts_no_string_library(tmp_path: Path) -> None:
    lua = 'return {status = "Healthy", message = type(string) .. "/" .. type(os)}'
    assert argocd_lua.run("health", _write(tmp_path, lua), {}) == {
        "status": "Healthy",
        "message": "nil/nil",  # Argo CD registers its safe os for require("os") only
    }
    assert argocd_lua.run("health", _write(tmp_path, lua), {}, open_libs=True) == {
        "status": "Healthy",
        "message": "table/table",
    }


def test_runner_maps_an_invalid_health_status_to_unknown(tmp_path: Path) -> None:
    script = _write(tmp_path, 'return {status = "Fine"}')
    assert argocd_lua.run("health", script, {}) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }


def test_runner_reports_lua_errors(tmp_path: Path) -> None:
    script = _write(tmp_path, "return obj.status.phase")
    with pytest.raises(argocd_lua.LuaError, match="attempt to index a non-table object"):
        argocd_lua.run("health", script, {})


def _write(tmp_path: Path, lua: str) -> Path:
    script = tmp_path / f"script{len(list(tmp_path.iterdir()))}.lua"
    script.write_text(lua)
    return script


# --- Argo CD's patch --------------------------------------------------------------------------
def test_merge_patch_is_rfc7386() -> None:
    live = {"a": 1, "m": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "gone": 2}
    new = {"a": 1, "m": {"x": 2, "y": [1], "z": {"k": 1}}, "added": {"b": 1}}
    assert argocd_lua.merge_patch(live, new) == {
        "m": {"x": 2, "y": [1]},
        "gone": None,
        "added": {"b": 1},
    }
    assert argocd_lua.merge_patch(live, live) == {}


def test_split_status_patch() -> None:
    assert argocd_lua.split_status({"metadata": {"a": 1}, "status": {"p": 1}}) == (
        {"metadata": {"a": 1}},
        {"status": {"p": 1}},
    )
    assert argocd_lua.split_status({"status": {"p": 1}}) == (None, {"status": {"p": 1}})
    assert argocd_lua.split_status({"metadata": {}}) == ({"metadata": {}}, None)


# --- argocd-cm ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(argocd_lua.KIND_CM_ACTIONS))
def test_argocd_cm_actions_are_in_sync_with_the_lua_files(kind: str) -> None:
    path = argocd_lua.KIND_CM_ACTIONS[kind]
    assert path.read_text() == argocd_lua.cm_actions(kind), (
        f"{path.relative_to(REPO)} is stale: run `make argocd-cm`"
    )
    actions = yaml.safe_load(path.read_text())
    assert actions["discovery.lua"] == argocd_lua.discovery_lua(kind).read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        a: argocd_lua.action_script(a, kind).read_text() for a in argocd_lua.KIND_ACTIONS[kind]
    }


def test_every_kind_with_scripts_is_in_the_component() -> None:
    """A canarium.dev/<kind> folder the kustomization does not list would never reach Argo CD."""
    folders = {p.name for p in (ARGOCD / "canarium.dev").iterdir() if p.is_dir()}
    assert folders == set(argocd_lua.KIND_ACTIONS)
    files = yaml.safe_load((ARGOCD / "kustomization.yaml").read_text())["configMapGenerator"][0]
    listed = dict(entry.split("=", 1) for entry in files["files"])
    for kind in folders:
        key = f"canarium.dev_{kind}"
        assert listed[f"resource.customizations.health.{key}"] == (
            f"canarium.dev/{kind}/health.lua"
        )
        cm_actions = argocd_lua.KIND_CM_ACTIONS[kind].relative_to(ARGOCD)
        assert listed[f"resource.customizations.actions.{key}"] == str(cm_actions)


def _kubectl() -> str | None:
    proc = subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "kubectl"], capture_output=True, text=True, check=False
    )
    path = proc.stdout.strip()
    return path if proc.returncode == 0 and Path(path).is_file() else shutil.which("kubectl")


@pytest.mark.skipif(_kubectl() is None, reason="no kubectl (make control-plane builds one)")
def test_component_merges_the_files_into_argocd_cm(tmp_path: Path) -> None:
    """As a user's Argo CD kustomization uses it: install.yaml's argocd-cm (no namespace of its
    own), `namespace: argocd`, the component."""
    shutil.copytree(ARGOCD, tmp_path / "argocd")
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n"
        "data:\n  url: https://argocd.example.org\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "namespace: argocd\nresources: [cm.yaml]\ncomponents: [argocd]\n"
    )
    kubectl = _kubectl()
    assert kubectl is not None
    proc = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    (cm,) = yaml.safe_load_all(proc.stdout)
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    data = cm["data"]
    assert data["url"] == "https://argocd.example.org", "merged, not replaced"
    for kind in argocd_lua.KIND_ACTIONS:
        key = f"canarium.dev_{kind}"
        health = argocd_lua.health_lua(kind).read_text()
        assert data[f"resource.customizations.health.{key}"] == health
        assert data[f"resource.customizations.actions.{key}"] == argocd_lua.cm_actions(kind)
