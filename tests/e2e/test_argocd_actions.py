"""The Argo CD actions (manifests/argocd) on live ModelDeployments, against `kubectl canarium`.

Two twins go through the same rollout in lockstep. Each action runs on one the way Argo CD runs
it (its Lua in gopher-lua against the live object, then a JSON merge patch from the live object
to the result, tests/argocd_lua.py) and the CLI's verb runs on the other: both must change the
same annotation, with a value of the same form, and nothing else; then the operator must carry
out the Lua's value as it does the CLI's. The pods run on kwok's simulated nodes: only the API
server and the operator (installed from its image) are under test. The health check is read on
the live objects along the way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests import argocd_lua
from tests.e2e.cluster import KWOK_PLACEMENT, REPO, Cluster, wait_until
from tests.e2e.incluster import InstalledOperator
from tests.e2e.test_rollout import KUBECTL_CANARIUM

EXAMPLE = REPO / "manifests" / "examples" / "iris.yaml"
LUA, CLI = "by-lua", "by-cli"
COMMAND = "canarium.dev/command"
PAUSED = "canarium.dev/paused"
# A person's gate between 50% and 100%: the twins wait there for promote, abort, pause...
POLICY = {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]}
PAUSE_STEP = "paused until promoted (kubectl canarium promote)"
BY_PERSON = "paused by a person (canarium.dev/paused)"


def manifest(name: str, version: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["name"] = name
    obj["spec"]["model"]["version"] = version
    obj["spec"]["serving"]["replicas"] = 2
    obj["spec"]["serving"].update(KWOK_PLACEMENT)
    obj["spec"]["rollout"] = {"policy": POLICY}
    return obj


def live(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = cluster.get_json("mdep", name, "-n", namespace)
    return got


def wait_status(
    cluster: Cluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60,
) -> dict[str, Any]:
    """The live object once its status (for its current generation) passes `check`."""

    def probe() -> dict[str, Any] | None:
        obj = live(cluster, namespace, name)
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and check(status) else None

    try:
        return wait_until(probe, timeout=timeout, interval=0.5, what=f"{name}: {what}")
    except AssertionError as exc:
        status = live(cluster, namespace, name).get("status")
        raise AssertionError(f"{exc}\nstatus: {status}") from None


def argocd_action(cluster: Cluster, namespace: str, name: str, action: str) -> dict[str, Any]:
    """Run an action as Argo CD's API server does (RunResourceAction): the Lua against the live
    object, then a merge patch from the live object to the result (status through the status
    subresource). Returns the patch."""
    before = live(cluster, namespace, name)
    assert not argocd_lua.discover_actions(before)[action]["disabled"], (
        f"Argo CD would not offer {action} on {name}: {before.get('status')}"
    )
    patch = argocd_lua.merge_patch(before, argocd_lua.run_action(before, action))
    rest, status = argocd_lua.split_status(patch)
    assert status is None, f"{action} writes status: {status}"
    if rest is not None:
        cluster.kubectl(
            "patch", "mdep", name, "-n", namespace, "--type", "merge", "-p", json.dumps(rest)
        )
    return dict(patch)


def cli(cluster: Cluster, namespace: str, name: str, *verb: str) -> None:
    proc = subprocess.run(
        [str(KUBECTL_CANARIUM), *verb, name, "-n", namespace],
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a person's action changed on an object: its spec, labels and annotations (the
    status is the operator's)."""
    keep = {
        "spec": before["spec"],
        "metadata": {k: before["metadata"].get(k) for k in ("labels", "annotations")},
    }
    now = {
        "spec": after["spec"],
        "metadata": {k: after["metadata"].get(k) for k in ("labels", "annotations")},
    }
    changed: dict[str, Any] = argocd_lua.merge_patch(keep, now)
    return changed


def value_form(value: str | None) -> str | None:
    """An annotation value with its timestamp abstracted: "promote@<ns>"."""
    if value is None:
        return None
    return re.sub(r"@\d{19}$", "@<ns>", value)


def act_on_both(cluster: Cluster, namespace: str, action: str, *verb: str) -> None:
    """The action through Argo CD's Lua on LUA, the CLI's verb on CLI; the same change."""
    lua_before = live(cluster, namespace, LUA)
    cli_before = live(cluster, namespace, CLI)
    argocd_action(cluster, namespace, LUA, action)
    cli(cluster, namespace, CLI, *(verb or (action,)))
    lua_change = what_changed(lua_before, live(cluster, namespace, LUA))
    cli_change = what_changed(cli_before, live(cluster, namespace, CLI))
    key = PAUSED if action in ("pause", "resume") else COMMAND
    for change in (lua_change, cli_change):
        assert set(change) == {"metadata"}, change
        assert set(change["metadata"]) == {"annotations"}, change
        assert set(change["metadata"]["annotations"]) == {key}, change
    lua_value = lua_change["metadata"]["annotations"][key]
    cli_value = cli_change["metadata"]["annotations"][key]
    assert value_form(lua_value) == value_form(cli_value), (lua_value, cli_value)
    if key == COMMAND:
        assert value_form(lua_value) == f"{action}@<ns>", lua_value


def both(
    cluster: Cluster, namespace: str, check: Callable[[dict[str, Any]], bool], what: str
) -> list[dict[str, Any]]:
    return [wait_status(cluster, namespace, n, check, what) for n in (LUA, CLI)]


def health_of(cluster: Cluster, namespace: str, name: str, capture: str = "") -> str:
    """The Argo CD health of the live object. With CANARIUM_ARGOCD_CAPTURE=DIR, the object is
    also written to DIR/<health>_<capture>.yaml: how the testdata's live_* files were made."""
    obj = live(cluster, namespace, name)
    health = str(argocd_lua.health(obj)["status"])
    folder = os.environ.get("CANARIUM_ARGOCD_CAPTURE")
    if folder and capture:
        obj["metadata"].pop("managedFields", None)
        path = Path(folder) / f"{health.lower()}_{capture}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False, width=100))
    return health


def test_every_argocd_action_changes_what_the_cli_changes_and_is_carried_out(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    def release(version: str) -> None:
        for name in (LUA, CLI):
            cluster.apply(manifest(name, version), namespace)

    def at_gate(version: str) -> None:
        both(
            cluster,
            namespace,
            lambda s: (
                s.get("phase") == "Paused"
                and s.get("pauseReason") == PAUSE_STEP
                and (s.get("canary") or {}).get("modelVersion") == version
            ),
            f"{version} waits at the pause step",
        )

    def healthy(version: str) -> None:
        both(
            cluster,
            namespace,
            lambda s: (
                s.get("phase") == "Healthy"
                and s["stable"]["modelVersion"] == version
                and "canary" not in s
            ),
            f"Healthy with {version}",
        )

    release("1.0.0")
    healthy("1.0.0")
    assert health_of(cluster, namespace, LUA, "live") == "Healthy"

    release("2.0.0")
    at_gate("2.0.0")
    assert health_of(cluster, namespace, LUA, "livePauseStep") == "Suspended"

    # pause: the gate is now held by a person; resume: back to waiting for promote.
    act_on_both(cluster, namespace, "pause")
    both(cluster, namespace, lambda s: s.get("pauseReason") == BY_PERSON, "paused by a person")
    assert health_of(cluster, namespace, LUA, "liveUserPause") == "Suspended"
    flags = argocd_lua.discover_actions(live(cluster, namespace, LUA))
    assert flags["resume"]["disabled"] is False
    assert flags["promote"]["disabled"] is True, "a promote while paused would be used up"
    act_on_both(cluster, namespace, "resume")
    at_gate("2.0.0")

    act_on_both(cluster, namespace, "promote")
    healthy("2.0.0")

    release("3.0.0")
    at_gate("3.0.0")
    act_on_both(cluster, namespace, "promote-full", "promote", "--full")
    healthy("3.0.0")

    release("4.0.0")
    at_gate("4.0.0")
    act_on_both(cluster, namespace, "abort")
    for obj in both(
        cluster,
        namespace,
        lambda s: (
            s.get("phase") == "Degraded" and (s.get("aborted") or {}).get("cause") == "Aborted"
        ),
        "aborted: traffic back on 3.0.0",
    ):
        assert obj["status"]["stable"]["modelVersion"] == "3.0.0"
        assert obj["status"]["history"][0]["outcome"] == "Aborted"
    assert health_of(cluster, namespace, LUA, "liveAborted") == "Degraded"
    flags = argocd_lua.discover_actions(live(cluster, namespace, LUA))
    assert flags["retry"]["disabled"] is False
    assert flags["promote"]["disabled"] is True

    act_on_both(cluster, namespace, "retry")
    at_gate("4.0.0")
    assert health_of(cluster, namespace, LUA) == "Suspended"

    # Each command was carried out once: the operator recorded the Lua's value as its last.
    final = live(cluster, namespace, LUA)
    assert final["status"]["lastCommand"] == final["metadata"]["annotations"][COMMAND]


def test_a_second_promote_from_argocd_is_carried_out_too(
    cluster: Cluster, namespace: str, operator: InstalledOperator
) -> None:
    """Each promote through the Lua is a new command to the operator, even when Argo CD runs
    the second within the same second as the first (os.time() has seconds only: the value then
    takes the next nanosecond, tests/unit/test_argocd_lua.py)."""
    cluster.apply(manifest(LUA, "1.0.0"), namespace)
    wait_status(cluster, namespace, LUA, lambda s: s.get("phase") == "Healthy", "Healthy")
    gate: dict[str, Any] = {"pause": {}}
    two_gates = {"steps": [{"setWeight": 50}, gate, {"setWeight": 75}, gate, {"setWeight": 100}]}
    obj = manifest(LUA, "2.0.0")
    obj["spec"]["rollout"] = {"policy": two_gates}
    cluster.apply(obj, namespace)
    wait_status(cluster, namespace, LUA, lambda s: s.get("currentStep") == 1, "at the first gate")
    first = argocd_action(cluster, namespace, LUA, "promote")
    wait_status(cluster, namespace, LUA, lambda s: s.get("currentStep") == 3, "at the second gate")
    second = argocd_action(cluster, namespace, LUA, "promote")
    assert first != second
    wait_status(
        cluster,
        namespace,
        LUA,
        lambda s: s.get("phase") == "Healthy" and s["stable"]["modelVersion"] == "2.0.0",
        "promoted",
    )
