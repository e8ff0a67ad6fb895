"""The metrics contract between the model server and the operator's analysis.

The server exposes these families on /metrics; the operator's providers read them (scraped
pods or PromQL) and judge them. Names, labels, the reference statistics a model carries (the
source of the reference families) and the PSI used to compare distributions are written down
once here, so a rename or a new label is one change that both sides follow. No numpy, ONNX or
HTTP: the operator imports it without the server's dependencies.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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


# --- Reference statistics ----------------------------------------------------------------
REFERENCE_FORMAT: Final = "canarium.reference/v1"


class _Reference(BaseModel):
    # Unknown keys are kept out, not refused: a newer packager may add statistics.
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)


def _check_histogram(edges: Sequence[float], fractions: Sequence[float], what: str) -> None:
    if any(a >= b for a, b in itertools.pairwise(edges)):
        raise ValueError(f"{what}: edges must be strictly ascending")
    if len(fractions) != len(edges) + 1:
        raise ValueError(
            f"{what}: {len(fractions)} fractions for {len(edges)} edges (need edges + 1, "
            "the last for the +Inf bucket)"
        )


class FeatureReference(_Reference):
    """The histogram of one input feature: column `column` of input `input`."""

    name: str
    input: str
    column: int = Field(ge=0)
    edges: tuple[float, ...]
    """Finite bucket upper bounds (Prometheus' `le`), ascending."""
    fractions: tuple[float, ...]
    """Per bucket, len(edges) + 1 (the last is the +Inf bucket), summing to 1."""
    min: float | None = None
    max: float | None = None
    mean: float | None = None

    @model_validator(mode="after")
    def _histogram(self) -> FeatureReference:
        _check_histogram(self.edges, self.fractions, f"feature {self.name!r}")
        return self


class ClassOutputReference(_Reference):
    """The predicted classes of a classifier output."""

    name: str
    kind: Literal["class"]
    classes: tuple[str, ...]
    fractions: tuple[float, ...]
    """Per class, in `classes` order."""

    @model_validator(mode="after")
    def _one_fraction_per_class(self) -> ClassOutputReference:
        if len(self.fractions) != len(self.classes):
            raise ValueError(
                f"output {self.name!r}: {len(self.fractions)} fractions for "
                f"{len(self.classes)} classes"
            )
        return self


class ValueOutputReference(_Reference):
    """The histogram of a regressor output."""

    name: str
    kind: Literal["value"]
    edges: tuple[float, ...]
    fractions: tuple[float, ...]

    @model_validator(mode="after")
    def _histogram(self) -> ValueOutputReference:
        _check_histogram(self.edges, self.fractions, f"output {self.name!r}")
        return self


OutputReference = Annotated[
    ClassOutputReference | ValueOutputReference, Field(discriminator="kind")
]


class ReferenceStatistics(_Reference):
    """What a model was trained on, packaged with it (`canarium model build`): JSON in the ONNX
    metadata under `contract.ONNX_METADATA_KEY`, and next to it in `*.reference.json`. The
    server serves it as the reference families; live histograms use the same edges, so the two
    compare bucket by bucket. Parse with `model_validate` / `model_validate_json`.

    For example::

        {"format": "canarium.reference/v1", "model": "iris", "samples": 150,
         "features": [{"name": "petal_length", "input": "X", "column": 2,
                       "edges": [1.5, 3.0, ...], "fractions": [0.2, ...]}],
         "outputs": [{"name": "label", "kind": "class", "classes": ["0", "1", "2"],
                      "fractions": [0.33, 0.33, 0.34]},
                     {"name": "variable", "kind": "value", "edges": [...], "fractions": [...]}]}

    `fractions` has len(edges) + 1 entries (the last is the +Inf bucket) and sums to 1.
    """

    format: Literal["canarium.reference/v1"] = REFERENCE_FORMAT
    model: str | None = None
    samples: int = Field(ge=0)
    """Rows the statistics were computed from."""
    bins: int | None = None
    features: tuple[FeatureReference, ...] = ()
    outputs: tuple[OutputReference, ...] = ()


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
