"""Train the iris model and package it for Canarium: a retraining Job's script.

The training image runs `python /train/train.py`; this is such a script (the image carries it
as /opt/canarium/examples/train_iris.py). It reads what the operator tells a retraining Job
from the environment (canarium_serving.contract, training section), all optional, so it runs
by hand too:

    CANARIUM_MODEL_NAME, CANARIUM_MODEL_VERSION  the name and version to package
    CANARIUM_OUTPUT_URI        where to upload the packaged folder (file://, s3://, gs://, az://)
    CANARIUM_BASE_MODEL_URI    the stable model (and _SHA256): scored on the same held-out rows
    CANARIUM_DRIFT_REPORT      why the run was triggered (JSON), printed

    python train_iris.py [--data iris.csv --target species] [--out DIR] [--model forest]
                         [--label-noise 0.5]

It trains on 80% of the data (a stratified split, seed 0), packages the model with its
held-out scores on the other 20% (model.onnx, model.reference.json, model.manifest.json) and
uploads the folder when CANARIUM_OUTPUT_URI is set, then reports the model to the operator
(TrainingContext.report_result: the termination message). The last line it prints is a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from canarium_serving.model import ModelLoadError
from canarium_serving.packaging import (
    TrainingContext,
    UploadError,
    package_model,
    score,
    upload_model,
)
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def load_data(path: Path | None, target: str) -> tuple[Any, Any, list[str]]:
    """Iris as scikit-learn bundles it, or a CSV file with a header and a label column."""
    if path is None:
        iris = load_iris()
        return iris.data.astype(np.float32), iris.target, FEATURES
    names = [n.strip() for n in path.read_text().splitlines()[0].split(",")]
    table = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=str)
    label = names.index(target)
    features = [n for i, n in enumerate(names) if i != label]
    x = np.delete(table, label, axis=1).astype(np.float32)
    return x, table[:, label], features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a CSV file (default: scikit-learn's iris)")
    parser.add_argument("--target", default="species", help="its label column")
    parser.add_argument("--model", choices=["logistic", "forest"], default="logistic")
    parser.add_argument("--out", type=Path, help="where to build (default: a work folder)")
    parser.add_argument("--name", help="default: CANARIUM_MODEL_NAME, else iris")
    parser.add_argument("--version", help="default: CANARIUM_MODEL_VERSION, else dev")
    parser.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="replace this fraction of the training labels with random ones (seed 0): a worse "
        "model on purpose, to see a candidate rejected or rolled back",
    )
    args = parser.parse_args(argv)

    ctx = TrainingContext.from_env()
    name = args.name or ctx.model_name or "iris"
    version = args.version or ctx.model_version or "dev"
    if ctx.drift_report is not None:
        print(f"triggered by drift: {json.dumps(ctx.drift_report)}")

    x, y, features = load_data(args.data, args.target)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    estimator = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        if args.model == "logistic"
        else RandomForestClassifier(n_estimators=50, random_state=0)
    )
    if args.label_noise > 0:
        rng = np.random.default_rng(0)
        noisy = rng.random(len(y_train)) < args.label_noise
        y_train = y_train.copy()
        y_train[noisy] = rng.choice(np.unique(y), size=int(noisy.sum()))
        print(f"{int(noisy.sum())} of {len(y_train)} training labels replaced at random")
    estimator.fit(x_train, y_train)

    out = args.out or ctx.work_dir / name / version
    packaged = package_model(
        estimator,
        x_train,
        out,
        name=name,
        version=version,
        y=y_train,
        holdout=(x_test, y_test),
        feature_names=features,
        data_source=str(args.data or "sklearn.datasets.load_iris"),
        holdout_source="20% stratified split, seed 0",
    )
    manifest = packaged.manifest
    assert manifest.holdout is not None
    summary: dict[str, Any] = {
        "name": name,
        "version": version,
        "sha256": packaged.sha256,
        "metrics": manifest.holdout.metrics,
        "folder": str(out),
    }
    print(
        f"packaged {name} {version} in {out}: sha256 {packaged.sha256}, {manifest.holdout.metrics}"
    )

    base = ctx.fetch_base_model()
    base_metrics: dict[str, float] | None = None
    if base is not None:  # the stable model, on the same held-out rows
        base_metrics = score(base.path, "classification", x_test, y_test)
        summary["base_metrics"] = base_metrics
        print(f"the base model ({ctx.base_model_version}) scores {base_metrics}")

    if ctx.output_uri:
        uploaded = upload_model(out, ctx.output_uri)
        summary["model_uri"] = uploaded.model_uri
        print(f"uploaded to {uploaded.uri}")
        # Last: tells the operator (through the termination message) which model this run made.
        ctx.report_result(uploaded, base_metrics)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, UploadError, ModelLoadError) as exc:  # ManifestError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
