"""Operator settings: defaults that ModelDeployments do not carry themselves."""

from __future__ import annotations

import os
from dataclasses import dataclass

from canarium import __version__

DEFAULT_SERVING_IMAGE = f"ghcr.io/canarium-dev/canarium-serving:{__version__}"


@dataclass(frozen=True)
class Settings:
    """What the operator applies to every ModelDeployment; read once at start-up."""

    serving_image: str = DEFAULT_SERVING_IMAGE
    # How long a new revision may take to become Ready before the rollout is Degraded
    # (the Deployment's progressDeadlineSeconds; Argo Rollouts' default is 600 too).
    progress_deadline_seconds: int = 600
    # Scrape or query timeout of one analysis measurement.
    metrics_timeout_seconds: float = 5.0
    # Analysis runs beside the reconcile workers: this many intervals measured at once, each
    # given up (as no data) after this long.
    analysis_concurrency: int = 8
    analysis_timeout_seconds: float = 30.0
    # How the podMetrics provider reaches the serving pods: "pod-ip" (inside the cluster) or
    # "api-proxy" (through the API server, for an operator run from outside the cluster).
    pod_scrape: str = "api-proxy"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            serving_image=os.environ.get("CANARIUM_SERVING_IMAGE", DEFAULT_SERVING_IMAGE),
            progress_deadline_seconds=int(
                os.environ.get("CANARIUM_PROGRESS_DEADLINE_SECONDS", "600")
            ),
            analysis_concurrency=int(os.environ.get("CANARIUM_ANALYSIS_CONCURRENCY", "8")),
            analysis_timeout_seconds=float(
                os.environ.get("CANARIUM_ANALYSIS_TIMEOUT_SECONDS", "30")
            ),
            pod_scrape=os.environ.get("CANARIUM_POD_SCRAPE")
            or ("pod-ip" if os.environ.get("KUBERNETES_SERVICE_HOST") else "api-proxy"),
        )
