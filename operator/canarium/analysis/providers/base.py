"""The interface every metric provider implements, and what the operator gives them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from canarium.analysis.samples import AnalysisTarget, WindowResult
from canarium.api import AnalysisSpec


class PodsClient(Protocol):
    """What the provider needs from `canarium.kube.Kube`."""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    async def get_text(self, path: str, *, timeout: float = ...) -> str: ...  # noqa: ASYNC109


class Provider(Protocol):
    """Where an analysis gets its numbers."""

    runs_custom_checks: bool
    """Whether `custom_values` answers the custom (PromQL) checks; if not, they are judged
    Inconclusive with the reason that the provider cannot run them."""

    async def measure(self, target: AnalysisTarget) -> WindowResult:
        """The canary's and the stable revision's counts in the window that just ended."""
        ...

    async def baseline(self, target: AnalysisTarget) -> None:
        """Start a window now (when the canary starts getting traffic)."""
        ...

    def forget(self, namespace: str, deployment: str) -> None:
        """Drop whatever is kept about a ModelDeployment's analyses (they ended)."""
        ...

    async def custom_values(
        self, analysis: AnalysisSpec, target: AnalysisTarget
    ) -> dict[str, float | None]:
        """The custom checks' values for the canary, by name (None = no data)."""
        ...


@dataclass(frozen=True)
class ProviderContext:
    """What the operator gives every provider it makes."""

    kube: PodsClient
    pod_scrape: str = "api-proxy"
    """How podMetrics reaches the pods: `pod-ip` or `api-proxy` (settings.pod_scrape)."""
