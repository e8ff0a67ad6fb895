"""How a canary is judged: metric providers measure a window, `judge` turns it into verdicts.

    provider = provider_for(analysis.provider, kube)
    await provider.baseline(target)                  # when the canary starts getting traffic
    window = await provider.measure(target)          # every interval
    custom = await provider.custom_values(analysis, target)
    judgement = judge(analysis, window.canary, window.stable, now, custom)
    provider.forget(target.canary_revision_name)      # when its analysis ends

Everything but the providers' I/O is pure and unit-tested (`samples`, `stats`, `judge`).
"""

from __future__ import annotations

import weakref
from typing import Protocol

from canarium_serving.metrics_contract import psi

from canarium.analysis.judge import Judgement, judge
from canarium.analysis.podmetrics import PodMetricsProvider, PodsClient, parse_metrics
from canarium.analysis.prometheus import PrometheusProvider
from canarium.analysis.samples import (
    AnalysisTarget,
    PodSample,
    RevisionMetrics,
    WindowResult,
    combine,
    delta,
    window,
)
from canarium.analysis.stats import histogram_quantile
from canarium.api import AnalysisSpec, MetricsProvider


class Provider(Protocol):
    """Where an analysis gets its numbers."""

    async def measure(self, target: AnalysisTarget) -> WindowResult:
        """The canary's and the stable revision's counts in the window that just ended."""
        ...

    async def baseline(self, target: AnalysisTarget) -> None:
        """Start a window now (when the canary starts getting traffic)."""
        ...

    def forget(self, revision_name: str) -> None:
        """Drop whatever is kept about a revision whose analysis ended."""
        ...

    async def custom_values(
        self, analysis: AnalysisSpec, target: AnalysisTarget
    ) -> dict[str, float | None]:
        """The custom checks' values for the canary, by name (None = no data)."""
        ...


_pod_providers: weakref.WeakKeyDictionary[PodsClient, PodMetricsProvider] = (
    weakref.WeakKeyDictionary()
)


def provider_for(
    spec: MetricsProvider, kube: PodsClient, pod_scrape: str = "api-proxy"
) -> Provider:
    """The provider for a policy's `analysis.provider`.

    podMetrics: one shared `PodMetricsProvider` per Kube client (it keeps the per-pod
    baselines between calls, so every call must get the same one). prometheus: a new,
    stateless `PrometheusProvider` for that address and headers.
    """
    if spec.prometheus is not None:
        return PrometheusProvider(spec.prometheus)
    provider = _pod_providers.get(kube)
    if provider is None:
        provider = _pod_providers[kube] = PodMetricsProvider(kube, via=pod_scrape)
    return provider


__all__ = [
    "AnalysisTarget",
    "Judgement",
    "PodMetricsProvider",
    "PodSample",
    "PrometheusProvider",
    "Provider",
    "RevisionMetrics",
    "WindowResult",
    "combine",
    "delta",
    "histogram_quantile",
    "judge",
    "parse_metrics",
    "provider_for",
    "psi",
    "window",
]
