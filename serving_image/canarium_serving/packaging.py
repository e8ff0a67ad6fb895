"""Package a fitted scikit-learn model: `model.onnx` with its reference statistics.

`build_model` trains nothing. It converts a fitted estimator or pipeline to ONNX (skl2onnx),
runs the ONNX model with onnxruntime on the sample data, and records what the served model's
inputs and outputs look like on that sample: per-feature histograms and the output
distribution (class fractions for classifiers, a histogram for regressors). Those go inside
the ONNX file (metadata_props `canarium.reference`, so one sha256 covers both) and next to it
as `model.reference.json`. The serving image does not install scikit-learn/skl2onnx/onnx (the
`build` extra), so they are imported here lazily.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .contract import ONNX_METADATA_KEY, REFERENCE_FILE_SUFFIX
from .metrics_contract import REFERENCE_FORMAT, ReferenceStatistics
from .stats import bucket_counts, fractions, quantile_edges

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
    model_path = out / "model.onnx"
    data = onx.SerializeToString()
    model_path.write_bytes(data)
    reference_path = out / f"model{REFERENCE_FILE_SUFFIX}"
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
