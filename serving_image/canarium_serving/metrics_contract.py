"""The metrics contract between the model server and the operator's analysis.

The server exposes these families on /metrics; the operator's providers read them (scraped
pods or PromQL) and judge them. Names, labels and the PSI used to compare distributions are
written down once here, so a rename or a new label is one change that both sides follow.
Pure Python: the operator imports it without the server's dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

# --- Labels ------------------------------------------------------------------------------
LABEL_MODEL: Final = "model"
LABEL_VERSION: Final = "version"
LABEL_DEPLOYMENT: Final = "deployment"  # the ModelDeployment's name
LABEL_NAMESPACE: Final = "namespace"
LABEL_REVISION: Final = "revision"  # the revision's (child Deployment's) name
LABEL_ROLE: Final = "role"  # contract.ROLE_STABLE or contract.ROLE_CANARY
BASE_LABELS: Final = (
    LABEL_MODEL,
    LABEL_VERSION,
    LABEL_DEPLOYMENT,
    LABEL_NAMESPACE,
    LABEL_REVISION,
    LABEL_ROLE,
)
"""On every family: which model and which revision of which ModelDeployment."""

LABEL_CODE: Final = "code"  # HTTP status code of an /infer answer
LABEL_LE: Final = "le"  # a histogram bucket's upper bound, Prometheus' own label
LABEL_OUTPUT: Final = "output"  # a model output's name
LABEL_CLASS: Final = "class"  # a predicted class
LABEL_FEATURE: Final = "feature"  # an input feature's name (from the reference statistics)
LABEL_PLATFORM: Final = "platform"
LABEL_SHA256: Final = "sha256"
LABEL_URI: Final = "uri"


# --- Families ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One metric family: its name as the server declares it, its type and its labels beyond
    `BASE_LABELS`."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...] = ()

    @property
    def series(self) -> str:
        """The name of the series readers select: `<name>_total` for a counter, `<name>_bucket`
        for a histogram, the name itself for a gauge."""
        suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}[self.type]
        return self.name + suffix


MODEL_READY: Final = Family("canarium_model_ready", "gauge")
MODEL_INFO: Final = Family(
    "canarium_model_info", "gauge", (LABEL_PLATFORM, LABEL_SHA256, LABEL_URI)
)
REQUESTS: Final = Family("canarium_requests", "counter", (LABEL_CODE,))
REQUEST_DURATION: Final = Family("canarium_request_duration_seconds", "histogram")
INFERENCE_BATCH_SIZE: Final = Family("canarium_inference_batch_size", "histogram")
PREDICTION_CLASS: Final = Family(
    "canarium_prediction_class", "counter", (LABEL_OUTPUT, LABEL_CLASS)
)
PREDICTION_VALUE: Final = Family("canarium_prediction_value", "histogram", (LABEL_OUTPUT,))
INPUT_FEATURE_VALUE: Final = Family("canarium_input_feature_value", "histogram", (LABEL_FEATURE,))
REFERENCE_SAMPLES: Final = Family("canarium_reference_samples", "gauge")
# The reference histograms are gauges of cumulative fractions with an explicit `le`, so that
# they line up bucket by bucket with the live `_bucket` series.
REFERENCE_INPUT_FEATURE_RATIO: Final = Family(
    "canarium_reference_input_feature_ratio", "gauge", (LABEL_FEATURE, LABEL_LE)
)
REFERENCE_PREDICTION_CLASS_RATIO: Final = Family(
    "canarium_reference_prediction_class_ratio", "gauge", (LABEL_OUTPUT, LABEL_CLASS)
)
REFERENCE_PREDICTION_VALUE_RATIO: Final = Family(
    "canarium_reference_prediction_value_ratio", "gauge", (LABEL_OUTPUT, LABEL_LE)
)

FAMILIES: Final = (
    MODEL_READY,
    MODEL_INFO,
    REQUESTS,
    REQUEST_DURATION,
    INFERENCE_BATCH_SIZE,
    PREDICTION_CLASS,
    PREDICTION_VALUE,
    INPUT_FEATURE_VALUE,
    REFERENCE_SAMPLES,
    REFERENCE_INPUT_FEATURE_RATIO,
    REFERENCE_PREDICTION_CLASS_RATIO,
    REFERENCE_PREDICTION_VALUE_RATIO,
)
"""Every family the server exposes besides the process collector's."""

PREFIX: Final = "canarium_"
"""Every family's name starts with it."""


# --- PSI ---------------------------------------------------------------------------------
PSI_EPSILON: Final = 1e-4
"""Floor of a bucket's fraction in PSI, so that an empty bucket costs a finite amount."""


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two distributions over the same buckets:
    `sum((a - e) * ln(a / e))` over buckets, each side normalised to sum 1 (counts or fractions
    both work) and floored at `epsilon` so empty buckets stay finite. 0 = identical; rule of
    thumb: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 major."""
    if len(expected) != len(actual):
        raise ValueError("distributions must have the same buckets")
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        raise ValueError("distributions must not be empty")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e2 = max(e / e_total, epsilon)
        a2 = max(a / a_total, epsilon)
        total += (a2 - e2) * math.log(a2 / e2)
    return total
