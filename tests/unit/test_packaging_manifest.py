"""Packaging for training code: package_model's manifest, read_manifest's checks, the data
fingerprint, upload_model to a file:// folder and the retraining Job's environment.

Real scikit-learn models through skl2onnx and onnxruntime (the `build` extra, in the dev venv)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from canarium.api.common import LABEL_VALUE_PATTERN
from canarium_serving import contract
from canarium_serving.manifest import (
    MANIFEST_FORMAT,
    MAX_RESULT_BYTES,
    VERSION_PATTERN,
    ManifestError,
    parse_manifest,
    parse_training_result,
    read_manifest,
)
from canarium_serving.model import ModelLoadError
from canarium_serving.packaging import (
    TrainingContext,
    UploadError,
    data_fingerprint,
    package_model,
    upload_model,
)
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris, make_regression
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CREATED = dt.datetime(2026, 5, 4, 12, 0, 1, 123456, tzinfo=dt.UTC)


def iris_split(labels: Any = None) -> tuple[Any, Any, Any, Any]:
    iris = load_iris()
    y = iris.target if labels is None else np.asarray(labels)[iris.target]
    return tuple(  # type: ignore[return-value]
        train_test_split(iris.data, y, test_size=0.2, random_state=0, stratify=y)
    )


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    x_train, x_test, y_train, y_test = iris_split()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    out = tmp_path_factory.mktemp("iris")
    packaged = package_model(
        est,
        x_train,
        out,
        name="iris",
        version="2.0.0",
        y=y_train,
        holdout=(x_test, y_test),
        feature_names=FEATURES,
        data_source="iris.csv",
        holdout_source="iris-test.csv",
        created=CREATED,
    )
    return {
        "packaged": packaged,
        "est": est,
        "out": out,
        "split": (x_train, x_test, y_train, y_test),
    }


def test_the_manifest_describes_the_model_next_to_it(iris: dict[str, Any]) -> None:
    packaged, out = iris["packaged"], iris["out"]
    x_train, x_test, y_train, y_test = iris["split"]
    assert sorted(p.name for p in out.iterdir()) == [
        "model.manifest.json",
        "model.onnx",
        "model.reference.json",
    ]
    on_disk = json.loads((out / contract.MANIFEST_FILE).read_text())
    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert on_disk["model"]["sha256"] == packaged.sha256 == packaged.built.sha256 == digest
    assert on_disk["format"] == MANIFEST_FORMAT == "canarium.dev/model-manifest/v1"
    assert (on_disk["name"], on_disk["version"]) == ("iris", "2.0.0")
    assert on_disk["created"] == "2026-05-04T12:00:01Z"
    assert on_disk["model"]["file"] == "model.onnx"
    assert on_disk["model"]["reference"] == "model.reference.json"
    assert on_disk["model"]["bytes"] == (out / "model.onnx").stat().st_size
    assert on_disk["model"]["outputs"] == ["label", "probabilities"]
    assert on_disk["model"]["opsets"][""] >= 13
    assert on_disk["estimator"] == {
        "class": "sklearn.pipeline.Pipeline",
        "steps": [
            "sklearn.preprocessing.StandardScaler",
            "sklearn.linear_model.LogisticRegression",
        ],
        "task": "classification",
        "classes": ["0", "1", "2"],
    }
    assert on_disk["features"] == FEATURES
    assert on_disk["training"] == {
        "rows": 120,
        "sha256": data_fingerprint(x_train, y_train),
        "source": "iris.csv",
    }
    holdout = on_disk["holdout"]
    assert holdout["rows"] == 30
    assert holdout["sha256"] == data_fingerprint(x_test, y_test)
    assert holdout["source"] == "iris-test.csv"
    predicted = iris["est"].predict(x_test)
    assert holdout["metrics"] == pytest.approx(
        {
            "accuracy": accuracy_score(y_test, predicted),
            "f1_macro": f1_score(y_test, predicted, average="macro"),
        }
    )
    import onnx
    import skl2onnx
    import sklearn

    libraries = on_disk["libraries"]
    assert libraries["scikit-learn"] == sklearn.__version__
    assert libraries["skl2onnx"] == skl2onnx.__version__
    assert libraries["onnx"] == onnx.__version__
    assert {"python", "canarium", "onnxruntime", "numpy"} <= set(libraries)
    # what the reader sees is what was written
    assert read_manifest(out) == packaged.manifest
    assert read_manifest(out).dump() == on_disk
    assert read_manifest(out / contract.MANIFEST_FILE, name="iris", version="2.0.0").name == "iris"


def test_the_held_out_scores_are_the_onnx_models_own(
    iris: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scored as served: from the ONNX model's predictions, not the estimator's (here an
    estimator whose predict lies; the conversion reads its fitted parameters)."""
    from sklearn.base import clone

    x_train, x_test, y_train, y_test = iris["split"]
    est = clone(iris["est"]).fit(x_train, y_train)
    est.predict = lambda X: (np.asarray(y_test) + 1) % 3  # wrong on every held-out row
    packaged = package_model(
        est, x_test, tmp_path, name="iris", version="2", holdout=(x_test, y_test)
    )
    assert packaged.manifest.holdout is not None
    assert packaged.manifest.holdout.metrics["accuracy"] > 0.9
    assert "differ from the estimator's" in caplog.text


def test_a_regressor_is_scored_with_r2_and_mae(tmp_path: Path) -> None:
    x, y = make_regression(n_samples=300, n_features=5, noise=10.0, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    est = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(x_train, y_train)
    packaged = package_model(
        est, x_train, tmp_path, name="reg", version="1.0", y=y_train, holdout=(x_test, y_test)
    )
    m = packaged.manifest
    assert m.estimator.task == "regression"
    assert m.estimator.class_ == "sklearn.ensemble.GradientBoostingRegressor"
    assert m.estimator.classes == ()
    assert m.features == ("f0", "f1", "f2", "f3", "f4")
    assert m.holdout is not None
    predicted = est.predict(x_test.astype(np.float32))
    assert m.holdout.metrics["r2"] == pytest.approx(r2_score(y_test, predicted), rel=1e-4)
    assert m.holdout.metrics["mae"] == pytest.approx(
        mean_absolute_error(y_test, predicted), rel=1e-4
    )
    assert m.model.outputs == ("variable",)


def test_string_labels_are_scored(tmp_path: Path) -> None:
    x_train, x_test, y_train, y_test = iris_split(["setosa", "versicolor", "virginica"])
    est = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    m = package_model(
        est, x_train, tmp_path, name="iris", version="s", holdout=(x_test, y_test)
    ).manifest
    assert m.estimator.classes == ("setosa", "versicolor", "virginica")
    assert m.holdout is not None
    assert m.holdout.metrics["accuracy"] == pytest.approx(
        accuracy_score(y_test, est.predict(x_test))
    )
    assert m.holdout.metrics["accuracy"] > 0.9


def test_without_holdout_the_manifest_says_null(iris: dict[str, Any], tmp_path: Path) -> None:
    x_train = iris["split"][0]
    packaged = package_model(iris["est"], x_train, tmp_path, name="iris", version="3")
    assert json.loads(packaged.manifest_path.read_text())["holdout"] is None
    assert packaged.manifest.training.rows == 120
    # no labels: the fingerprint is of the features alone
    assert packaged.manifest.training.sha256 == data_fingerprint(x_train)


def test_held_out_scores_need_a_classifier_or_regressor(tmp_path: Path) -> None:
    x = load_iris().data
    km = KMeans(n_clusters=3, n_init=2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="classifier or a regressor"):
        package_model(km, x, tmp_path, name="k", version="1", holdout=(x, np.zeros(len(x))))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("iris", "2.0.0 beta", "version '2.0.0 beta' must be a Kubernetes label value"),
        ("iris", "", "version '' must be"),
        ("iris", "v" * 64, "at most 63"),
        ("iris/x", "1", "name 'iris/x' must be"),
        ("-iris", "1", "name '-iris' must be"),
    ],
)
def test_a_name_or_version_a_modeldeployment_cannot_use_is_refused(
    iris: dict[str, Any], tmp_path: Path, name: str, version: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        package_model(iris["est"], iris["split"][0], tmp_path, name=name, version=version)
    assert not list(tmp_path.iterdir())


def test_the_manifests_version_is_a_modeldeployments() -> None:
    assert VERSION_PATTERN == LABEL_VALUE_PATTERN


def test_a_failed_build_leaves_no_manifest(iris: dict[str, Any], tmp_path: Path) -> None:
    x_train = iris["split"][0]
    package_model(iris["est"], x_train, tmp_path, name="iris", version="1")
    assert (tmp_path / contract.MANIFEST_FILE).exists()
    with pytest.raises(ValueError, match="3 feature names for 4 features"):
        package_model(
            iris["est"], x_train, tmp_path, name="iris", version="2", feature_names=["a", "b", "c"]
        )
    assert not (tmp_path / contract.MANIFEST_FILE).exists()


# --- the data fingerprint ---------------------------------------------------------------------


def test_the_fingerprint_is_of_the_rows_as_the_model_sees_them() -> None:
    x, y = load_iris(return_X_y=True)
    base = data_fingerprint(x, y)
    assert len(base) == 64
    assert data_fingerprint(x.astype(np.float32), y) == base  # float32 is what the model sees
    assert data_fingerprint(x.tolist(), y.tolist()) == base
    assert data_fingerprint(x, [str(v) for v in y]) == base  # labels read from a CSV file
    assert data_fingerprint(np.asfortranarray(x), y) == base  # memory layout is not data
    assert data_fingerprint(x[::-1], y[::-1]) != base  # row order is
    assert data_fingerprint(x, y[::-1]) != base
    assert data_fingerprint(x) != base
    changed = x.copy()
    changed[7, 2] += 0.1
    assert data_fingerprint(changed, y) != base
    # the same bytes in another shape are other data
    assert data_fingerprint(x.reshape(300, 2)) != data_fingerprint(x)
    with pytest.raises(ValueError, match="149 labels for 150 rows"):
        data_fingerprint(x, y[1:])
    with pytest.raises(ValueError, match="2-D"):
        data_fingerprint(x[0])


# --- read_manifest: what the operator's validation will rely on ---------------------------------


@pytest.fixture
def packaged_dir(iris: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "model"
    for name in ("model.onnx", "model.reference.json", contract.MANIFEST_FILE):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes((iris["out"] / name).read_bytes())
    return out


def _edit(directory: Path, change: dict[str, Any]) -> None:
    path = directory / contract.MANIFEST_FILE
    data = json.loads(path.read_text())
    for dotted, value in change.items():
        *parents, key = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        if value is None:
            del node[key]
        else:
            node[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "canarium.dev/model-manifest/v9"}, "unknown manifest format"),
        ({"format": None}, "not a Canarium model manifest (no format)"),
        ({"version": "2.0.0 beta"}, "invalid manifest: version: String should match pattern"),
        ({"model.sha256": "XYZ"}, "invalid manifest: model.sha256"),
        ({"model.file": "../model.onnx"}, "model.file: Value error, must be a file name"),
        ({"training.rows": 0}, "training.rows"),
        ({"holdout.metrics": None}, "holdout.metrics: Field required"),
        ({"features": []}, "features"),
        ({"model.sha256": "0" * 64}, "does not match the manifest's " + "0" * 64),
        ({"model.file": "other.onnx"}, "its model file"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(
    packaged_dir: Path, change: dict[str, Any], message: str
) -> None:
    _edit(packaged_dir, change)
    with pytest.raises(ManifestError) as error:
        read_manifest(packaged_dir)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert str(packaged_dir) in str(error.value)


def test_a_changed_model_file_is_caught(packaged_dir: Path) -> None:
    model = packaged_dir / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model.onnx: sha256 [0-9a-f]{64} does not match"):
        read_manifest(packaged_dir)


def test_missing_or_unreadable_manifests(packaged_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no model manifest at .*model\.manifest\.json"):
        read_manifest(tmp_path / "nothing")
    (packaged_dir / contract.MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        read_manifest(packaged_dir)
    (packaged_dir / contract.MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(ManifestError, match="no format"):
        read_manifest(packaged_dir)


def test_the_expected_name_and_version_are_checked(packaged_dir: Path) -> None:
    assert read_manifest(packaged_dir, name="iris", version="2.0.0").version == "2.0.0"
    with pytest.raises(ManifestError, match=r"version is '2\.0\.0', expected '2\.0\.1'"):
        read_manifest(packaged_dir, version="2.0.1")
    with pytest.raises(ManifestError, match="name is 'iris', expected 'digits'"):
        read_manifest(packaged_dir, name="digits")


def test_unknown_keys_are_ignored(packaged_dir: Path) -> None:
    _edit(packaged_dir, {"lineage": {"job": "retrain-1"}, "model.signature": "x"})
    assert read_manifest(packaged_dir).name == "iris"


def test_parse_manifest_alone(iris: dict[str, Any]) -> None:
    text = (iris["out"] / contract.MANIFEST_FILE).read_text()
    assert parse_manifest(text).model.sha256 == iris["packaged"].sha256


# --- upload_model to a folder -----------------------------------------------------------------


def test_upload_to_a_file_uri_copies_the_folder_manifest_last(
    iris: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    target = tmp_path / "published" / "iris" / "2.0.0"
    uri = target.as_uri()
    uploaded = upload_model(iris["out"], uri, env={})
    assert replaced == ["model.onnx", "model.reference.json", contract.MANIFEST_FILE]
    assert uploaded.uri == uri
    assert uploaded.model_uri == uri + "/model.onnx"
    assert uploaded.manifest_uri == uri + "/model.manifest.json"
    assert uploaded.sha256 == iris["packaged"].sha256
    assert read_manifest(target) == iris["packaged"].manifest
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in iris["out"].iterdir())
    # the same model again: nothing changes, nothing refused
    upload_model(iris["out"], uri + "/", env={})


def test_upload_goes_to_canarium_output_uri_by_default(
    iris: dict[str, Any], tmp_path: Path
) -> None:
    env = {contract.TRAINING_ENV_OUTPUT_URI: str(tmp_path / "out")}  # a plain path works too
    uploaded = upload_model(iris["out"], env=env)
    assert uploaded.model_uri == str(tmp_path / "out") + "/model.onnx"
    assert read_manifest(tmp_path / "out").model.sha256 == iris["packaged"].sha256
    with pytest.raises(UploadError, match="no output URI: pass one or set CANARIUM_OUTPUT_URI"):
        upload_model(iris["out"], env={})


def test_a_folder_holding_another_model_is_not_overwritten(
    iris: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "published"
    upload_model(iris["out"], target.as_uri(), env={})
    other = package_model(
        iris["est"], iris["split"][1], tmp_path / "other", name="iris", version="2.0.0"
    )
    with pytest.raises(UploadError, match=r"already holds iris 2\.0\.0 \(sha256 [0-9a-f]{12}"):
        upload_model(other.built.model_path.parent, target.as_uri(), env={})
    assert read_manifest(target).model.sha256 == iris["packaged"].sha256  # untouched
    upload_model(other.built.model_path.parent, target.as_uri(), overwrite=True, env={})
    assert read_manifest(target).model.sha256 == other.sha256


def test_an_inconsistent_folder_is_not_uploaded(packaged_dir: Path, tmp_path: Path) -> None:
    (packaged_dir / "model.onnx").write_bytes(b"not the model")
    with pytest.raises(ManifestError, match="does not match"):
        upload_model(packaged_dir, (tmp_path / "out").as_uri(), env={})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/models", "unsupported output URI scheme 'ftp'"),
        ("file://otherhost/models", "a file URI names a local path"),
        ("s3://bucket-only", "must look like s3://<bucket or container>/<folder>"),
    ],
)
def test_unusable_output_uris(packaged_dir: Path, uri: str, message: str) -> None:
    with pytest.raises(UploadError, match=message.replace("(", r"\(")):
        upload_model(packaged_dir, uri, env={})


def test_upload_into_the_build_folder_itself(packaged_dir: Path) -> None:
    uploaded = upload_model(packaged_dir, packaged_dir.as_uri(), env={})
    assert read_manifest(packaged_dir).model.sha256 == uploaded.sha256


# --- the retraining Job's environment ---------------------------------------------------------


def test_the_training_context_reads_the_contract(iris: dict[str, Any]) -> None:
    model = iris["out"] / "model.onnx"
    env = {
        "CANARIUM_OUTPUT_URI": "s3://models/iris/2.0.1",
        "CANARIUM_MODEL_NAME": "iris",
        "CANARIUM_MODEL_VERSION": "2.0.1",
        "CANARIUM_BASE_MODEL_URI": model.as_uri(),
        "CANARIUM_BASE_MODEL_SHA256": iris["packaged"].sha256,
        "CANARIUM_BASE_MODEL_VERSION": "2.0.0",
        "CANARIUM_DRIFT_REPORT": '{"features": [{"name": "petal_length", "psi": 0.4}]}',
        "CANARIUM_TRAINING_TRIGGER": "drift",
        "CANARIUM_DEPLOYMENT": "iris",
        "CANARIUM_NAMESPACE": "ml",
    }
    ctx = TrainingContext.from_env(env)
    assert ctx.output_uri == "s3://models/iris/2.0.1"
    assert (ctx.model_name, ctx.model_version) == ("iris", "2.0.1")
    assert (ctx.base_model_uri, ctx.base_model_version) == (model.as_uri(), "2.0.0")
    assert ctx.drift_report == {"features": [{"name": "petal_length", "psi": 0.4}]}
    assert (ctx.trigger, ctx.deployment, ctx.namespace) == ("drift", "iris", "ml")
    assert ctx.trigger in contract.TRAINING_TRIGGERS
    assert str(ctx.work_dir) == contract.DEFAULT_TRAINING_WORK_DIR
    base = ctx.fetch_base_model()
    assert base is not None
    assert (base.path, base.sha256) == (model, iris["packaged"].sha256)
    bad = TrainingContext.from_env({**env, "CANARIUM_BASE_MODEL_SHA256": "0" * 64})
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        bad.fetch_base_model()


def test_a_run_by_hand_has_no_context() -> None:
    ctx = TrainingContext.from_env({})
    assert ctx.output_uri is ctx.model_version is ctx.drift_report is ctx.base_model_uri is None
    assert ctx.fetch_base_model() is None
    with pytest.raises(ValueError, match="CANARIUM_DRIFT_REPORT is not JSON"):
        TrainingContext.from_env({"CANARIUM_DRIFT_REPORT": "{psi: 1"})
    with pytest.raises(ValueError, match="not a JSON object"):
        TrainingContext.from_env({"CANARIUM_DRIFT_REPORT": "[1]"})


def test_every_contract_variable_has_its_own_name() -> None:
    """The training Job's variables (TRAINING_ENV_*) and the server's (ENV_*) never share a
    name, and the Job gets the model's name and version under the server's names."""
    names = {k: v for k, v in vars(contract).items() if k.startswith(("ENV_", "TRAINING_ENV_"))}
    assert len(set(names.values())) == len(names)
    assert all(v.startswith("CANARIUM_") for v in names.values())
    training = {k for k in names if k.startswith("TRAINING_ENV_")}
    assert training == {
        "TRAINING_ENV_OUTPUT_URI",
        "TRAINING_ENV_BASE_MODEL_URI",
        "TRAINING_ENV_BASE_MODEL_SHA256",
        "TRAINING_ENV_BASE_MODEL_VERSION",
        "TRAINING_ENV_DRIFT_REPORT",
        "TRAINING_ENV_TRIGGER",
        "TRAINING_ENV_RESULT_FILE",
    }


def test_the_result_reported_to_the_operator_is_what_it_parses(
    iris: dict[str, Any], tmp_path: Path
) -> None:
    uploaded = upload_model(iris["out"], str(tmp_path / "out"), env={})
    result_file = tmp_path / "termination-log"
    ctx = TrainingContext.from_env({contract.TRAINING_ENV_RESULT_FILE: str(result_file)})
    assert ctx.result_file == str(result_file)
    reported = ctx.report_result(uploaded, {"accuracy": 0.9})
    text = result_file.read_text()
    assert len(text.encode()) <= MAX_RESULT_BYTES
    parsed = parse_training_result(text)
    assert parsed == reported
    assert parsed.model_uri == str(tmp_path / "out") + "/model.onnx"
    assert parsed.sha256 == iris["packaged"].sha256
    assert parsed.version == uploaded.manifest.version
    assert uploaded.manifest.holdout is not None
    assert parsed.metrics == uploaded.manifest.holdout.metrics
    assert parsed.holdout_sha256 == uploaded.manifest.holdout.sha256
    assert parsed.base_metrics == {"accuracy": 0.9}
    assert json.loads(text)["format"] == "canarium.dev/training-result/v1"
    assert "modelUri" in json.loads(text)  # camelCase on the wire, as the API's
    # A run by hand has no result file: nothing is written, the result is still returned.
    assert TrainingContext.from_env({}).report_result(uploaded).base_metrics == {}


def test_a_training_result_that_is_not_one_says_why() -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        parse_training_result("{", "run r")
    with pytest.raises(ManifestError, match="run r: not a Canarium training result"):
        parse_training_result('{"format": "canarium.dev/model-manifest/v1"}', "run r")
    bad = {
        "format": "canarium.dev/training-result/v1",
        "name": "iris",
        "version": "not a label!",
        "modelUri": "s3://b/k/model.onnx",
        "sha256": "0" * 64,
    }
    with pytest.raises(ManifestError, match="invalid training result: version"):
        parse_training_result(json.dumps(bad))
