"""The model's reference statistics are read through the metrics contract's schema: a valid
document becomes typed statistics, an invalid one is ignored with a warning (the model still
serves, without drift metrics)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from canarium_serving.metrics_contract import ReferenceStatistics
from canarium_serving.model import OnnxModel

from .conftest import Models


def without_metadata(models: Models, tmp_path: Path) -> Path:
    """The iris model without the reference in its metadata: the sidecar file is read."""
    import onnx

    proto = onnx.load(str(models.iris.model_path))
    del proto.metadata_props[:]
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    return path


def test_the_packaged_reference_loads_typed(models: Models) -> None:
    reference = OnnxModel(models.iris.model_path).reference
    assert reference is not None
    assert reference == ReferenceStatistics.model_validate(models.iris.reference)
    assert [f.name for f in reference.features][2] == "petal_length"


def test_an_invalid_reference_is_ignored_with_a_warning(
    models: Models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = without_metadata(models, tmp_path)
    document = dict(models.iris.reference)
    document["features"] = [{**document["features"][0], "fractions": [1.0]}]
    (tmp_path / "model.reference.json").write_bytes(orjson.dumps(document))
    with caplog.at_level(logging.WARNING, logger="canarium_serving.model"):
        model = OnnxModel(path)
    assert model.reference is None
    assert "model.reference.json are invalid: ignored" in caplog.text
    assert "1 fractions for" in caplog.text
