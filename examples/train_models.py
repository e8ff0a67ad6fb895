"""Train the example models and package them for Canarium (model.onnx + reference statistics).

    .venv/bin/python examples/train_models.py [--out build/models]

Writes, for each model, <out>/<name>/<version>/model.onnx (reference statistics inside, under
the ONNX metadata key `canarium.reference`) and model.reference.json next to it, and prints the
sha256 to put in a ModelDeployment's spec.model.sha256. Only datasets bundled with scikit-learn
are used (nothing is downloaded):

- iris v1: logistic regression on the iris flowers (4 features, 3 classes), the quickstart model;
- iris v2: a random forest on the same data, a plausible next version for a canary;
- digits v1: a random forest of 100 trees on 8x8 handwritten digits (64 features, 10 classes,
  a 3-4 MB ONNX file), the bigger model of the serving benchmark.

Needs the `build` extra (scikit-learn, skl2onnx, onnx): pip install -e '.[build]'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from canarium_serving.packaging import build_model
from sklearn.datasets import load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/models"), help="output folder")
    args = parser.parse_args(argv)

    iris = load_iris()
    x = iris.data.astype(np.float32)
    features = [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names]
    digits = load_digits()
    xd = digits.data.astype(np.float32)
    models = [
        (
            "iris",
            "v1",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            x,
            iris.target,
            features,
        ),
        (
            "iris",
            "v2",
            RandomForestClassifier(n_estimators=50, random_state=0),
            x,
            iris.target,
            features,
        ),
        (
            "digits",
            "v1",
            RandomForestClassifier(n_estimators=100, random_state=0),
            xd,
            digits.target,
            [f"pixel_{i // 8}_{i % 8}" for i in range(64)],
        ),
    ]
    for name, version, estimator, data, target, names in models:
        estimator.fit(data, target)
        built = build_model(
            estimator, data, args.out / name / version, name=name, feature_names=names
        )
        size = built.model_path.stat().st_size
        print(f"{name} {version}: {built.model_path} ({size} bytes) sha256 {built.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
