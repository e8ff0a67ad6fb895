"""`kubectl canarium status` and `list`: ModelDeployments (and `status mretrain/NAME`: a
ModelRetraining) as text. Pure: objects in, text out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from canarium.api import ModelDeployment, RolloutPolicySpec
from canarium.api.modelretraining import METRICS_LOWER_IS_BETTER, ModelRetraining, RetrainingRun
from canarium.retraining import MAX_BACKOFF_DOUBLINGS


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


def _monitoring(status: dict[str, Any], mdep: ModelDeployment) -> list[str]:
    """spec.monitoring: the Drifted condition, the last window and its PSI per feature."""
    spec = mdep.spec.monitoring
    if spec is None:
        return []
    drifted = next((c for c in status.get("conditions") or [] if c["type"] == "Drifted"), None)
    state = f"Drifted={drifted['status']}" if drifted else "Drifted=Unknown"
    mon: dict[str, Any] = status.get("monitoring") or {}
    checks = [
        n
        for n, c in (("dataDrift", spec.data_drift), ("predictionDrift", spec.prediction_drift))
        if c
    ]
    lines = [
        f"{'Monitoring:':<12}{state}  every {spec.interval}, {'+'.join(checks)}, "
        f"{spec.windows} window(s) in a row"
    ]
    if not mon:
        lines.append("  no window yet")
        return lines
    if not mon.get("windowStart") and status.get("canary"):
        lines.append("  paused while the rollout runs")
    if mon.get("lastWindowTime"):
        lines.append(
            f"  last window {mon['lastWindowTime']}: {mon.get('lastVerdict', '-')} "
            f"({mon.get('consecutiveDrifted', 0)} drifted in a row, {mon.get('windows', 0)} "
            f"judged) {mon.get('message', '')}".rstrip()
        )
    for f in (mon.get("findings") or [])[:8]:
        mark = "!" if f["psi"] > f["allowed"] else " "
        lines.append(
            f"  {mark} {f['kind']:<7}{f['name']:<20} PSI {_number(f['psi'])} "
            f"(at most {_number(f['allowed'])}, {_number(f['observations'])} observations)"
        )
    return lines


def _retrained(mdep: ModelDeployment, retraining: dict[str, Any] | None) -> list[str]:
    """status.retrained: the model is a ModelRetraining's candidate, not spec.model; how to
    keep it (pin it in Git) or go back. `retraining` (that ModelRetraining, when it could be
    read) gives the candidate's sha256."""
    retrained = mdep.status.retrained
    if retrained is None:
        return []
    candidate = ((retraining or {}).get("status") or {}).get("candidate") or {}
    sha256 = None
    if candidate.get("run") == retrained.run:
        sha256 = (candidate.get("model") or {}).get("sha256")
    name = retrained.retraining
    pin = f"set spec.model in Git to uri {retrained.model_uri}, version {retrained.model_version}"
    pin += (
        f", sha256 {sha256}"
        if sha256
        else f" and its sha256 (kubectl canarium status mretrain/{name})"
    )
    return [
        f"{'Retrained:':<12}the model is {retrained.model_version}, a retrained candidate (run "
        f"{retrained.run} of modelretraining {name}), in place of spec.model "
        f"{retrained.replaces_version} from Git",
        f"  pin it:   {pin}",
        f"  revert:   kubectl canarium retrain {name} --discard (back to "
        f"{retrained.replaces_version})",
    ]


def render_status(
    obj: dict[str, Any],
    policy: RolloutPolicySpec | None,
    retraining: dict[str, Any] | None = None,
) -> str:
    """The readable view of one ModelDeployment (and its policy, when it has one; and the
    ModelRetraining whose candidate it serves, when it serves one and that could be read)."""
    mdep = ModelDeployment.model_validate(obj)
    status: dict[str, Any] = obj.get("status") or {}
    meta = mdep.metadata
    phase = status.get("phase", "Pending")
    out = [
        f"{'Name:':<12}{meta.name} (namespace {meta.namespace})",
        f"{'Model:':<12}{mdep.spec.model.version}  {mdep.spec.model.uri}",
        *_retrained(mdep, retraining),
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
    out.extend(_monitoring(status, mdep))
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
    if status.get("grpcEndpoint"):
        out.append(f"{'gRPC:':<12}{status['grpcEndpoint']}")
    return "\n".join(out)


# --- `kubectl canarium status mretrain/NAME`: a ModelRetraining ------------------------------


def _time(when: datetime | None) -> str:
    """A time as the API server writes it (RFC 3339, UTC, seconds)."""
    if when is None:
        return "-"
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _triggers(retraining: ModelRetraining) -> str:
    spec, status = retraining.spec, retraining.status
    triggers = []
    if spec.triggers.on_drift:
        triggers.append("onDrift")
    if spec.triggers.schedule is not None:
        times = [f"next {_time(status.next_schedule_time)}"]
        if status.last_schedule_time is not None:
            times.append(f"last {_time(status.last_schedule_time)}")
        triggers.append(f"schedule {spec.triggers.schedule!r} (UTC; {', '.join(times)})")
    triggers.append(f"on request (kubectl canarium retrain {retraining.metadata.name})")
    return ", ".join(triggers)


def _cooldown(retraining: ModelRetraining) -> str:
    """The cooldown between a run and the next drift run, doubled by failures in a row."""
    spec, status = retraining.spec, retraining.status
    text = f"{spec.cooldown} after a run, before the next drift run"
    failures = status.consecutive_failures
    if failures:
        factor = 2 ** min(failures, MAX_BACKOFF_DOUBLINGS)  # as the operator backs off
        text += f" (x{factor}: {failures} failed run(s) in a row)"
    if status.cooldown_until is not None:
        text += f"; cooldown until {_time(status.cooldown_until)}"
    return text


def _validation(retraining: ModelRetraining) -> str:
    """What a candidate must score on its held-out data."""
    v = retraining.spec.validation
    wants = []
    if v.minimum is not None:
        bound = "at most" if v.metric in METRICS_LOWER_IS_BETTER else "at least"
        wants.append(f"{bound} {v.minimum:g}")
    if v.not_worse_than_base:
        wants.append(f"not worse than the model it replaces (tolerance {v.tolerance:g})")
    return f"held-out {v.metric} " + (", ".join(wants) or "reported (no bound)")


def _candidate(retraining: ModelRetraining) -> list[str]:
    candidate = retraining.status.candidate
    if candidate is None:
        return [f"{'Candidate:':<12}none"]
    name = retraining.metadata.name
    if candidate.approved:
        state = f"approved (revert: kubectl canarium retrain {name} --discard)"
    else:
        state = f"awaiting approval (kubectl canarium retrain {name} --approve, or --discard)"
    model, replaces = candidate.model, candidate.replaces
    return [
        f"{'Candidate:':<12}{model.version} of run {candidate.run}, {state}",
        f"  model     {model.uri}" + (f"  sha256 {model.sha256}" if model.sha256 else ""),
        f"  replaces  spec.model {replaces.version}  {replaces.uri}",
        f"  accepted  {_time(candidate.accepted_time)}",
    ]


def _run_row(run: RetrainingRun, metric: str) -> list[str]:
    value, base = run.metrics.get(metric), run.base_metrics.get(metric)
    score = "-" if value is None and base is None else f"{_number(value)} ({_number(base)})"
    return [
        run.name,
        run.trigger,
        run.phase,
        _time(run.start_time),
        run.model.version if run.model else "-",
        score,
        " ".join((run.message or "-").split()),
    ]


def render_retraining(obj: dict[str, Any]) -> str:
    """The readable view of one ModelRetraining: where it stands, its triggers and cooldown,
    its candidate and its runs, newest first, with the validation metric held out against the
    base model's on the same rows."""
    retraining = ModelRetraining.model_validate(obj)
    meta, spec, status = retraining.metadata, retraining.spec, retraining.status
    out = [
        f"{'Name:':<12}{meta.name} (namespace {meta.namespace})",
        f"{'Deployment:':<12}{spec.deployment_ref.name}",
        f"{'Phase:':<12}{status.phase or 'Pending'}"
        + (f"  {status.message}" if status.message else ""),
    ]
    if spec.suspend:
        out.append(f"{'Suspended:':<12}no new runs (spec.suspend); runs under way finish")
    out += [
        f"{'Triggers:':<12}{_triggers(retraining)}",
        f"{'Cooldown:':<12}{_cooldown(retraining)}",
        f"{'Validation:':<12}{_validation(retraining)}",
        f"{'Approval:':<12}{spec.approval}",
        *_candidate(retraining),
    ]
    runs = sorted(status.runs, key=lambda r: r.start_time, reverse=True)
    if runs:
        metric = spec.validation.metric
        score = f"{metric.upper()} (BASE)"  # held-out: the run's model (the base model's)
        header = ("NAME", "TRIGGER", "PHASE", "STARTED", "MODEL", score, "MESSAGE")
        out.append("Runs:")
        rows = table(header, (_run_row(run, metric) for run in runs))
        out.extend(f"  {line}" for line in rows.splitlines())
    else:
        out.append(f"{'Runs:':<12}none yet")
    if status.conditions:
        out.append(
            f"{'Conditions:':<12}"
            + "  ".join(f"{c.type}={c.status} ({c.reason})" for c in status.conditions)
        )
    return "\n".join(out)


# --- `kubectl canarium list`: one row per ModelDeployment, as `kubectl get` prints them ---


def _two(big: int, small: int, units: str) -> str:
    """`3h5m`, or `3h` when the smaller unit is zero."""
    return f"{big}{units[0]}{small}{units[1]}" if small else f"{big}{units[0]}"


def human_duration(seconds: float) -> str:
    """An age as kubectl prints it (k8s.io/apimachinery's duration.HumanDuration): 45s, 5m3s,
    42m, 3h5m, 20h, 3d4h, 120d, 2y30d, 9y."""
    s = int(seconds)
    minutes, hours = s // 60, s // 3600
    days, years = hours // 24, hours // (24 * 365)
    rules: list[tuple[bool, Callable[[], str]]] = [
        (s < -1, lambda: "<invalid>"),
        (s < 0, lambda: "0s"),
        (s < 120, lambda: f"{s}s"),
        (minutes < 10, lambda: _two(minutes, s % 60, "ms")),
        (minutes < 180, lambda: f"{minutes}m"),
        (hours < 8, lambda: _two(hours, minutes % 60, "hm")),
        (hours < 48, lambda: f"{hours}h"),
        (hours < 24 * 8, lambda: _two(days, hours % 24, "dh")),
        (hours < 24 * 365 * 2, lambda: f"{days}d"),
        (years < 8, lambda: _two(years, days % 365, "yd")),
    ]
    return next((text() for matches, text in rules if matches), f"{years}y")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl's tabwriter prints them."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


LIST_COLUMNS = ("NAME", "PHASE", "READY", "STABLE", "CANARY", "WEIGHT", "STEP", "AGE")


def _age(meta: dict[str, Any], now: datetime) -> str:
    created = meta.get("creationTimestamp")
    if not isinstance(created, str):
        return "<unknown>"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration((now - then).total_seconds())


def _percent(value: Any) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else "?"


def list_row(obj: dict[str, Any], steps: int | None, now: datetime) -> list[str]:
    """One ModelDeployment as a row of LIST_COLUMNS. STABLE and CANARY are model versions;
    WEIGHT is the canary's asked weight, followed by what its ready pods really deliver in
    parentheses when that differs (the replicas router); STEP is the current step out of the
    policy's (`steps`, when known)."""
    meta: dict[str, Any] = obj.get("metadata") or {}
    status: dict[str, Any] = obj.get("status") or {}
    stable: dict[str, Any] = status.get("stable") or {}
    canary: dict[str, Any] = status.get("canary") or {}
    weight = step = "-"
    if canary:
        weight = _percent(canary.get("weight"))
        effective = canary.get("effectiveWeight")
        if isinstance(effective, int | float) and effective != canary.get("weight"):
            weight += f" ({_percent(effective)})"
        current = status.get("currentStep")
        if isinstance(current, int):
            step = f"{current + 1}/{steps}" if steps else str(current + 1)
    return [
        str(meta.get("name", "")),
        str(status.get("phase") or "Pending"),
        str(status.get("ready") or "-"),
        str(stable.get("modelVersion") or "-"),
        str(canary.get("modelVersion") or "-"),
        weight,
        step,
        _age(meta, now),
    ]


def policy_steps(obj: dict[str, Any], policies: dict[tuple[str, str], int]) -> int | None:
    """How many steps a ModelDeployment's policy has: its inline policy's, or those of the
    RolloutPolicy it names (`policies`: (namespace, name) -> steps); None when unknown."""
    rollout = (obj.get("spec") or {}).get("rollout") or {}
    if isinstance(rollout.get("policy"), dict):
        return len(rollout["policy"].get("steps") or [])
    ref = (rollout.get("policyRef") or {}).get("name")
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    return policies.get((namespace, ref)) if ref else None


def render_list(
    items: Iterable[dict[str, Any]],
    policies: dict[tuple[str, str], int],
    now: datetime,
    *,
    all_namespaces: bool,
) -> str:
    """ModelDeployments as a table (with a NAMESPACE column across all namespaces), sorted by
    namespace and name as `kubectl get` sorts them."""
    ordered = sorted(
        items,
        key=lambda o: ((o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"]),
    )
    rows = []
    for obj in ordered:
        row = list_row(obj, policy_steps(obj, policies), now)
        if all_namespaces:
            row.insert(0, str(obj["metadata"].get("namespace", "")))
        rows.append(row)
    header = ("NAMESPACE", *LIST_COLUMNS) if all_namespaces else LIST_COLUMNS
    return table(header, rows)
