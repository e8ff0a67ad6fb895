"""The Argo CD health check and actions of manifests/argocd, run as Argo CD runs them.

The Lua runs in gopher-lua (Lua 5.1, Argo CD's interpreter) through hack/argocd-lua, which
re-implements what Argo CD's util/lua does around it (libraries, object conversion, result
decoding), built by
hack/argocd-lua.sh on first use. By default the scripts get the libraries Argo CD gives scripts
from argocd-cm (base, table, package and a safe os: no string or math library), the stricter
case; `open_libs=True` gives every library, as Argo CD's built-in health checks get.

`apply_patch` and `merge_patch` are what Argo CD's API server does with an action's result:
a JSON merge patch from the live object to the result, status apart.

Each kind has its folder, canarium.dev/<kind>/ (health.lua, actions/); the functions taking an
object pick the scripts of its `kind` (ModelDeployment when it has none).

`python -m tests.argocd_lua` writes manifests/argocd/argocd-cm-actions.yaml (ModelDeployment) and
argocd-cm-actions-modelretraining.yaml (ModelRetraining), the actions as argocd-cm wants them,
from the Lua files.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARGOCD = REPO / "manifests" / "argocd"
DEFAULT_KIND = "ModelDeployment"
SCRIPTS = ARGOCD / "canarium.dev" / DEFAULT_KIND
HEALTH_LUA = SCRIPTS / "health.lua"
DISCOVERY_LUA = SCRIPTS / "actions" / "discovery.lua"
CM_ACTIONS = ARGOCD / "argocd-cm-actions.yaml"
# The actions Argo CD offers, each the CLI verb of the same name (`kubectl canarium VERB`).
ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")
# ModelRetraining's: `kubectl canarium retrain NAME` [--approve | --discard].
RETRAINING_ACTIONS = ("retrain", "approve", "discard")
# Per kind: its actions, in the order argocd-cm lists them, and the file argocd-cm gets them from.
KIND_ACTIONS: dict[str, tuple[str, ...]] = {
    DEFAULT_KIND: ACTIONS,
    "ModelRetraining": RETRAINING_ACTIONS,
}
KIND_CM_ACTIONS: dict[str, Path] = {
    DEFAULT_KIND: CM_ACTIONS,
    "ModelRetraining": ARGOCD / "argocd-cm-actions-modelretraining.yaml",
}


def scripts(kind: str = DEFAULT_KIND) -> Path:
    """The folder of a kind's health check and actions (canarium.dev/<kind>)."""
    if kind not in KIND_ACTIONS:
        raise ValueError(f"no Argo CD scripts for kind {kind!r}: one of {', '.join(KIND_ACTIONS)}")
    return ARGOCD / "canarium.dev" / kind


def health_lua(kind: str = DEFAULT_KIND) -> Path:
    return scripts(kind) / "health.lua"


def discovery_lua(kind: str = DEFAULT_KIND) -> Path:
    return scripts(kind) / "actions" / "discovery.lua"


def kind_of(obj: dict[str, Any]) -> str:
    kind: str = obj.get("kind") or DEFAULT_KIND
    return kind


class LuaError(RuntimeError):
    """The script failed in the interpreter, or returned what Argo CD refuses."""


@functools.cache
def runner() -> Path:
    """The built runner (hack/argocd-lua.sh builds it when missing or stale)."""
    proc = subprocess.run(
        [str(REPO / "hack" / "argocd-lua.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/argocd-lua.sh failed to build the Lua runner:\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def run(mode: str, script: Path, obj: dict[str, Any], *, open_libs: bool = False) -> Any:
    """Run `script` in `mode` (health, discovery, action) against `obj`; its decoded result."""
    argv = [str(runner())] + (["-open-libs"] if open_libs else []) + [mode, str(script)]
    proc = subprocess.run(
        argv, input=json.dumps(obj), capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        where = script.relative_to(REPO) if script.is_relative_to(REPO) else script
        raise LuaError(f"{where}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def health(obj: dict[str, Any], *, open_libs: bool = False) -> dict[str, Any]:
    """Argo CD's health of a ModelDeployment or ModelRetraining: {"status": ..., "message": ...}
    (message absent when empty, as Argo CD's HealthStatus omits it)."""
    script = health_lua(kind_of(obj))
    result: dict[str, Any] = run("health", script, obj, open_libs=open_libs)
    return result


def discover_actions(obj: dict[str, Any], *, open_libs: bool = False) -> dict[str, dict[str, Any]]:
    """The actions Argo CD offers on `obj`: name -> {"name", "disabled", ...}."""
    script = discovery_lua(kind_of(obj))
    result: dict[str, dict[str, Any]] = run("discovery", script, obj, open_libs=open_libs)
    return result


def action_script(action: str, kind: str = DEFAULT_KIND) -> Path:
    actions = KIND_ACTIONS.get(kind, ())
    if action not in actions:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(actions)}")
    return scripts(kind) / "actions" / action / "action.lua"


def impacted_resources(obj: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The action's result as Argo CD reads it: [{"operation": "patch"|"create", "resource"}]."""
    result: list[dict[str, Any]] = run("action", action_script(action, kind_of(obj)), obj)
    return result


def run_action(obj: dict[str, Any], action: str) -> dict[str, Any]:
    """The object as the action leaves it (the one resource it patches: this object)."""
    resources = impacted_resources(obj, action)
    if len(resources) != 1 or resources[0]["operation"] != "patch":
        raise LuaError(f"action {action} should patch the object only, returned {resources}")
    patched: dict[str, Any] = resources[0]["resource"]
    for key in ("apiVersion", "kind"):
        if patched.get(key) != obj.get(key):
            raise LuaError(f"action {action} changed {key}")
    for key in ("name", "namespace"):
        if patched.get("metadata", {}).get(key) != obj.get("metadata", {}).get(key):
            raise LuaError(f"action {action} changed metadata.{key}")
    return patched


def merge_patch(live: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `live` into `new`, as Argo CD computes it
    (evanphx/json-patch CreateMergePatch): objects key by key, a removed key as null, anything
    else whole."""
    if not isinstance(live, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in live.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in live:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(live[key], dict):
            sub = merge_patch(live[key], value)
            if sub:
                patch[key] = sub
        elif value != live[key]:
            patch[key] = value
    return patch


def split_status(patch: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Argo CD's splitStatusPatch: (the patch without status, the status-only patch), None
    where there is nothing; the status part goes to the status subresource."""
    rest = {k: v for k, v in patch.items() if k != "status"}
    status = {"status": patch["status"]} if "status" in patch else None
    return rest or None, status


# --- argocd-cm --------------------------------------------------------------------------------
def _block(text: str, indent: int) -> str:
    pad = " " * indent
    return "".join(pad + line if line.strip() else "\n" for line in text.splitlines(True))


def cm_actions(kind: str = DEFAULT_KIND) -> str:
    """The value of argocd-cm's resource.customizations.actions.canarium.dev_<kind> (Argo CD's
    ResourceActions: discovery.lua and one definition per action.lua)."""
    parts = [
        f"# Generated from canarium.dev/{kind}/actions/ by `python -m tests.argocd_lua`\n",
        "# (make argocd-cm): edit the .lua files, not this.\n",
        "discovery.lua: |\n",
        _block(discovery_lua(kind).read_text(), 2),
        "definitions:\n",
    ]
    for action in KIND_ACTIONS[kind]:
        parts += [f"  - name: {action}\n", "    action.lua: |\n"]
        parts.append(_block(action_script(action, kind).read_text(), 6))
    return "".join(parts)


def main() -> int:
    for kind, path in KIND_CM_ACTIONS.items():
        path.write_text(cm_actions(kind))
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
