"""`kubectl canarium status`: a ModelDeployment's rollout as text. Pure: object in, text out."""

from __future__ import annotations

from typing import Any

from canarium.api import ModelDeployment, RolloutPolicySpec


def _revision(label: str, rev: dict[str, Any] | None) -> str:
    if not rev:
        return f"{label:<12}-"
    effective = rev.get("effectiveWeight")
    eff = f"{effective:.2f}%" if isinstance(effective, int | float) else "-"
    return (
        f"{label:<12}{rev.get('name', '-')}  model {rev.get('modelVersion', '-')}  "
        f"{rev.get('readyReplicas', 0)}/{rev.get('replicas', 0)} ready  "
        f"weight {rev.get('weight', 0)}%  effective {eff}"
    )


def _steps(policy: RolloutPolicySpec, current: int | None, phase: str) -> list[str]:
    lines = []
    for i, step in enumerate(policy.steps):
        if step.set_weight is not None:
            what = f"setWeight {step.set_weight}"
        elif step.pause is not None and step.pause.duration:
            what = f"pause {step.pause.duration}"
        else:
            what = "pause (until promoted)"
        if current is None:
            mark = " "
        elif i < current:
            mark = "✔"
        elif i == current:
            mark = "⏸" if phase == "Paused" else "▶"
        else:
            mark = "·"
        lines.append(f"  {mark} {i + 1}. {what}")
    return lines


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def _evidence(e: dict[str, Any]) -> str:
    """One statistical check's evidence over the rollout: the counts of both revisions, the
    ratio with its confidence interval, and what it has shown."""
    decision = {"Failed": "shown worse", "Passed": "shown within tolerance"}.get(
        e.get("decision") or "", "not shown either way"
    )
    if e.get("looks"):
        return f"  {e['check']:<18}{e['looks']} intervals tested, {decision}"
    counts = (
        f"canary {_number(e.get('canaryEvents', 0))}/{_number(e.get('canaryRequests', 0))}, "
        f"stable {_number(e.get('stableEvents', 0))}/{_number(e.get('stableRequests', 0))}"
    )
    low, high = e.get("ratioLower"), e.get("ratioUpper")
    interval = (
        f"[{'0' if low is None else _number(low)}, {'inf' if high is None else _number(high)}]"
    )
    return (
        f"  {e['check']:<18}{counts}; ratio {_number(e.get('ratio'))} {interval} "
        f"(tolerated {_number(e.get('maxRatio'))}): {decision}"
    )


def _analysis(analysis: dict[str, Any] | None, policy: RolloutPolicySpec | None) -> list[str]:
    """The analysis: its intervals, the latest measurement of each check, the evidence."""
    if not analysis:
        return []
    limit = policy.analysis.failure_limit if policy and policy.analysis else "-"
    out = [
        f"{'Analysis:':<12}{analysis.get('intervals', 0)} intervals, "
        f"failures {analysis.get('failures', 0)}/{limit}, "
        f"inconclusive in a row {analysis.get('consecutiveInconclusive', 0)}, "
        f"last {analysis.get('lastVerdict', '-')} at {analysis.get('lastRunTime', '-')}"
    ]
    for m in analysis.get("measurements", []):
        value = m.get("value")
        shown = f"{value:.4g}" if isinstance(value, int | float) else "no data"
        reason = f"  {m['reason']}" if m.get("reason") else ""
        out.append(
            f"  {m['check']:<18}{shown:>10}  {m.get('threshold', ''):<12}{m['verdict']}{reason}"
        )
    evidence = analysis.get("evidence") or []
    if evidence:
        out.append("Evidence:")
        out.extend(_evidence(e) for e in evidence)
    return out


def render_status(obj: dict[str, Any], policy: RolloutPolicySpec | None) -> str:
    """The readable view of one ModelDeployment (and its policy, when it has one)."""
    mdep = ModelDeployment.model_validate(obj)
    status: dict[str, Any] = obj.get("status") or {}
    meta = mdep.metadata
    phase = status.get("phase", "Pending")
    out = [
        f"{'Name:':<12}{meta.name} (namespace {meta.namespace})",
        f"{'Model:':<12}{mdep.spec.model.version}  {mdep.spec.model.uri}",
        f"{'Phase:':<12}{phase}" + (f"  {status['message']}" if status.get("message") else ""),
    ]
    if status.get("pauseReason"):
        out.append(f"{'Paused:':<12}{status['pauseReason']}")
    out.append(_revision("Stable:", status.get("stable")))
    if status.get("canary"):
        out.append(_revision("Canary:", status.get("canary")))
    if status.get("previous"):
        out.append(_revision("Previous:", status.get("previous")))
    if status.get("bakeUntil"):
        out.append(f"{'Bake until:':<12}{status['bakeUntil']}")
    if policy is not None:
        out.append("Steps:")
        current = status.get("currentStep") if status.get("canary") else None
        out.extend(_steps(policy, current, phase))
    out.extend(_analysis(status.get("analysis"), policy))
    history = status.get("history") or []
    if history:
        out.append("History:")
        for h in history[:5]:
            out.append(
                f"  {h['time']}  {h['outcome']:<10} {h['revision']} "
                f"(model {h.get('modelVersion', '-')}) {h.get('reason', '')}"
            )
    conditions = status.get("conditions") or []
    if conditions:
        out.append(
            f"{'Conditions:':<12}"
            + "  ".join(f"{c['type']}={c['status']} ({c['reason']})" for c in conditions)
        )
    if status.get("endpoint"):
        out.append(f"{'Endpoint:':<12}{status['endpoint']}")
    return "\n".join(out)
