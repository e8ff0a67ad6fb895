"""The provider registry: one provider per type, made once and kept with its baselines, and
dropped baselines when an analysis ends."""

from __future__ import annotations

import asyncio

import pytest
from canarium.analysis.providers import (
    FACTORIES,
    ProviderContext,
    ProviderRegistry,
    UnknownProviderError,
)
from canarium.analysis.providers.podmetrics import PodMetricsProvider
from canarium.analysis.providers.prometheus import PrometheusProvider
from canarium.api import MetricsProvider

from tests.unit.test_analysis_judge import TARGET, FakeKube, exposition

POD_METRICS = MetricsProvider.model_validate({"podMetrics": {}})


def prometheus(address: str) -> MetricsProvider:
    return MetricsProvider.model_validate({"prometheus": {"address": address}})


def test_every_provider_of_the_api_has_a_factory() -> None:
    assert set(FACTORIES) == {field.alias for field in MetricsProvider.model_fields.values()}


def test_each_type_maps_to_its_provider() -> None:
    providers = ProviderRegistry(ProviderContext(FakeKube(), pod_scrape="pod-ip"))
    pod = providers.provider_for(POD_METRICS)
    assert isinstance(pod, PodMetricsProvider)
    assert pod.via == "pod-ip"  # the context reaches the provider
    assert not pod.runs_custom_checks
    prom = providers.provider_for(prometheus("http://p:9090"))
    assert isinstance(prom, PrometheusProvider)
    assert prom.address == "http://p:9090"
    assert prom.runs_custom_checks
    assert providers.provider_for(prometheus("http://p:9090")) is prom
    other = providers.provider_for(prometheus("http://q:9090"))
    assert isinstance(other, PrometheusProvider)
    assert other.address == "http://q:9090"


def test_an_unknown_type_is_a_clear_error() -> None:
    providers = ProviderRegistry(
        ProviderContext(FakeKube()), {"prometheus": FACTORIES["prometheus"]}
    )
    with pytest.raises(
        UnknownProviderError,
        match=r"^no metric provider of type 'podMetrics' \(known: prometheus\)$",
    ):
        providers.provider_for(POD_METRICS)


def test_a_providers_baseline_is_kept_between_calls_and_dropped_when_the_analysis_ends() -> None:
    kube = FakeKube()
    kube.pod("c4n", "c1")
    kube.pod("s7b", "s1")
    kube.texts = {"c1": exposition("iris-c4n", 10, 1), "s1": exposition("iris-s7b", 50, 0)}
    providers = ProviderRegistry(ProviderContext(kube))

    async def measure_after_baseline(end: tuple[str, str] | None) -> float | None:
        await providers.provider_for(POD_METRICS).baseline(TARGET)
        kube.texts["c1"] = exposition("iris-c4n", 15, 1)
        if end is not None:
            providers.analysis_ended(*end)
        # Another call: the same provider, with the baseline taken above (or not).
        window = await providers.provider_for(POD_METRICS).measure(TARGET)
        kube.texts["c1"] = exposition("iris-c4n", 10, 1)
        return None if window.canary is None else window.canary.requests

    assert asyncio.run(measure_after_baseline(None)) == 5
    # Another ModelDeployment's analysis ending keeps it, also one of the same name elsewhere
    # (the same spec gives the same revision names in every namespace).
    assert asyncio.run(measure_after_baseline(("ml", "other"))) == 5
    assert asyncio.run(measure_after_baseline(("elsewhere", "iris"))) == 5
    assert asyncio.run(measure_after_baseline(("ml", "iris"))) is None
