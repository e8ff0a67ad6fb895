"""Package a scikit-learn model for Canarium: `model.onnx` with its reference statistics, a
manifest, and the upload of the result to where a retraining Job is told to put it.

`build_model` trains nothing. It converts a fitted estimator or pipeline to ONNX (skl2onnx),
runs the ONNX model with onnxruntime on the sample data, and records what the served model's
inputs and outputs look like on that sample: per-feature histograms and the output
distribution (class fractions for classifiers, a histogram for regressors). Those go inside
the ONNX file (metadata_props `canarium.reference`, so one sha256 covers both) and next to it
as `model.reference.json`.

`package_model` is `build_model` plus the manifest (`model.manifest.json`, see manifest.py): the
version, the estimator, the features, a fingerprint of the training data and the model's
scores on held-out data. `canarium model build` is its command line. `upload_model` copies a
packaged directory to `CANARIUM_OUTPUT_URI` (file://, s3://, gs://, az://; manifest last), and
`TrainingContext.from_env()` reads what the operator tells a retraining Job (contract.py).

The serving image does not install scikit-learn/skl2onnx/onnx (the `build` extra), so they are
imported here lazily.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from . import __version__
from .contract import (
    DEFAULT_TRAINING_WORK_DIR,
    ENV_DEPLOYMENT,
    ENV_MODEL_NAME,
    ENV_MODEL_VERSION,
    ENV_NAMESPACE,
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_METADATA_KEY,
    REFERENCE_FILE,
    TRAINING_ENV_BASE_MODEL_SHA256,
    TRAINING_ENV_BASE_MODEL_URI,
    TRAINING_ENV_BASE_MODEL_VERSION,
    TRAINING_ENV_DRIFT_REPORT,
    TRAINING_ENV_OUTPUT_URI,
    TRAINING_ENV_RESULT_FILE,
    TRAINING_ENV_TRIGGER,
)
from .fetch import (
    OBJECT_STORE_SCHEMES,
    FetchedModel,
    _redact,
    fetch_model,
    mask_secrets,
    store_reason,
    store_spec,
)
from .manifest import (
    MANIFEST_FORMAT,
    MAX_RESULT_BYTES,
    ManifestError,
    ModelManifest,
    TrainingResult,
    parse_manifest,
    read_manifest,
    valid_name,
    valid_version,
)
from .metrics_contract import REFERENCE_FORMAT, ReferenceStatistics
from .model import ModelLoadError
from .stats import bucket_counts, fractions, quantile_edges

__all__ = [
    "BuiltModel",
    "ManifestError",
    "ModelManifest",
    "PackagedModel",
    "TrainingContext",
    "UploadError",
    "UploadedModel",
    "build_model",
    "data_fingerprint",
    "package_model",
    "read_manifest",
    "upload_model",
]

log = logging.getLogger(__name__)

INPUT_NAME = "input"


@dataclass(frozen=True, slots=True)
class BuiltModel:
    model_path: Path
    reference_path: Path
    sha256: str
    reference: dict[str, Any]


def _feature_names(estimator: Any, sample_x: Any, n: int, given: Sequence[str] | None) -> list[str]:
    if given is not None:
        names = [str(x) for x in given]
    elif hasattr(estimator, "feature_names_in_"):
        names = [str(x) for x in estimator.feature_names_in_]
    elif hasattr(sample_x, "columns"):
        names = [str(x) for x in sample_x.columns]
    else:
        names = [f"f{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} feature names for {n} features")
    if len(set(names)) != n:
        raise ValueError("feature names must be unique")
    return names


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def build_model(
    estimator: Any,
    sample_X: Any,
    out_dir: str | Path,
    *,
    name: str,
    feature_names: Sequence[str] | None = None,
    bins: int = 10,
    target_opset: int | None = None,
) -> BuiltModel:
    """Write `out_dir/model.onnx` and `out_dir/model.reference.json`; return their paths.

    `sample_X` (array-like, [rows, features]) should look like the training data: the
    reference histograms are computed from it. The ONNX model takes one FP32 input named
    "input" of shape [-1, features]; classifiers get plain tensor outputs (no ZipMap):
    `label` and `probabilities`, regressors `variable`.
    """
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    x = np.asarray(sample_X, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"sample_X must be a non-empty 2-D array, got shape {x.shape}")
    n_features = x.shape[1]
    names = _feature_names(estimator, sample_X, n_features, feature_names)
    final = _final_step(estimator)
    options: dict[Any, Any] = {}
    if is_classifier(final):
        options[id(final)] = {"zipmap": False}
    onx = convert_sklearn(
        estimator,
        name=name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options=options or None,
        target_opset=target_opset,
    )
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    results = dict(zip(output_names, session.run(None, {INPUT_NAME: x}), strict=True))

    reference: dict[str, Any] = {
        "format": REFERENCE_FORMAT,
        "model": name,
        "samples": int(x.shape[0]),
        "bins": bins,
        "features": [],
        "outputs": [],
    }
    for col, feature in enumerate(names):
        values = x[:, col]
        edges = quantile_edges(values, bins)
        reference["features"].append(
            {
                "name": feature,
                "input": INPUT_NAME,
                "column": col,
                "edges": edges,
                "fractions": fractions(bucket_counts(values, edges)),
                "min": float(np.nanmin(values)),
                "max": float(np.nanmax(values)),
                "mean": float(np.nanmean(values)),
            }
        )
    classes = [str(c) for c in getattr(final, "classes_", [])]
    for out_name, value in results.items():
        arr = np.asarray(value)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            continue  # e.g. probabilities: the label carries the class distribution
        if arr.dtype.kind in "iuOUS":
            labels = [str(v) for v in arr.tolist()]
            known = classes or sorted(set(labels))
            counts = np.asarray([labels.count(c) for c in known], dtype=np.int64)
            reference["outputs"].append(
                {
                    "name": out_name,
                    "kind": "class",
                    "classes": known,
                    "fractions": fractions(counts),
                }
            )
        elif arr.dtype.kind == "f":
            edges = quantile_edges(arr, bins)
            reference["outputs"].append(
                {
                    "name": out_name,
                    "kind": "value",
                    "edges": edges,
                    "fractions": fractions(bucket_counts(arr, edges)),
                }
            )
    _check_agreement(estimator, sample_X, results, output_names)
    ReferenceStatistics.model_validate(reference)  # what the server will accept

    ref_json = orjson.dumps(reference, option=orjson.OPT_INDENT_2)
    entry = onx.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = ref_json.decode()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    data = onx.SerializeToString()
    model_path.write_bytes(data)
    reference_path = out / REFERENCE_FILE
    reference_path.write_bytes(ref_json + b"\n")
    return BuiltModel(
        model_path=model_path,
        reference_path=reference_path,
        sha256=hashlib.sha256(data).hexdigest(),
        reference=reference,
    )


def _check_agreement(
    estimator: Any, sample_x: Any, results: dict[str, Any], output_names: list[str]
) -> None:
    """Warn when the ONNX model does not predict what the estimator predicts."""
    if not hasattr(estimator, "predict"):
        return
    expected = np.asarray(estimator.predict(sample_x))
    got = np.asarray(results[output_names[0]])
    if got.shape != expected.shape:
        got = got.reshape(expected.shape) if got.size == expected.size else got
    if expected.dtype.kind == "f":
        ok = bool(np.allclose(got, expected, rtol=1e-3, atol=1e-3))
    else:
        ok = bool(np.mean(got.astype(str) == expected.astype(str)) >= 0.999)
    if not ok:
        log.warning("the ONNX model's predictions differ from the estimator's on the sample")


# --- package_model: build_model plus the manifest ---------------------------------------------

# What the manifest's `libraries` records (distribution names), besides Python and Canarium.
LIBRARIES: Final = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A packaged model directory: model.onnx, model.reference.json, model.manifest.json."""

    built: BuiltModel
    manifest_path: Path
    manifest: ModelManifest

    @property
    def model_path(self) -> Path:
        return self.built.model_path

    @property
    def sha256(self) -> str:
        return self.built.sha256


def data_fingerprint(X: Any, y: Any = None) -> str:
    """A sha256 of data as a model sees it, so that manifests can tell whether they were made
    from the same rows: over the line `canarium-data/v1 <rows>x<columns>`, the features as
    little-endian float32 in row order and, when given, the line `labels` and one line per
    row's label (`str()` of the value as given: 0, 1.5, setosa; tab-separated for several
    outputs). The same rows give the same fingerprint from a CSV file or a numpy array."""
    x = np.asarray(X, dtype="<f4")
    if x.ndim != 2:
        raise ValueError(f"the features must be a 2-D array, got shape {x.shape}")
    rows, columns = x.shape
    h = hashlib.sha256(f"canarium-data/v1 {rows}x{columns}\n".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if y is not None:
        labels = np.asarray(y)
        if labels.shape[0] != rows:
            raise ValueError(f"{labels.shape[0]} labels for {rows} rows")
        h.update(b"labels\n")
        for row in labels.reshape(rows, -1).tolist():
            h.update(("\t".join(str(v) for v in row) + "\n").encode())
    return h.hexdigest()


def _public_name(cls: type) -> str:
    """`sklearn.linear_model.LogisticRegression`, not `sklearn.linear_model._logistic...`:
    the module path up to its first private part, as scikit-learn exports its classes."""
    parts = []
    for part in cls.__module__.split("."):
        if part.startswith("_"):
            break
        parts.append(part)
    return ".".join([*parts, cls.__qualname__])


def estimator_task(estimator: Any) -> str:
    """What the estimator (a pipeline's last step) does: "classification", "regression" or
    "other" (held-out scores need one of the first two)."""
    from sklearn.base import is_classifier, is_regressor

    final = _final_step(estimator)
    if is_classifier(final):
        return "classification"
    if is_regressor(final):
        return "regression"
    return "other"


def _describe_estimator(estimator: Any) -> dict[str, Any]:
    steps = getattr(estimator, "steps", None) or []
    final = _final_step(estimator)
    task = estimator_task(estimator)
    return {
        "class": _public_name(type(estimator)),
        "steps": [_public_name(type(s)) for _, s in steps if s not in (None, "passthrough")],
        "task": task,
        "classes": [str(c) for c in getattr(final, "classes_", [])]
        if task == "classification"
        else [],
    }


def score(model_path: Path, task: str, X: Any, y: Any) -> dict[str, float]:
    """The ONNX model's scores on (X, y), from its own predictions (what will be served):
    accuracy and f1_macro for a classifier, r2 and mae for a regressor."""
    import onnxruntime as ort
    from sklearn import metrics

    x = np.asarray(X, dtype=np.float32)
    truth = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"the held-out features must be a non-empty 2-D array, got {x.shape}")
    if truth.shape[0] != x.shape[0]:
        raise ValueError(f"{truth.shape[0]} held-out labels for {x.shape[0]} rows")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    predicted = np.asarray(session.run(None, {INPUT_NAME: x})[0])
    if predicted.ndim == 2 and predicted.shape[1] == 1:
        predicted = predicted[:, 0]
    if task == "classification":
        truth, predicted = truth.ravel(), predicted.ravel()
        if not (truth.dtype.kind in "biuf" and predicted.dtype.kind in "biuf"):
            truth = np.asarray([str(v) for v in truth.tolist()])
            predicted = np.asarray([str(v) for v in predicted.tolist()])
        return {
            "accuracy": float(metrics.accuracy_score(truth, predicted)),
            "f1_macro": float(metrics.f1_score(truth, predicted, average="macro", zero_division=0)),
        }
    if task == "regression":
        truth = truth.astype(np.float64).reshape(predicted.shape)
        return {
            "r2": float(metrics.r2_score(truth, predicted)),
            "mae": float(metrics.mean_absolute_error(truth, predicted)),
        }
    raise ValueError("held-out scores need a classifier or a regressor")


def _libraries() -> dict[str, str]:
    found = {"python": platform.python_version(), "canarium": __version__}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _opsets(model_path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {entry.domain or "": int(entry.version) for entry in model.opset_import}


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def package_model(
    estimator: Any,
    X: Any,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    y: Any = None,
    holdout: tuple[Any, Any] | None = None,
    feature_names: Sequence[str] | None = None,
    bins: int = 10,
    target_opset: int | None = None,
    data_source: str | None = None,
    holdout_source: str | None = None,
    created: dt.datetime | None = None,
) -> PackagedModel:
    """`build_model` and the manifest: write `out_dir/model.onnx`, `model.reference.json` and,
    last, `model.manifest.json` (manifest.py describes it).

    `X` (and `y`, its labels) is the data the fitted `estimator` was trained on: the reference
    statistics come from `X`, the manifest records its row count and fingerprint. `holdout`,
    `(X_test, y_test)` the estimator never saw, is scored with the ONNX model (accuracy and
    f1_macro, or r2 and mae); without it the manifest's `holdout` is null. `data_source` and
    `holdout_source` say where the data came from (a path, a URI: free text for people).
    An earlier manifest in `out_dir` is removed first, so a failed build leaves none.
    """
    if not valid_version(version):
        raise ValueError(
            f"version {version!r} must be a Kubernetes label value (at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit), as spec.model.version"
        )
    if not valid_name(name):
        raise ValueError(
            f"name {name!r} must be at most 253 letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit"
        )
    task = estimator_task(estimator)
    if holdout is not None and task == "other":
        raise ValueError(
            f"held-out scores need a classifier or a regressor, not {type(estimator).__name__}"
        )
    out = Path(out_dir)
    manifest_path = out / MANIFEST_FILE
    with contextlib.suppress(FileNotFoundError):
        manifest_path.unlink()
    built = build_model(
        estimator,
        X,
        out,
        name=name,
        feature_names=feature_names,
        bins=bins,
        target_opset=target_opset,
    )
    training = {"rows": built.reference["samples"], "sha256": data_fingerprint(X, y)}
    if data_source:
        training["source"] = data_source
    held: dict[str, Any] | None = None
    if holdout is not None:
        hx, hy = holdout
        held = {
            "rows": int(np.asarray(hy).shape[0]),
            "sha256": data_fingerprint(hx, hy),
            **({"source": holdout_source} if holdout_source else {}),
            "metrics": score(built.model_path, task, hx, hy),
        }
    when = (created or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    document = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "created": when.isoformat().replace("+00:00", "Z"),
        "model": {
            "file": built.model_path.name,
            "sha256": built.sha256,
            "bytes": built.model_path.stat().st_size,
            "reference": built.reference_path.name,
            "input": INPUT_NAME,
            "outputs": [o["name"] for o in _session_outputs(built.model_path)],
            "opsets": _opsets(built.model_path),
        },
        "estimator": _describe_estimator(estimator),
        "features": [f["name"] for f in built.reference["features"]],
        "training": training,
        "holdout": held,
        "libraries": _libraries(),
    }
    manifest = parse_manifest(json.dumps(document), str(manifest_path))  # what readers accept
    _write_atomically(manifest_path, json.dumps(document, indent=2).encode() + b"\n")
    return PackagedModel(built=built, manifest_path=manifest_path, manifest=manifest)


def _session_outputs(model_path: Path) -> list[dict[str, Any]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return [{"name": o.name, "type": o.type} for o in session.get_outputs()]


# --- The retraining Job's side: what the operator says, and the upload of the result ----------


class UploadError(RuntimeError):
    """The packaged model could not be uploaded; the message says why (no secrets)."""


@dataclass(frozen=True, slots=True)
class UploadedModel:
    uri: str
    """The folder it went to (CANARIUM_OUTPUT_URI)."""
    model_uri: str
    """`<uri>/model.onnx`: what a ModelDeployment's spec.model.uri takes."""
    manifest_uri: str
    sha256: str
    """The model file's: spec.model.sha256."""
    manifest: ModelManifest


@dataclass(frozen=True, slots=True)
class TrainingContext:
    """What the operator tells a retraining Job through its environment (contract.py's
    training section); a field is None when its variable is not set (a run by hand)."""

    output_uri: str | None
    model_name: str | None
    model_version: str | None
    base_model_uri: str | None
    base_model_sha256: str | None
    base_model_version: str | None
    drift_report: dict[str, Any] | None
    trigger: str | None
    deployment: str | None
    namespace: str | None
    result_file: str | None
    """Where `report_result` writes the run's result (the termination message file)."""
    work_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrainingContext:
        env = os.environ if env is None else env
        report = None
        if env.get(TRAINING_ENV_DRIFT_REPORT):
            try:
                report = json.loads(env[TRAINING_ENV_DRIFT_REPORT])
            except ValueError as exc:
                raise ValueError(f"{TRAINING_ENV_DRIFT_REPORT} is not JSON: {exc}") from None
            if not isinstance(report, dict):
                raise ValueError(f"{TRAINING_ENV_DRIFT_REPORT} is not a JSON object")
        return cls(
            output_uri=env.get(TRAINING_ENV_OUTPUT_URI) or None,
            model_name=env.get(ENV_MODEL_NAME) or None,
            model_version=env.get(ENV_MODEL_VERSION) or None,
            base_model_uri=env.get(TRAINING_ENV_BASE_MODEL_URI) or None,
            base_model_sha256=env.get(TRAINING_ENV_BASE_MODEL_SHA256) or None,
            base_model_version=env.get(TRAINING_ENV_BASE_MODEL_VERSION) or None,
            drift_report=report,
            trigger=env.get(TRAINING_ENV_TRIGGER) or None,
            deployment=env.get(ENV_DEPLOYMENT) or None,
            namespace=env.get(ENV_NAMESPACE) or None,
            result_file=env.get(TRAINING_ENV_RESULT_FILE) or None,
            work_dir=Path(DEFAULT_TRAINING_WORK_DIR),
        )

    def fetch_base_model(self, cache_dir: str | Path | None = None) -> FetchedModel | None:
        """The stable model the run starts from, downloaded and checked against its sha256
        (ModelLoadError if that fails); None when the operator named none."""
        if not self.base_model_uri:
            return None
        return fetch_model(
            self.base_model_uri,
            sha256=self.base_model_sha256,
            cache_dir=cache_dir or self.work_dir / "base-model",
        )

    def report_result(
        self, uploaded: UploadedModel, base_metrics: Mapping[str, float] | None = None
    ) -> TrainingResult:
        """Tell the operator which model this run made: the uploaded model, its held-out
        metrics and, when the run scored the base model on the same rows, the base's. Written
        to `result_file` (the container's termination message, which the operator reads);
        nothing is written when the run has none (a run by hand). Call it last."""
        manifest = uploaded.manifest
        result = TrainingResult(
            name=manifest.name,
            version=manifest.version,
            model_uri=uploaded.model_uri,
            sha256=uploaded.sha256,
            metrics=dict(manifest.holdout.metrics) if manifest.holdout else {},
            base_metrics=dict(base_metrics or {}),
            holdout_sha256=manifest.holdout.sha256 if manifest.holdout else None,
        )
        text = result.dump()
        if len(text.encode()) > MAX_RESULT_BYTES:  # the kubelet would cut it: say so here
            raise UploadError(f"the training result is {len(text)} bytes, over {MAX_RESULT_BYTES}")
        if self.result_file:
            Path(self.result_file).write_text(text)
        return result


def _join(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name


def upload_model(
    model_dir: str | Path,
    uri: str | None = None,
    *,
    overwrite: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> UploadedModel:
    """Copy a packaged model directory (checked with `read_manifest` first) to the folder
    `uri`, by default CANARIUM_OUTPUT_URI: `file:///path` or a path, `s3://bucket/prefix`,
    `gs://bucket/prefix`, `az://container/prefix` (credentials from the environment, as the
    model server reads them: see fetch.py). The files go one by one, each atomically, the
    manifest last: a folder with a manifest is complete. A folder that already holds another
    model (a manifest with another sha256) is refused unless `overwrite`: a version that pods
    serve must not change under them. Raises ManifestError or UploadError."""
    env = os.environ if env is None else env
    target = uri or env.get(TRAINING_ENV_OUTPUT_URI)
    if not target:
        raise UploadError(f"no output URI: pass one or set {TRAINING_ENV_OUTPUT_URI}")
    source = Path(model_dir)
    manifest = read_manifest(source)
    names = [manifest.model.file]
    if manifest.model.reference and (source / manifest.model.reference).is_file():
        names.append(manifest.model.reference)
    names.append(MANIFEST_FILE)
    parsed = urllib.parse.urlsplit(target)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise UploadError(f"{target!r}: a file URI names a local path (file:///path)")
        folder = Path(urllib.parse.unquote(parsed.path) if scheme else target)
        _upload_local(source, names, folder, manifest, overwrite)
    elif scheme in OBJECT_STORE_SCHEMES:
        _upload_object_store(source, names, target, manifest, overwrite, env, timeout)
    else:
        raise UploadError(
            f"unsupported output URI scheme {scheme!r} in {target!r}; use file://, a path, "
            "s3://, gs:// or az:// (azure://)"
        )
    log.info("uploaded %s %s (sha256 %s) to %s", manifest.name, manifest.version,
             manifest.model.sha256, target)  # fmt: skip
    return UploadedModel(
        uri=target,
        model_uri=_join(target, manifest.model.file),
        manifest_uri=_join(target, MANIFEST_FILE),
        sha256=manifest.model.sha256,
        manifest=manifest,
    )


def _refuse_another_model(existing: bytes | None, where: str, manifest: ModelManifest) -> None:
    if existing is None:
        return
    try:
        there = parse_manifest(existing, where)
    except ManifestError:
        return  # not a model we know: nothing that pods could be serving from it
    if there.model.sha256 != manifest.model.sha256:
        raise UploadError(
            f"{where} already holds {there.name} {there.version} (sha256 "
            f"{there.model.sha256[:12]}...), not this model: a published model does not "
            "change; upload to a new folder (or pass overwrite=True)"
        )


def _upload_local(
    source: Path, names: list[str], folder: Path, manifest: ModelManifest, overwrite: bool
) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve() == source.resolve():
            return  # built in place
        if not overwrite:
            with contextlib.suppress(FileNotFoundError):
                existing = (folder / MANIFEST_FILE).read_bytes()
                _refuse_another_model(existing, str(folder / MANIFEST_FILE), manifest)
        for name in names:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
            os.close(fd)
            try:
                shutil.copyfile(source / name, tmp)
                os.replace(tmp, folder / name)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except OSError as exc:
        raise UploadError(f"cannot write to {folder}: {exc.strerror or exc}") from None


def _upload_object_store(
    source: Path,
    names: list[str],
    target: str,
    manifest: ModelManifest,
    overwrite: bool,
    env: Mapping[str, str],
    timeout: float,
) -> None:
    import obstore
    from obstore.store import AzureStore, GCSStore, S3Store

    safe = _redact(target)
    try:
        spec = store_spec(target, env)
    except ModelLoadError as exc:
        raise UploadError(str(exc).replace("<key>", "<folder>")) from None
    prefix = spec.path.rstrip("/")
    client: Any = {
        "allow_http": spec.allow_http,
        "connect_timeout": dt.timedelta(seconds=min(timeout, 10.0)),
        "timeout": dt.timedelta(seconds=timeout),
        "user_agent": "canarium-training",
    }
    retry: Any = {"max_retries": 3, "retry_timeout": dt.timedelta(seconds=timeout)}
    config: Any = spec.config
    kinds: dict[str, Any] = {"s3": S3Store, "gcs": GCSStore, "azure": AzureStore}
    name = ""
    try:
        store = kinds[spec.kind](
            spec.bucket, config=config, client_options=client, retry_config=retry
        )
        if not overwrite:
            name = MANIFEST_FILE
            existing: bytes | None = None
            try:
                existing = bytes(obstore.get(store, f"{prefix}/{name}").bytes())
            except FileNotFoundError:  # obstore's NotFoundError: nothing there yet
                pass
            except Exception as exc:  # e.g. a role that may write but not read
                log.warning("cannot read %s to check for an earlier model (%s); uploading",
                            _join(safe, name), mask_secrets(store_reason(exc), env))  # fmt: skip
            _refuse_another_model(existing, _join(safe, name), manifest)
        for name in names:
            content_type = (
                "application/json" if name.endswith(".json") else "application/octet-stream"
            )
            obstore.put(
                store,
                f"{prefix}/{name}",
                source / name,
                attributes={"Content-Type": content_type},
            )
    except UploadError:
        raise
    except Exception as exc:  # obstore's errors
        reason = mask_secrets(store_reason(exc), env)
        raise UploadError(f"cannot upload {_join(safe, name)}: {reason}") from None
