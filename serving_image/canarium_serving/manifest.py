"""The model manifest: what a packaged model is, what it was trained on and how it scored.

`canarium model build` and `packaging.package_model` write it as `model.manifest.json` next to
`model.onnx` (and `model.reference.json`), last, so a directory with a manifest is complete.
Whoever takes a candidate model (the operator validating a retraining Job's output, a person
before a rollout) reads it with `read_manifest`, which checks the format, the fields and that
`model.onnx` is the file the manifest describes (its sha256). Standard library and pydantic
only: the operator imports this without numpy, ONNX or scikit-learn.

Format `canarium.dev/model-manifest/v1`, for example::

    {
      "format": "canarium.dev/model-manifest/v1",
      "name": "iris",
      "version": "2.0.0",
      "created": "2026-05-04T12:00:00Z",
      "model": {"file": "model.onnx", "sha256": "9f2c...", "bytes": 1843,
                "reference": "model.reference.json", "input": "input",
                "outputs": ["label", "probabilities"], "opsets": {"": 21, "ai.onnx.ml": 3}},
      "estimator": {"class": "sklearn.pipeline.Pipeline",
                    "steps": ["sklearn.preprocessing.StandardScaler",
                              "sklearn.linear_model.LogisticRegression"],
                    "task": "classification", "classes": ["0", "1", "2"]},
      "features": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
      "training": {"rows": 120, "sha256": "5d1e...", "source": "iris.csv"},
      "holdout": {"rows": 30, "sha256": "0b7a...", "source": "iris.csv (split: 0.2, seed 0)",
                  "metrics": {"accuracy": 0.967, "f1_macro": 0.966}},
      "libraries": {"python": "3.11.2", "canarium": "0.1.0", "scikit-learn": "1.9.1",
                    "skl2onnx": "1.20.0", "onnx": "1.23.2", "onnxruntime": "1.32.0",
                    "numpy": "2.4.6"}
    }

- `model.sha256` is the sha256 of `model.onnx` (what `spec.model.sha256` takes); the reference
  statistics are inside that file, so the digest covers them too.
- `training` is the data the model was fitted on (as the caller says: a fitted estimator's
  history is not in it), `holdout` the data it was scored on, or null when it was not scored.
  `sha256` is a fingerprint of the rows (`packaging.data_fingerprint`: features as float32 and
  labels), so two manifests tell whether their metrics come from the same held-out rows.
- `metrics` are computed from the ONNX model's own predictions (what will be served):
  `accuracy` and `f1_macro` for classifiers, `r2` and `mae` for regressors.
- Readers ignore keys they do not know; a change of meaning or a new required key is a new
  format.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator

from .contract import MANIFEST_FILE

MANIFEST_FORMAT: Final = "canarium.dev/model-manifest/v1"
KNOWN_FORMATS: Final = (MANIFEST_FORMAT,)
# A Kubernetes label value, as ModelDeployment's spec.model.version (canarium.api.common): a
# manifest's version is one a ModelDeployment can name.
VERSION_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
NAME_PATTERN: Final = VERSION_PATTERN  # the same characters, up to 253 of them
CLASSIFIER_METRICS: Final = ("accuracy", "f1_macro")
REGRESSOR_METRICS: Final = ("r2", "mae")
_SHA256: Final = r"^[0-9a-f]{64}$"
_CHUNK: Final = 1 << 20


class ManifestError(ValueError):
    """A manifest that is missing, unreadable, of an unknown format, invalid, or that does not
    describe the model file next to it. The message says which and where, in one line."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ModelFile(_Part):
    file: str = Field(min_length=1, description="The ONNX file, relative to the manifest.")
    sha256: str = Field(pattern=_SHA256)
    bytes: int = Field(ge=1)
    reference: str | None = None
    """The reference statistics' JSON file (also inside the ONNX file)."""
    input: str = "input"
    outputs: tuple[str, ...] = ()
    opsets: dict[str, int] = Field(default_factory=dict)

    @field_validator("file", "reference")
    @classmethod
    def _a_file_next_to_the_manifest(cls, value: str | None) -> str | None:
        if value is not None and (value in (".", "..") or PurePosixPath(value).name != value):
            raise ValueError("must be a file name in the manifest's directory")
        return value


class Estimator(_Part):
    class_: str = Field(alias="class", min_length=1)
    steps: tuple[str, ...] = ()
    task: Literal["classification", "regression", "other"]
    classes: tuple[str, ...] = ()


class Data(_Part):
    rows: int = Field(ge=1)
    sha256: str = Field(pattern=_SHA256)
    source: str | None = None


class Holdout(Data):
    metrics: dict[str, float]


class ModelManifest(_Part):
    format: str
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=63, pattern=VERSION_PATTERN)
    created: datetime
    model: ModelFile
    estimator: Estimator
    features: tuple[str, ...] = Field(min_length=1)
    training: Data
    holdout: Holdout | None = None
    libraries: dict[str, str] = Field(default_factory=dict)

    def dump(self) -> dict[str, object]:
        """The JSON document (the keys as written: `class`, `created` in UTC with a Z)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["created"] = _utc(self.created)
        return data


def _utc(when: datetime) -> str:
    text = when.isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(path: str | Path) -> Path:
    """The manifest of a model directory, or `path` itself when it names a file."""
    p = Path(path)
    return p if p.suffix == ".json" and not p.is_dir() else p / MANIFEST_FILE


def _first_problem(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def parse_manifest(text: str | bytes, where: str = "manifest") -> ModelManifest:
    """Parse and validate a manifest's JSON text (no file checks); ManifestError if not."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict) or "format" not in data:
        raise ManifestError(f"{where}: not a Canarium model manifest (no format)")
    if data["format"] not in KNOWN_FORMATS:
        raise ManifestError(
            f"{where}: unknown manifest format {data['format']!r}; this Canarium reads "
            + ", ".join(KNOWN_FORMATS)
        )
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{where}: invalid manifest: {_first_problem(exc)}") from None


def read_manifest(
    path: str | Path, *, name: str | None = None, version: str | None = None
) -> ModelManifest:
    """Read the manifest of the model directory `path` (or the manifest file itself) and check
    it: the file exists and parses, its format is known, its fields are valid, and the model
    file it names is there with the sha256 it records (and, when given, the expected `name` and
    `version`). Raises ManifestError, whose message says what is wrong."""
    file = manifest_path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"no model manifest at {file} ({MANIFEST_FILE}, written by `canarium model build` "
            "or packaging.package_model)"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read {file}: {exc.strerror or exc}") from None
    manifest = parse_manifest(text, str(file))
    for what, expected, got in (
        ("name", name, manifest.name),
        ("version", version, manifest.version),
    ):
        if expected is not None and got != expected:
            raise ManifestError(f"{file}: {what} is {got!r}, expected {expected!r}")
    model = file.parent / manifest.model.file
    try:
        digest = file_sha256(model)
    except FileNotFoundError:
        raise ManifestError(f"{file}: its model file {model} is missing") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {model}: {exc.strerror or exc}") from None
    if digest != manifest.model.sha256:
        raise ManifestError(
            f"{model}: sha256 {digest} does not match the manifest's {manifest.model.sha256}"
        )
    return manifest


def valid_version(value: str) -> bool:
    """Whether `value` may be a manifest's version (a Kubernetes label value)."""
    return len(value) <= 63 and re.fullmatch(VERSION_PATTERN, value) is not None


def valid_name(value: str) -> bool:
    """Whether `value` may be a manifest's model name."""
    return len(value) <= 253 and re.fullmatch(NAME_PATTERN, value) is not None


# --- The training result: what a retraining Job tells the operator ---------------------------
# A retraining Job's training container ends by writing this JSON to its termination message
# file (TRAINING_ENV_RESULT_FILE, the pod's terminationMessagePath): the kubelet puts it in the
# pod's status, where the operator reads it, so the operator needs no access to the object
# store. Kubernetes keeps 4096 bytes of it; a result is a few hundred.
RESULT_FORMAT: Final = "canarium.dev/training-result/v1"
MAX_RESULT_BYTES: Final = 4096


class TrainingResult(_Part):
    """The model a retraining run made (`packaging.report_result` writes it)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    format: Literal["canarium.dev/training-result/v1"] = RESULT_FORMAT
    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=63, pattern=VERSION_PATTERN)
    model_uri: str = Field(alias="modelUri", min_length=8, max_length=2048)
    sha256: str = Field(pattern=_SHA256)
    # Finite only: a NaN compares False with every bound (it would pass validation), and the
    # API server's JSON has no NaN (the status that records it could not be written).
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict)
    """The model's held-out metrics (the manifest's holdout.metrics)."""
    base_metrics: dict[str, FiniteFloat] = Field(alias="baseMetrics", default_factory=dict)
    """The base model's metrics on the same held-out rows, when the run scored it."""
    holdout_sha256: str | None = Field(None, alias="holdoutSha256", pattern=_SHA256)

    def dump(self) -> str:
        """The JSON text, compact (it must fit in a termination message)."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
        )


def parse_training_result(text: str | bytes, where: str = "training result") -> TrainingResult:
    """Parse and validate a training result's JSON text; ManifestError says what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise ManifestError(f"{where}: not a Canarium training result (format {RESULT_FORMAT})")
    try:
        return TrainingResult.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{where}: invalid training result: {_first_problem(exc)}") from None
