"""Metric providers: where an analysis gets its numbers. One module per provider type, one
interface (`Provider`), and a registry that hands out the provider of a policy's
`analysis.provider` by its type, as Argo Rollouts' `metricproviders` do.

    providers = ProviderRegistry(ProviderContext(kube))
    provider = providers.provider_for(analysis.provider)
    await provider.baseline(target)                 # when the canary starts getting traffic
    window = await provider.measure(target)         # every interval
    providers.analysis_ended(namespace, deployment)  # every provider drops what it kept

Adding a provider: a module here with `TYPE` (its field in the API's `analysis.provider`) and
`new(settings, context) -> Provider`; its entry in `FACTORIES`; its field in
`api.MetricsProvider` (the one-provider rule follows the fields), then `make crds`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from canarium.analysis.providers import podmetrics, prometheus
from canarium.analysis.providers.base import PodsClient, Provider, ProviderContext
from canarium.api import MetricsProvider

ProviderFactory = Callable[[Any, ProviderContext], Provider]
"""Makes a provider from its settings in the API (the value of its field) and the context."""

FACTORIES: dict[str, ProviderFactory] = {
    podmetrics.TYPE: podmetrics.new,
    prometheus.TYPE: prometheus.new,
}
"""Every provider, by type (its field name in the API's `analysis.provider`)."""


class UnknownProviderError(LookupError):
    """A policy names a provider type that has no factory."""


class ProviderRegistry:
    """The providers of one operator, made on first use and kept: a provider keeps state
    between calls (podMetrics' baselines), so the same settings always get the same instance."""

    def __init__(
        self, context: ProviderContext, factories: Mapping[str, ProviderFactory] | None = None
    ) -> None:
        self.context = context
        self._factories = FACTORIES if factories is None else factories
        self._providers: dict[tuple[str, str], Provider] = {}

    def provider_for(self, spec: MetricsProvider) -> Provider:
        """The provider of a policy's `analysis.provider`; UnknownProviderError if its type
        has no factory."""
        factory = self._factories.get(spec.type)
        if factory is None:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownProviderError(f"no metric provider of type {spec.type!r} (known: {known})")
        key = (spec.type, spec.settings.model_dump_json())
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = factory(spec.settings, self.context)
        return provider

    def analysis_ended(self, namespace: str, deployment: str) -> None:
        """A ModelDeployment has no analysis going on any more (or is gone): every provider
        drops what it kept about it."""
        for provider in self._providers.values():
            provider.forget(namespace, deployment)


__all__ = [
    "FACTORIES",
    "PodsClient",
    "Provider",
    "ProviderContext",
    "ProviderFactory",
    "ProviderRegistry",
    "UnknownProviderError",
]
