"""The metrics contract (canarium_serving.metrics_contract): the server exposes exactly the
families it declares, the operator's parser reads them back, and the one PSI."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from canarium.analysis.providers.podmetrics import parse_metrics
from canarium_serving import metrics_contract as mc
from canarium_serving.metrics import Labels, ServingMetrics
from canarium_serving.metrics_contract import ReferenceStatistics
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

REFERENCE: dict[str, Any] = {
    "samples": 4,
    "features": [{"name": "f", "input": "X", "column": 0, "edges": [1.0], "fractions": [0.5, 0.5]}],
    "outputs": [
        {"name": "label", "kind": "class", "classes": ["a", "b"], "fractions": [0.25, 0.75]},
        {"name": "score", "kind": "value", "edges": [0.5], "fractions": [0.5, 0.5]},
    ],
}


def served_metrics() -> ServingMetrics:
    """A server's metrics with every family holding samples: a classifier and a regressor
    output, one input feature, reference statistics, one request."""
    metrics = ServingMetrics(Labels("m", "1", "iris", "ml", "iris-c4n", "canary"))
    metrics.configure_model(
        platform="onnxruntime_onnx",
        sha256="0" * 64,
        uri="file:///m.onnx",
        outputs=[("label", "BYTES", (-1,)), ("score", "FP32", (-1, 1))],
        reference=ReferenceStatistics.model_validate(REFERENCE),
    )
    metrics.ready = True
    metrics.observe_request(200, 0.01)
    metrics.observe_execution(
        {"X": np.asarray([[0.5], [2.0]], dtype=np.float32)},
        {
            "label": np.asarray([b"a", b"b"]),
            "score": np.asarray([[0.1], [0.9]], dtype=np.float32),
        },
        2,
    )
    return metrics


def test_server_exposes_exactly_the_contract_families_and_labels() -> None:
    text = served_metrics().exposition().decode()
    exposed = {
        family.name: family
        for family in text_string_to_metric_families(text)
        if family.name.startswith(mc.PREFIX)
    }
    # prometheus_client names a counter family without its _total suffix, like the contract.
    assert set(exposed) == {f.name for f in mc.FAMILIES}
    for declared in mc.FAMILIES:
        family = exposed[declared.name]
        assert family.type == declared.type, declared.name
        assert family.samples, declared.name
        for sample in family.samples:
            labels = set(sample.labels)
            if declared.type == "histogram" and sample.name == declared.series:
                labels.discard(mc.LABEL_LE)  # Prometheus' own bucket label
            assert labels == {*mc.BASE_LABELS, *declared.labels}, sample
        assert declared.series in {s.name for s in family.samples}, declared.name


def test_operator_reads_what_the_server_writes() -> None:
    sample = parse_metrics(
        served_metrics().exposition().decode(),
        deployment="iris",
        namespace="ml",
        revision="iris-c4n",
    )
    assert sample is not None
    metrics = sample.metrics
    assert (metrics.requests, metrics.errors) == (1.0, 0.0)
    assert metrics.latency_buckets[math.inf] == 1.0
    assert metrics.prediction_classes == {("label", "a"): 1.0, ("label", "b"): 1.0}
    assert metrics.prediction_value_buckets == {"score": {0.5: 1.0, math.inf: 2.0}}
    assert metrics.input_feature_buckets == {"f": {1.0: 1.0, math.inf: 2.0}}
    assert metrics.reference_input_ratios == {"f": {1.0: 0.5, math.inf: 1.0}}
    assert metrics.reference_prediction_class_ratios == {("label", "a"): 0.25, ("label", "b"): 0.75}
    assert metrics.reference_prediction_value_ratios == {"score": {0.5: 0.5, math.inf: 1.0}}


def test_series_names() -> None:
    assert mc.REQUESTS.series == "canarium_requests_total"
    assert mc.REQUEST_DURATION.series == "canarium_request_duration_seconds_bucket"
    assert mc.MODEL_READY.series == "canarium_model_ready"
    assert all(f.name.startswith(mc.PREFIX) for f in mc.FAMILIES)


def test_psi_normalises_each_side() -> None:
    """Reference fractions that do not sum to exactly 1 (rounded, or a truncated histogram) and
    live counts are compared as distributions: scaling either side changes nothing."""
    expected = mc.psi([0.5, 0.5], [0.25, 0.75])
    assert expected == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert mc.psi([0.2, 0.2], [0.25, 0.75]) == pytest.approx(expected)
    assert mc.psi([0.5, 0.5], [100, 300]) == pytest.approx(expected)


# --- the reference statistics schema -------------------------------------------------------


def test_reference_statistics_parse() -> None:
    ref = ReferenceStatistics.model_validate_json(
        b'{"format": "canarium.reference/v1", "model": "iris", "samples": 4, "bins": 2,'
        b' "features": [{"name": "f", "input": "X", "column": 0, "edges": [1],'
        b' "fractions": [0.5, 0.5], "min": 0, "max": 2, "mean": 1}],'
        b' "outputs": [{"name": "label", "kind": "class", "classes": [0, 1],'
        b' "fractions": [0.5, 0.5]}, {"name": "score", "kind": "value", "edges": [0.5],'
        b' "fractions": [0.5, 0.5]}], "newer": "ignored"}'
    )
    assert ref.samples == 4
    assert ref.features[0].edges == (1.0,)
    label, score = ref.outputs
    assert isinstance(label, mc.ClassOutputReference)
    assert label.classes == ("0", "1")  # class labels are strings, as on /metrics
    assert isinstance(score, mc.ValueOutputReference)
    assert ReferenceStatistics.model_validate(REFERENCE).format == mc.REFERENCE_FORMAT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "canarium.reference/v2"}, "format"),
        ({"samples": -1}, "samples"),
        (
            {"features": [{**REFERENCE["features"][0], "fractions": [1.0]}]},
            "feature 'f': 1 fractions for 1 edges (need edges + 1",
        ),
        (
            {"features": [{**REFERENCE["features"][0], "edges": [2, 1], "fractions": [1, 0, 0]}]},
            "feature 'f': edges must be strictly ascending",
        ),
        (
            {"outputs": [{"name": "label", "kind": "class", "classes": ["a"], "fractions": []}]},
            "output 'label': 0 fractions for 1 classes",
        ),
        (
            {"outputs": [{"name": "s", "kind": "value", "edges": [1.0], "fractions": [1.0]}]},
            "output 's': 1 fractions for 1 edges",
        ),
        ({"outputs": [{"name": "x", "kind": "tensor"}]}, "tensor"),
    ],
)
def test_reference_statistics_reject(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ReferenceStatistics.model_validate({**REFERENCE, **change})


def test_psi_floors_an_empty_bucket_at_epsilon() -> None:
    # All of each side in the bucket the other leaves empty: finite, set by the floor.
    eps = mc.PSI_EPSILON
    assert mc.psi([1, 0], [0, 1]) == pytest.approx(2 * (1 - eps) * math.log(1 / eps))
    assert mc.psi([1, 0], [0, 1], epsilon=0.01) == pytest.approx(2 * 0.99 * math.log(100))
    assert mc.psi([3, 1], [3, 1]) == 0.0


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        ([0.5, 0.5], [1.0], "distributions must have the same buckets"),
        ([0.0, 0.0], [1.0, 1.0], "distributions must not be empty"),
        ([1.0, 1.0], [0.0, 0.0], "distributions must not be empty"),
    ],
)
def test_psi_refuses(expected: list[float], actual: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        mc.psi(expected, actual)


def test_reference_histogram_messages_in_full() -> None:
    feature = REFERENCE["features"][0]
    with pytest.raises(ValidationError) as refused:
        ReferenceStatistics.model_validate(
            {**REFERENCE, "features": [{**feature, "fractions": [1]}]}
        )
    assert (
        "feature 'f': 1 fractions for 1 edges (need edges + 1, the last for the +Inf bucket)"
        in str(refused.value)
    )
    # Equal edges are not strictly ascending.
    with pytest.raises(ValidationError, match="feature 'f': edges must be strictly ascending"):
        ReferenceStatistics.model_validate(
            {**REFERENCE, "features": [{**feature, "edges": [1, 1], "fractions": [0, 1, 0]}]}
        )
