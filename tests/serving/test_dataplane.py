"""The DataPlane called directly, as any transport calls it: no HTTP, no server process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from canarium_serving import __version__, dataplane
from canarium_serving.config import ServerConfig
from canarium_serving.dataplane import DataPlane, ModelNotFoundError, ModelNotReadyError
from canarium_serving.protocol import InferenceRequest, InferenceResponse, ProtocolError
from prometheus_client.parser import text_string_to_metric_families

from .conftest import LOOKUP_TABLE, Models

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def iris_config(models: Models, tmp_path: Path, **overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {
        "model_uri": str(models.iris.model_path),
        "model_name": "iris",
        "model_version": "2",
        "termination_log": str(tmp_path / "termination-log"),
        **overrides,
    }
    return ServerConfig(**settings)


def loaded_iris(models: Models, tmp_path: Path, **overrides: Any) -> DataPlane:
    plane = DataPlane(iris_config(models, tmp_path, **overrides))
    plane.load()
    return plane


def infer(
    plane: DataPlane, request: InferenceRequest, name: str = "iris", version: str | None = None
) -> InferenceResponse:
    return asyncio.run(plane.infer(name, version, request))


def samples(plane: DataPlane, family: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of one metric family: name, labels other than the base ones, value."""
    base = {"model", "version", "deployment", "namespace", "revision", "role"}
    return [
        (s.name, {k: v for k, v in s.labels.items() if k not in base}, s.value)
        for fam in text_string_to_metric_families(plane.metrics.exposition().decode())
        if fam.name == family
        for s in fam.samples
    ]


def executions(plane: DataPlane) -> tuple[float, float]:
    """(model executions, rows) so far, from canarium_inference_batch_size."""
    totals = {name: v for name, _, v in samples(plane, "canarium_inference_batch_size")}
    return (
        totals["canarium_inference_batch_size_count"],
        totals["canarium_inference_batch_size_sum"],
    )


def model_ready_gauge(plane: DataPlane) -> float:
    [(_, _, value)] = samples(plane, "canarium_model_ready")
    return value


@pytest.mark.parametrize("batch_max_size", [32, 1], ids=["batched", "unbatched"])
def test_infer_equals_the_estimator(models: Models, tmp_path: Path, batch_max_size: int) -> None:
    plane = loaded_iris(models, tmp_path, batch_max_size=batch_max_size)
    assert (plane.batcher is not None) == (batch_max_size > 1)
    x = models.iris_x[:20]
    response = infer(plane, InferenceRequest(inputs={"input": x}, id="req-7"), version="2")
    assert (response.model_name, response.model_version, response.id) == ("iris", "2", "req-7")
    assert list(response.outputs) == ["label", "probabilities"]
    assert response.outputs["label"].tolist() == models.iris_estimator.predict(x).tolist()
    np.testing.assert_allclose(
        response.outputs["probabilities"], models.iris_estimator.predict_proba(x), atol=1e-5
    )


@pytest.mark.parametrize("batch_max_size", [32, 1], ids=["batched", "unbatched"])
def test_infer_records_the_execution_in_the_metrics(
    models: Models, tmp_path: Path, batch_max_size: int
) -> None:
    plane = loaded_iris(models, tmp_path, batch_max_size=batch_max_size)
    x = models.iris_x[45:60]  # classes 0 and 1
    predicted = models.iris_estimator.predict(x).tolist()
    # Only the probabilities are asked for: the metrics still count the predicted labels.
    response = infer(plane, InferenceRequest(inputs={"input": x}, outputs=["probabilities"]))
    assert list(response.outputs) == ["probabilities"]
    assert executions(plane) == (1, len(x))
    classes = samples(plane, "canarium_prediction_class")
    assert {(labels["output"], labels["class"]): n for _, labels, n in classes} == {
        ("label", str(c)): float(predicted.count(c)) for c in (0, 1, 2)
    }
    features = samples(plane, "canarium_input_feature_value")
    feature_counts = {
        labels["feature"]: n
        for name, labels, n in features
        if name == "canarium_input_feature_value_count"
    }
    assert feature_counts == dict.fromkeys(IRIS_FEATURES, float(len(x)))
    # The transport counts requests by status, not the DataPlane: none was counted here.
    assert sum(plane.metrics.requests.values()) == 0


def test_operations_of_the_loaded_model(models: Models, tmp_path: Path) -> None:
    plane = loaded_iris(models, tmp_path)
    assert plane.live()
    assert plane.ready()
    assert model_ready_gauge(plane) == 1
    assert plane.server_metadata() == {
        "name": "canarium-serving",
        "version": __version__,
        "extensions": ["binary_tensor_data"],
    }
    for version in (None, "2"):
        assert plane.model_ready("iris", version) is True
        meta = plane.model_metadata("iris", version)
        assert (meta["name"], meta["versions"], meta["platform"]) == (
            "iris",
            ["2"],
            "onnxruntime_onnx",
        )
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
        assert [s.to_json() for s in plane.model_inputs("iris", version)] == meta["inputs"]


def test_another_model_name_is_not_found(models: Models, tmp_path: Path) -> None:
    plane = loaded_iris(models, tmp_path)
    request = InferenceRequest(inputs={"input": models.iris_x[:1]})
    calls = [
        lambda: plane.check_model("nope"),
        lambda: plane.model_ready("nope"),
        lambda: plane.model_metadata("nope", "2"),
        lambda: plane.model_inputs("nope"),
        lambda: infer(plane, request, name="nope"),
        lambda: infer(plane, request, name="Iris", version="2"),
    ]
    for call in calls:
        with pytest.raises(ModelNotFoundError) as e:
            call()
        assert e.value.status == 404
        assert e.value.message.endswith("not found; this server serves 'iris'")
    assert executions(plane) == (0, 0)


def test_another_version_is_not_found(models: Models, tmp_path: Path) -> None:
    plane = loaded_iris(models, tmp_path)
    request = InferenceRequest(inputs={"input": models.iris_x[:1]})
    calls = [
        lambda: plane.check_model("iris", "1"),
        lambda: plane.model_ready("iris", "1"),
        lambda: plane.model_metadata("iris", "20"),
        lambda: plane.model_inputs("iris", ""),
        lambda: infer(plane, request, version="3"),
    ]
    for call in calls:
        with pytest.raises(ModelNotFoundError) as e:
            call()
        assert e.value.status == 404
        assert e.value.message.startswith("model 'iris' has no version '")
        assert e.value.message.endswith("'; served: '2'")
    assert executions(plane) == (0, 0)
    plane.check_model("iris", "2")
    plane.check_model("iris")


def test_not_ready_while_the_model_loads(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetching = threading.Event()
    gate = threading.Event()
    real_fetch = dataplane.fetch_model

    def slow_fetch(*args: Any, **kwargs: Any) -> Any:
        fetching.set()
        assert gate.wait(30)
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(dataplane, "fetch_model", slow_fetch)
    plane = DataPlane(iris_config(models, tmp_path))
    request = InferenceRequest(inputs={"input": models.iris_x[:3]})
    still_loading = "model 'iris' is still loading"

    async def scenario() -> None:
        loading = asyncio.create_task(plane.load_in_thread())
        try:
            assert await asyncio.to_thread(fetching.wait, 30)
            assert plane.live()
            assert not plane.ready()
            assert plane.model_ready("iris") is False
            assert model_ready_gauge(plane) == 0
            for call in (lambda: plane.model_metadata("iris"), lambda: plane.model_inputs("iris")):
                with pytest.raises(ModelNotReadyError) as e:
                    call()
                assert (e.value.status, e.value.message) == (503, still_loading)
            with pytest.raises(ModelNotReadyError) as e:
                await plane.infer("iris", "2", request)
            assert (e.value.status, e.value.message) == (503, still_loading)
            with pytest.raises(ModelNotFoundError):  # another model is not found, loading or not
                plane.model_ready("nope")
        finally:
            gate.set()  # also when an assertion failed: the load must not be left waiting
            await loading
        assert plane.ready()
        assert plane.model_ready("iris") is True
        assert model_ready_gauge(plane) == 1
        response = await plane.infer("iris", "2", request)
        assert response.outputs["label"].tolist() == [0, 0, 0]

    asyncio.run(scenario())


@pytest.mark.parametrize("exit_on_load_failure", [True, False])
def test_a_model_that_fails_to_load(
    models: Models, tmp_path: Path, exit_on_load_failure: bool
) -> None:
    fatal: list[str] = []
    config = iris_config(
        models,
        tmp_path,
        model_uri=str(tmp_path / "missing.onnx"),
        exit_on_load_failure=exit_on_load_failure,
    )
    plane = DataPlane(config, on_fatal=fatal.append)
    asyncio.run(plane.load_in_thread())  # the failure is recorded, not raised
    reason = plane.load_error
    assert reason is not None
    assert "model file not found" in reason
    assert fatal == ([reason] if exit_on_load_failure else [])
    assert Path(config.termination_log).read_text() == f"model not loaded: {reason}"
    assert not plane.ready()
    assert plane.model_ready("iris") is False
    failed = f"model 'iris' failed to load: {reason}"
    with pytest.raises(ModelNotReadyError) as e:
        plane.model_metadata("iris")
    assert (e.value.status, e.value.message) == (503, failed)
    with pytest.raises(ModelNotReadyError) as e:
        infer(plane, InferenceRequest(inputs={"input": models.iris_x[:1]}))
    assert (e.value.status, e.value.message) == (503, failed)


def test_an_unknown_output_is_a_bad_request(models: Models, tmp_path: Path) -> None:
    plane = loaded_iris(models, tmp_path)
    request = InferenceRequest(inputs={"input": models.iris_x[:2]}, outputs=["label", "nope"])
    with pytest.raises(ProtocolError, match=r"requested output\(s\) \['nope'\]") as e:
        infer(plane, request)
    assert e.value.status == 400
    assert executions(plane) == (0, 0)  # refused before the model ran


@pytest.mark.parametrize("batch_max_size", [32, 1], ids=["batched", "unbatched"])
def test_an_input_the_model_rejects_is_a_bad_request(
    lookup_model: Path, batch_max_size: int
) -> None:
    config = ServerConfig(
        model_uri=str(lookup_model),
        model_name="lookup",
        termination_log="",
        batch_max_size=batch_max_size,
    )
    plane = DataPlane(config)
    plane.load()
    good = InferenceRequest(inputs={"index": np.asarray([2, 0], dtype=np.int64)})
    response = asyncio.run(plane.infer("lookup", None, good))
    assert response.outputs["value"].tolist() == [LOOKUP_TABLE[2], LOOKUP_TABLE[0]]
    outside = InferenceRequest(inputs={"index": np.asarray([len(LOOKUP_TABLE)], dtype=np.int64)})
    with pytest.raises(ProtocolError, match="the model rejected the input") as e:
        asyncio.run(plane.infer("lookup", None, outside))
    assert e.value.status == 400
