"""The prometheus provider: instant queries against a Prometheus-compatible HTTP API
(`/api/v1/query`), one set per revision, over the analysis window `[<interval>s]`.

Every query is filtered by the labels the model server puts on its metrics (`namespace`,
`deployment`, `revision` = the revision's name) and aggregated over pods, so the answers are
already window counts (`increase`) and no baseline is needed. Prometheus needs at least two
scrapes of a pod inside the window for `increase` to see it: keep the scrape interval well
below the analysis interval.

No data is not failure: a query that answers nothing gives empty counts, a revision with no
series at all gives None, and an HTTP or query error is reported in `WindowResult.errors` with
that revision's metrics None; all of these are judged Inconclusive.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp
from canarium_serving import contract
from canarium_serving import metrics_contract as mc

from canarium.analysis.providers.base import ProviderContext
from canarium.analysis.samples import AnalysisTarget, Buckets, RevisionMetrics, WindowResult
from canarium.api import AnalysisSpec
from canarium.api import PrometheusProvider as PrometheusSpec

log = logging.getLogger(__name__)

TYPE = "prometheus"


class PrometheusError(Exception):
    """A query failed (HTTP error, Prometheus error answer, unreadable answer)."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selector(namespace: str, deployment: str, revision: str, extra: str = "") -> str:
    """The label matchers of one revision's series, e.g.
    `{namespace="ml",deployment="iris",revision="iris-5d8f7c"}`."""
    matchers = (
        f'{mc.LABEL_NAMESPACE}="{_escape(namespace)}",'
        f'{mc.LABEL_DEPLOYMENT}="{_escape(deployment)}",'
        f'{mc.LABEL_REVISION}="{_escape(revision)}"'
    )
    return "{" + matchers + (f",{extra}" if extra else "") + "}"


def window_of(interval_seconds: float) -> str:
    """The range of the window queries, in whole seconds (at least 1s)."""
    return f"{max(1, round(interval_seconds))}s"


def revision_queries(sel: str, window: str) -> dict[str, str]:
    """The PromQL queries that make one revision's `RevisionMetrics`, by name."""

    def increase(family: mc.Family, by: str) -> str:
        return f"sum by ({by}) (increase({family.series}{sel}[{window}]))"

    def reference(family: mc.Family) -> str:
        by = ", ".join(family.labels)
        return f"max by ({by}) (last_over_time({family.series}{sel}[{window}]))"

    return {
        "requests": increase(mc.REQUESTS, mc.LABEL_CODE),
        "latency": increase(mc.REQUEST_DURATION, mc.LABEL_LE),
        "classes": increase(mc.PREDICTION_CLASS, f"{mc.LABEL_OUTPUT}, {mc.LABEL_CLASS}"),
        "values": increase(mc.PREDICTION_VALUE, f"{mc.LABEL_OUTPUT}, {mc.LABEL_LE}"),
        "features": increase(mc.INPUT_FEATURE_VALUE, f"{mc.LABEL_FEATURE}, {mc.LABEL_LE}"),
        "ref_inputs": reference(mc.REFERENCE_INPUT_FEATURE_RATIO),
        "ref_classes": reference(mc.REFERENCE_PREDICTION_CLASS_RATIO),
        "ref_values": reference(mc.REFERENCE_PREDICTION_VALUE_RATIO),
        # One series per scraped pod (they differ by the target's instance/pod labels).
        "pods": f"count(last_over_time({mc.MODEL_READY.series}{sel}[{window}]))",
    }


def fill_template(query: str, *, namespace: str, deployment: str, revision: str, role: str) -> str:
    """A custom check's query with {{namespace}}, {{deployment}}, {{revision}} and {{role}}
    replaced (the revision's name; role `canary` or `stable`)."""
    for key, value in (
        ("namespace", namespace),
        ("deployment", deployment),
        ("revision", revision),
        ("role", role),
    ):
        query = query.replace("{{" + key + "}}", value)
    return query


Vector = list[tuple[dict[str, str], float]]


def _number(raw: Any) -> float:
    try:
        return float(raw)  # Prometheus writes "NaN", "+Inf", "-Inf", "1.5"
    except (TypeError, ValueError):
        raise PrometheusError(f"unreadable sample value {raw!r}") from None


def parse_answer(answer: Any) -> Vector:
    """The samples of an instant query's JSON answer: vector (one per series) or scalar (one,
    without labels). Raises PrometheusError for an error answer or another result type."""
    if not isinstance(answer, dict):
        raise PrometheusError("the answer is not a JSON object")
    if answer.get("status") != "success":
        raise PrometheusError(
            f"{answer.get('errorType', 'error')}: {answer.get('error', 'query failed')}"
        )
    data = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list):
        return [
            (dict(item.get("metric") or {}), _number((item.get("value") or [0, "NaN"])[1]))
            for item in result
        ]
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [({}, _number(result[1]))]
    raise PrometheusError(f"expected a vector or a scalar, got {kind!r}")


def build_metrics(results: dict[str, Vector]) -> RevisionMetrics | None:
    """`RevisionMetrics` from the answers of `revision_queries` (None when there is no series
    of the revision at all)."""
    if not any(results.values()):
        return None
    requests = errors = 0.0
    for labels, value in results.get("requests", []):
        if math.isnan(value):
            continue
        requests += value
        if not labels.get(mc.LABEL_CODE, "").startswith("2"):
            errors += value

    def keyed(name: str, first: str, second: str) -> dict[tuple[str, str], float]:
        return {
            (labels.get(first, ""), labels.get(second, "")): value
            for labels, value in results.get(name, [])
            if not math.isnan(value)
        }

    def histograms(name: str, key: str) -> dict[str, Buckets]:
        out: dict[str, Buckets] = {}
        for labels, value in results.get(name, []):
            if mc.LABEL_LE in labels and not math.isnan(value):
                out.setdefault(labels.get(key, ""), {})[float(labels[mc.LABEL_LE])] = value
        return out

    latency: Buckets = {
        float(labels[mc.LABEL_LE]): value
        for labels, value in results.get("latency", [])
        if mc.LABEL_LE in labels and not math.isnan(value)
    }
    pods = results.get("pods") or []
    return RevisionMetrics(
        requests=requests,
        errors=errors,
        latency_buckets=latency,
        prediction_classes=keyed("classes", mc.LABEL_OUTPUT, mc.LABEL_CLASS),
        prediction_value_buckets=histograms("values", mc.LABEL_OUTPUT),
        input_feature_buckets=histograms("features", mc.LABEL_FEATURE),
        reference_input_ratios=histograms("ref_inputs", mc.LABEL_FEATURE),
        reference_prediction_class_ratios=keyed("ref_classes", mc.LABEL_OUTPUT, mc.LABEL_CLASS),
        reference_prediction_value_ratios=histograms("ref_values", mc.LABEL_OUTPUT),
        pods=int(pods[0][1]) if pods and math.isfinite(pods[0][1]) else 0,
    )


class PrometheusProvider:
    """Measure revisions with instant queries to a Prometheus HTTP API. Stateless: `baseline`
    and `forget` do nothing."""

    runs_custom_checks = True

    def __init__(self, spec: PrometheusSpec, *, timeout: float = 10.0) -> None:
        self.address = spec.address.rstrip("/")
        self.headers = {h.name: h.value for h in spec.headers}
        self.timeout = timeout

    # --- the Provider interface --------------------------------------------------------------
    async def measure(self, target: AnalysisTarget) -> WindowResult:
        errors: list[str] = []
        window = window_of(target.interval_seconds)
        at = time.time()  # one evaluation time for every query: consistent extrapolation
        async with self._session() as session:
            canary, stable = await asyncio.gather(
                self._revision(session, target, target.canary_revision_name, window, at, errors),
                self._revision(session, target, target.stable_revision_name, window, at, errors),
            )
        return WindowResult(canary=canary, stable=stable, errors=errors)

    async def baseline(self, target: AnalysisTarget) -> None:
        """Nothing to do: Prometheus keeps the history."""

    def forget(self, namespace: str, deployment: str) -> None:
        """Nothing to do: no state is kept."""

    async def custom_values(
        self, analysis: AnalysisSpec, target: AnalysisTarget
    ) -> dict[str, float | None]:
        """Each custom check's value for the canary (None: no data, or the query failed; the
        reason is logged). A query must answer one number: a scalar or a one-series vector."""
        checks = analysis.checks.custom
        if not checks:
            return {}
        async with self._session() as session:
            values = await asyncio.gather(
                *(
                    self._custom(
                        session,
                        fill_template(
                            check.query,
                            namespace=target.namespace,
                            deployment=target.deployment,
                            revision=target.canary_revision_name,
                            role=contract.ROLE_CANARY,
                        ),
                        f"{target.namespace}/{target.deployment} check {check.name}",
                    )
                    for check in checks
                )
            )
        return {check.name: value for check, value in zip(checks, values, strict=True)}

    # --- internals ---------------------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )

    async def query(
        self, session: aiohttp.ClientSession, promql: str, at: float | None = None
    ) -> Vector:
        """Run one instant query (at time `at`, default now); PrometheusError on any failure."""
        url = f"{self.address}/api/v1/query"
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            async with session.get(url, params=params) as response:
                body = await response.text()
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                if response.status >= 400 and not (
                    isinstance(answer, dict) and answer.get("status") == "error"
                ):
                    raise PrometheusError(f"HTTP {response.status}: {body[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusError(f"{url}: {type(exc).__name__}: {exc}") from None
        return parse_answer(answer)

    async def _revision(
        self,
        session: aiohttp.ClientSession,
        target: AnalysisTarget,
        revision: str | None,
        window: str,
        at: float,
        errors: list[str],
    ) -> RevisionMetrics | None:
        if not revision:
            return None
        queries = revision_queries(selector(target.namespace, target.deployment, revision), window)
        answers = await asyncio.gather(
            *(self.query(session, q, at) for q in queries.values()), return_exceptions=True
        )
        results: dict[str, Vector] = {}
        for (name, _), answer in zip(queries.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, PrometheusError):
                    raise answer
                errors.append(f"prometheus query {name} of {revision}: {answer}"[:512])
                return None
            results[name] = answer
        return build_metrics(results)

    async def _custom(self, session: aiohttp.ClientSession, promql: str, what: str) -> float | None:
        try:
            samples = await self.query(session, promql)
        except PrometheusError as exc:
            log.warning("%s: %s", what, exc)
            return None
        if len(samples) != 1:
            if samples:
                log.warning("%s: %d series, a custom check needs one number", what, len(samples))
            return None
        value = samples[0][1]
        return None if math.isnan(value) else value


def new(settings: PrometheusSpec, context: ProviderContext) -> PrometheusProvider:
    """The registry's factory: one provider per address and headers."""
    return PrometheusProvider(settings)
