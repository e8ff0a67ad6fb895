"""How a canary is judged: metric providers (`canarium.analysis.providers`) measure a window,
`judge` turns it into verdicts.

    provider = providers.provider_for(analysis.provider)
    await provider.baseline(target)                  # when the canary starts getting traffic
    window = await provider.measure(target)          # every interval
    custom = await provider.custom_values(analysis, target) if provider.runs_custom_checks else None
    judgement = judge(analysis, window.canary, window.stable, now, custom, evidence=evidence)
    providers.analysis_ended(namespace, deployment)  # when its analyses end

Everything here but the providers' I/O is pure and unit-tested (`samples`, `stats`, `judge`).
"""

from __future__ import annotations

from canarium.analysis.judge import Judgement, judge, unanswered
from canarium.analysis.samples import (
    AnalysisTarget,
    MeasuredWindow,
    PodSample,
    RevisionMetrics,
    WindowResult,
    combine,
    delta,
    window,
)
from canarium.analysis.stats import histogram_quantile

__all__ = [
    "AnalysisTarget",
    "Judgement",
    "MeasuredWindow",
    "PodSample",
    "RevisionMetrics",
    "WindowResult",
    "combine",
    "delta",
    "histogram_quantile",
    "judge",
    "unanswered",
    "window",
]
