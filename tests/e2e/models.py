"""Real models for the e2e tests: trained with scikit-learn, packaged with
`canarium_serving.packaging.build_model` (ONNX + reference statistics). On real pods they are
served from a ConfigMap (`in_configmap`: configmap://<name>/model.onnx, as a user would).

- good_v1: iris logistic regression (the quickstart model);
- good_v2: iris random forest; a plausible next version (predictions mostly agree with v1);
- drifted: logistic regression trained on iris with the petal features shifted up (+1.5 cm
  length, +0.6 cm width). On live iris rows it answers 200 but predicts smaller classes (most
  virginica become versicolor, many versicolor setosa): prediction drift against v1. Its
  reference statistics are computed from the *unshifted* iris rows, so live inputs match its
  own input reference (no input drift) and only the predictions differ;
- broken: trained on the first 3 iris features only, so every live 4-feature request is a 400.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from canarium_serving.packaging import build_model

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
DRIFT_SHIFT = np.array([0.0, 0.0, 1.5, 0.6], dtype=np.float32)


@dataclass(frozen=True)
class PackagedModel:
    name: str
    path: Path  # model.onnx
    uri: str  # file:///abs/path/model.onnx, as spec.model.uri
    sha256: str  # as spec.model.sha256
    estimator: Any  # the fitted scikit-learn estimator

    def predict(self, x: np.ndarray[Any, Any]) -> list[int]:
        """The estimator's labels for rows x (what the served model must answer)."""
        return [int(v) for v in self.estimator.predict(x)]


@dataclass(frozen=True)
class E2EModels:
    good_v1: PackagedModel
    good_v2: PackagedModel
    drifted: PackagedModel
    broken: PackagedModel
    x: np.ndarray[Any, Any]  # iris features, FP32 [150, 4]: the live traffic
    y: np.ndarray[Any, Any]  # iris labels


def build_e2e_models(root: Path) -> E2EModels:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target

    def package(name: str, estimator: Any, sample: np.ndarray[Any, Any], names: list[str]) -> Any:
        built = build_model(estimator, sample, root / name, name="iris", feature_names=names)
        path = built.model_path.resolve()
        return PackagedModel(name, path, path.as_uri(), built.sha256, estimator)

    def logistic() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    return E2EModels(
        good_v1=package("good_v1", logistic().fit(x, y), x, FEATURES),
        good_v2=package(
            "good_v2",
            RandomForestClassifier(n_estimators=50, random_state=0).fit(x, y),
            x,
            FEATURES,
        ),
        drifted=package("drifted", logistic().fit(x + DRIFT_SHIFT, y), x, FEATURES),
        broken=package("broken", logistic().fit(x[:, :3], y), x[:, :3], FEATURES[:3]),
        x=x,
        y=y,
    )


def in_configmap(cluster: Any, namespace: str, model: PackagedModel) -> PackagedModel:
    """`model` stored in a ConfigMap of `namespace` (binaryData model.onnx), as the example's
    `kubectl create configmap <name> --from-file=model.onnx=...` does; the copy's uri is
    configmap://<name>/model.onnx."""
    name = f"model-{model.name.replace('_', '-')}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "binaryData": {"model.onnx": base64.b64encode(model.path.read_bytes()).decode()},
        },
        namespace,
    )
    return dataclasses.replace(model, uri=f"configmap://{name}/model.onnx")


def model_deployment(
    name: str,
    model: PackagedModel,
    *,
    version: str = "1.0.0",
    replicas: int = 3,
    **spec: Any,
) -> dict[str, Any]:
    """A ModelDeployment serving `model` from its file:// URI (with its sha256); extra keys
    (rollout, traffic, ...) go into spec as given. No rollout policy unless given."""
    return {
        "apiVersion": "canarium.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": model.uri,
                "format": "onnx",
                "version": version,
                "sha256": model.sha256,
            },
            "serving": {"replicas": replicas},
            **spec,
        },
    }
