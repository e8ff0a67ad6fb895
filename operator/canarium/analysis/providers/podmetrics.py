"""The podMetrics provider: scrape the serving pods' /metrics through the API server's pod
proxy. No Prometheus needed; the operator's ServiceAccount needs `get` on pods/proxy and
`list` on pods (manifests/install/rbac.yaml).

A scrape gives cumulative counters, so the provider keeps the previous scrape of every pod of
every revision under analysis in memory and answers the counts since then (`samples.window`:
per-pod deltas, right when pods come, go or restart). The first `measure` of a revision has no
baseline and answers None (Inconclusive upstream); call `baseline` when the canary starts
getting traffic so the first interval already has data. After an operator restart the first
interval is inconclusive again. Call `forget` when a ModelDeployment's analyses end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from collections.abc import Iterable
from typing import Any

import aiohttp
from canarium_serving import contract
from canarium_serving import metrics_contract as mc
from prometheus_client.parser import text_string_to_metric_families

from canarium.analysis.providers.base import PodsClient, ProviderContext
from canarium.analysis.samples import (
    AnalysisTarget,
    Buckets,
    PodSample,
    RevisionMetrics,
    WindowResult,
    window,
)
from canarium.api import AnalysisSpec
from canarium.api import PodMetricsProvider as PodMetricsSettings

log = logging.getLogger(__name__)

TYPE = "podMetrics"

LABEL_DEPLOYMENT = "canarium.dev/deployment"  # the pod labels set by canarium.render
LABEL_REVISION = "canarium.dev/revision"


# ---------------------------------------------------------------------------------------------
# Parsing /metrics
# ---------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.requests = 0.0
        self.errors = 0.0
        self.latency: Buckets = {}
        self.classes: dict[tuple[str, str], float] = {}
        self.values: dict[str, Buckets] = {}
        self.features: dict[str, Buckets] = {}
        self.ref_inputs: dict[str, Buckets] = {}
        self.ref_classes: dict[tuple[str, str], float] = {}
        self.ref_values: dict[str, Buckets] = {}
        self.matched = False
        self.start_time: float | None = None

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        if name == mc.REQUESTS.series:
            self.requests += value
            if not labels.get(mc.LABEL_CODE, "").startswith("2"):
                self.errors += value
        elif name == mc.REQUEST_DURATION.series:
            self.latency[float(labels[mc.LABEL_LE])] = value
        elif name == mc.PREDICTION_CLASS.series:
            self.classes[(labels[mc.LABEL_OUTPUT], labels[mc.LABEL_CLASS])] = value
        elif name == mc.PREDICTION_VALUE.series:
            self.values.setdefault(labels[mc.LABEL_OUTPUT], {})[float(labels[mc.LABEL_LE])] = value
        elif name == mc.INPUT_FEATURE_VALUE.series:
            by_feature = self.features.setdefault(labels[mc.LABEL_FEATURE], {})
            by_feature[float(labels[mc.LABEL_LE])] = value
        elif name == mc.REFERENCE_INPUT_FEATURE_RATIO.series:
            by_feature = self.ref_inputs.setdefault(labels[mc.LABEL_FEATURE], {})
            by_feature[float(labels[mc.LABEL_LE])] = value
        elif name == mc.REFERENCE_PREDICTION_CLASS_RATIO.series:
            self.ref_classes[(labels[mc.LABEL_OUTPUT], labels[mc.LABEL_CLASS])] = value
        elif name == mc.REFERENCE_PREDICTION_VALUE_RATIO.series:
            by_output = self.ref_values.setdefault(labels[mc.LABEL_OUTPUT], {})
            by_output[float(labels[mc.LABEL_LE])] = value

    def build(self, pods: int) -> RevisionMetrics:
        return RevisionMetrics(
            requests=self.requests,
            errors=self.errors,
            latency_buckets=self.latency,
            prediction_classes=self.classes,
            prediction_value_buckets=self.values,
            input_feature_buckets=self.features,
            reference_input_ratios=self.ref_inputs,
            reference_prediction_class_ratios=self.ref_classes,
            reference_prediction_value_ratios=self.ref_values,
            pods=pods,
        )


def parse_metrics(
    text: str, *, deployment: str, namespace: str, revision: str, pod: str = ""
) -> PodSample | None:
    """A server's /metrics text as one pod's cumulative `PodSample`, keeping only the series
    labelled with this deployment, namespace and revision (the revision's name, as in the
    serving pod's CANARIUM_REVISION). None when no canarium series of that revision is there
    (a pod of another revision, or a server with other labels). Raises ValueError on text that
    is not the Prometheus text format."""
    builder = _Builder()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == "process_start_time_seconds":
                builder.start_time = value
                continue
            if not name.startswith(mc.PREFIX):
                continue
            if (
                labels.get(mc.LABEL_DEPLOYMENT) != deployment
                or labels.get(mc.LABEL_NAMESPACE) != namespace
                or labels.get(mc.LABEL_REVISION) != revision
            ):
                continue
            builder.matched = True
            if math.isnan(value):
                continue
            builder.add(name, labels, value)
    if not builder.matched:
        return None
    return PodSample(pod=pod, metrics=builder.build(pods=1), start_time=builder.start_time)


# ---------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name"))


class PodMetricsProvider:
    """Measure revisions by scraping their Ready pods' /metrics: at the pod IP (`via="pod-ip"`,
    what an operator inside the cluster does, like Prometheus; no RBAC needed) or through the
    API server's pod proxy (`via="api-proxy"`, for an operator run from outside the cluster).

    One instance serves every ModelDeployment (it bounds the concurrent scrapes and keeps the
    per-pod baselines); the provider registry hands out one per operator.
    """

    runs_custom_checks = False  # PromQL needs Prometheus

    def __init__(
        self,
        kube: PodsClient,
        *,
        scrape_timeout: float = 5.0,
        concurrency: int = 16,
        port: int = contract.HTTP_PORT,
        via: str = "api-proxy",
    ) -> None:
        if via not in ("pod-ip", "api-proxy"):
            raise ValueError(f"pod metrics via {via!r}: expected pod-ip or api-proxy")
        self.kube = kube
        self.via = via
        self._session: aiohttp.ClientSession | None = None
        self.scrape_timeout = scrape_timeout
        self.port = port
        self._limit = asyncio.Semaphore(concurrency)
        # (namespace, deployment) -> revision name -> pod key -> that pod's last good scrape.
        # Revision names repeat across namespaces (the same spec hashes the same).
        self._snapshots: dict[tuple[str, str], dict[str, dict[str, PodSample]]] = {}

    # --- the Provider interface --------------------------------------------------------------
    async def measure(self, target: AnalysisTarget) -> WindowResult:
        """The canary's and the stable revision's counts since the previous `measure` or
        `baseline` of each (None without a baseline: this call takes it)."""
        errors: list[str] = []
        canary, stable = await asyncio.gather(
            self._measure(target, target.canary_revision_hash, target.canary_revision_name, errors),
            self._measure(target, target.stable_revision_hash, target.stable_revision_name, errors),
        )
        return WindowResult(canary=canary, stable=stable, errors=errors)

    async def baseline(self, target: AnalysisTarget) -> None:
        """Snapshot both revisions now: the next `measure` answers the counts since then."""
        errors: list[str] = []
        await asyncio.gather(
            self._measure(
                target, target.canary_revision_hash, target.canary_revision_name, errors, True
            ),
            self._measure(
                target, target.stable_revision_hash, target.stable_revision_name, errors, True
            ),
        )
        for error in errors:
            log.warning("baseline of %s/%s: %s", target.namespace, target.deployment, error)

    def forget(self, namespace: str, deployment: str) -> None:
        """Drop the baselines of a ModelDeployment's revisions: its analyses ended."""
        self._snapshots.pop((namespace, deployment), None)

    async def custom_values(
        self, analysis: AnalysisSpec, target: AnalysisTarget
    ) -> dict[str, float | None]:
        """Custom (PromQL) checks need the prometheus provider: no values here."""
        return {}

    # --- internals ---------------------------------------------------------------------------
    async def _measure(
        self,
        target: AnalysisTarget,
        revision_hash: str | None,
        revision_name: str | None,
        errors: list[str],
        reset: bool = False,
    ) -> RevisionMetrics | None:
        if not revision_hash or not revision_name:
            return None
        scraped = await self._scrape_revision(target, revision_hash, revision_name, errors)
        if scraped is None:
            return None
        listed, samples = scraped
        revisions = self._snapshots.setdefault((target.namespace, target.deployment), {})
        previous = None if reset else revisions.get(revision_name)
        # Pods still there but not scraped now (not Ready, scrape failed) keep their last
        # sample, so they do not count their whole lifetime once they are back.
        kept = revisions.get(revision_name) or {}
        snapshot = {k: kept[k] for k in listed if k in kept and k not in samples}
        snapshot.update(samples)
        revisions[revision_name] = snapshot
        if previous is None:
            return None
        return window(samples, previous)

    async def _scrape_revision(
        self, target: AnalysisTarget, revision_hash: str, revision_name: str, errors: list[str]
    ) -> tuple[set[str], dict[str, PodSample]] | None:
        """(keys of the revision's pods, samples of its Ready pods); None if listing failed."""
        ns = target.namespace
        selector = f"{LABEL_DEPLOYMENT}={target.deployment},{LABEL_REVISION}={revision_hash}"
        try:
            result = await self.kube.request(
                "GET", f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": selector}
            )
        except Exception as exc:
            errors.append(f"listing the pods of {revision_name}: {exc}")
            return None
        pods: list[dict[str, Any]] = (result or {}).get("items") or []
        ready = [p for p in pods if _is_ready(p)]
        scraped = await asyncio.gather(
            *(self._scrape_pod(target, revision_name, pod, errors) for pod in ready)
        )
        samples = {_pod_key(pod): s for pod, s in zip(ready, scraped, strict=True) if s}
        return {_pod_key(p) for p in pods}, samples

    async def _scrape_pod(
        self, target: AnalysisTarget, revision_name: str, pod: dict[str, Any], errors: list[str]
    ) -> PodSample | None:
        name = str((pod.get("metadata") or {}).get("name"))
        try:
            async with self._limit:
                text = await asyncio.wait_for(
                    self._fetch(target.namespace, pod, name), self.scrape_timeout + 1.0
                )
            sample = parse_metrics(
                text,
                deployment=target.deployment,
                namespace=target.namespace,
                revision=revision_name,
                pod=name,
            )
        except TimeoutError:
            errors.append(f"pod {name}: /metrics timed out after {self.scrape_timeout:g}s")
            return None
        except Exception as exc:
            errors.append(f"pod {name}: /metrics: {exc}"[:512])
            return None
        if sample is None:
            errors.append(
                f"pod {name}: /metrics has no canarium series labelled deployment="
                f"{target.deployment}, namespace={target.namespace}, revision={revision_name}"
            )
        return sample

    async def _fetch(self, namespace: str, pod: dict[str, Any], name: str) -> str:
        if self.via == "api-proxy":
            path = (
                f"/api/v1/namespaces/{namespace}/pods/"
                f"{urllib.parse.quote(name)}:{self.port}/proxy{contract.METRICS_PATH}"
            )
            return await self.kube.get_text(path, timeout=self.scrape_timeout)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise RuntimeError("no pod IP")
        host = f"[{ip}]" if ":" in ip else ip
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.scrape_timeout)
            )
        async with self._session.get(
            f"http://{host}:{self.port}{contract.METRICS_PATH}"
        ) as response:
            body = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]}")
            return body


def pod_samples_window(after: Iterable[PodSample], before: Iterable[PodSample]) -> RevisionMetrics:
    """`samples.window` keyed by the samples' pod names (a convenience for tests and tools)."""
    return window({s.pod: s for s in after}, {s.pod: s for s in before})


def new(settings: PodMetricsSettings, context: ProviderContext) -> PodMetricsProvider:
    """The registry's factory: podMetrics takes no settings."""
    return PodMetricsProvider(context.kube, via=context.pod_scrape)
