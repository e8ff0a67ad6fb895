"""`canarium model build`: a fitted scikit-learn estimator file and its data, packaged.

Reads the estimator (joblib or pickle, as scikit-learn users save them), the training data
(CSV with a header, .npy or .npz) and the held-out data (a file of its own, or a seeded split
of the training data), then calls `canarium_serving.packaging.package_model`: model.onnx with
its reference statistics, model.reference.json and model.manifest.json. Optionally fits the
estimator on the training part first (`--fit`) and uploads the result (`--upload`).

Needs the `build` extra; `canarium.cli` says so when it is missing, before importing this.
Input problems (a file that cannot be read, a missing column, options that do not fit together)
are `InputError` (exit 2), a model that cannot be packaged or uploaded `BuildError` (exit 1);
both are printed as one line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from canarium_serving.contract import ENV_MODEL_NAME, ENV_MODEL_VERSION, TRAINING_ENV_OUTPUT_URI
from canarium_serving.manifest import ManifestError, valid_name, valid_version
from canarium_serving.packaging import (
    PackagedModel,
    UploadedModel,
    UploadError,
    estimator_task,
    package_model,
    upload_model,
)

DEFAULT_HOLDOUT_FRACTION = 0.2
Array = np.ndarray[Any, Any]


class BuildError(Exception):
    """The model could not be built or uploaded: exit code 1."""

    exit_code = 1


class InputError(BuildError):
    """An input file or option is unusable: exit code 2."""

    exit_code = 2


@dataclass
class Table:
    """Features (float32, rows x columns), their names when the file has them, labels."""

    x: Array
    features: list[str] | None
    y: Array | None


def parse_labels(values: Sequence[str]) -> Array:
    """Labels from text: integers if all are, else numbers if all are, else strings."""
    for kind in (int, float):
        try:
            return np.asarray([kind(v) for v in values])
        except ValueError:
            continue
    return np.asarray(list(values))


def _number(value: str, path: Path, line: int, column: str, hint: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(
            f"{path}: line {line}, column {column!r}: {value!r} is not a number{hint}"
        ) from None


def read_csv(
    path: Path, *, target: str | None, features: Sequence[str] | None
) -> tuple[Array, list[str], Array | None]:
    """Features and labels of a CSV file with a header: the columns `features` in that order
    (default: every column but `target`), and the column `target` as labels."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV file with a header line and data rows is expected")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise InputError(f"{path}: the header names a column twice")
    if target is not None and target not in header:
        raise InputError(f"{path} has no column {target!r} (columns: {', '.join(header)})")
    names = list(features) if features is not None else [h for h in header if h != target]
    missing = [n for n in names if n not in header]
    if missing:
        raise InputError(f"{path} has no column {missing[0]!r} (columns: {', '.join(header)})")
    if not names:
        raise InputError(f"{path}: no feature columns")
    index = [header.index(n) for n in names]
    hint = " (the labels? name their column with --target)" if target is None else ""
    x = np.empty((len(rows) - 1, len(names)), dtype=np.float32)
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise InputError(
                f"{path}: line {i + 2} has {len(row)} fields, the header {len(header)}"
            )
        for j, col in enumerate(index):
            x[i, j] = _number(row[col].strip(), path, i + 2, header[col], hint)
    y = None
    if target is not None:
        y = parse_labels([row[header.index(target)].strip() for row in rows[1:]])
    return x, names, y


def _load_npy(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def read_labels(path: Path, target: str | None = None) -> Array:
    """Labels from a .npy file (one per row) or a CSV file with a header (its one column, or
    the column `target`)."""
    if path.suffix == ".npy":
        y = np.asarray(_load_npy(path))
        if y.ndim not in (1, 2) or y.shape[0] == 0:
            raise InputError(f"{path}: labels must be a 1-D array, got shape {y.shape}")
        return y
    if path.suffix != ".csv":
        raise InputError(f"{path}: labels must be a .npy or .csv file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV file with a header line and data rows is expected")
    header = [h.strip() for h in rows[0]]
    if len(header) == 1:
        column = 0
    elif target is not None and target in header:
        column = header.index(target)
    else:
        raise InputError(f"{path}: {len(header)} columns; labels need one (or --target)")
    return parse_labels([r[column].strip() if column < len(r) else "" for r in rows[1:]])


def read_table(
    path: Path,
    *,
    target: str | None,
    labels: Path | None,
    features: Sequence[str] | None,
) -> Table:
    """The data of one file: CSV (header; `target` is the label column), .npy (features) or
    .npz (arrays X and y, optionally feature_names). `labels`, a file of its own, wins."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        x, names, y = read_csv(path, target=target, features=features)
        table = Table(x, names, y)
    elif suffix in (".npy", ".npz"):
        if target is not None:
            raise InputError(f"--target names a CSV column; {path} is {suffix}")
        table = _read_numpy(path, features)
    else:
        raise InputError(f"{path}: data must be a .csv, .npy or .npz file")
    if labels is not None:
        table.y = read_labels(labels, target)
    if table.x.shape[0] == 0:
        raise InputError(f"{path}: no rows")
    if table.y is not None and table.y.shape[0] != table.x.shape[0]:
        raise InputError(f"{path}: {table.x.shape[0]} rows but {table.y.shape[0]} labels")
    return table


def _read_numpy(path: Path, features: Sequence[str] | None) -> Table:
    loaded = _load_npy(path)
    names = list(features) if features is not None else None
    y = None
    if path.suffix.lower() == ".npz":
        arrays = dict(loaded.items())
        x_key = next((k for k in ("X", "x") if k in arrays), None)
        if x_key is None:
            raise InputError(f"{path}: no array X (has: {', '.join(arrays) or 'none'})")
        x, y = arrays[x_key], arrays.get("y")
        if names is None and "feature_names" in arrays:
            names = [str(n) for n in arrays["feature_names"].tolist()]
    else:
        x = loaded
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{path}: the features are not numbers") from None
    if x.ndim != 2:
        raise InputError(f"{path}: features must be a 2-D array, got shape {x.shape}")
    if names is not None and len(names) != x.shape[1]:
        raise InputError(f"{len(names)} feature names for {x.shape[1]} columns in {path}")
    return Table(x, names, None if y is None else np.asarray(y))


def load_estimator(path: Path) -> Any:
    """The object of a joblib or pickle file. Unpickling runs code from the file: only files
    you trust."""
    import joblib

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        estimator = joblib.load(path)
    except ModuleNotFoundError as exc:
        raise InputError(f"{path}: the estimator needs the module {exc.name!r}") from None
    except Exception as exc:  # unpickling raises anything
        raise InputError(
            f"{path}: not a joblib or pickle file of an estimator ({type(exc).__name__}: "
            f"{_one_line(exc)})"
        ) from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise InputError(f"{path} holds a {type(estimator).__name__}, not a scikit-learn estimator")
    return estimator


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _split(
    table: Table, fraction: float, seed: int, classify: bool
) -> tuple[Table, tuple[Array, Array]]:
    from sklearn.model_selection import train_test_split

    assert table.y is not None
    try:
        parts = train_test_split(
            table.x,
            table.y,
            test_size=fraction,
            random_state=seed,
            stratify=table.y if classify else None,
        )
    except ValueError:  # a class too small to stratify: a plain split
        try:
            parts = train_test_split(table.x, table.y, test_size=fraction, random_state=seed)
        except ValueError as exc:
            raise InputError(f"cannot hold out {fraction} of {len(table.x)} rows: {exc}") from None
    x_train, x_test, y_train, y_test = parts
    return Table(x_train, table.features, y_train), (x_test, y_test)


def _feature_option(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise InputError(f"--feature-names {value!r}: empty name")
    return names


def _identity(args: argparse.Namespace) -> tuple[str, str]:
    name = args.name or os.environ.get(ENV_MODEL_NAME, "")
    version = args.version or os.environ.get(ENV_MODEL_VERSION, "")
    if not name:
        raise InputError(f"no model name: --name NAME (or {ENV_MODEL_NAME})")
    if not version:
        raise InputError(f"no model version: --version VERSION (or {ENV_MODEL_VERSION})")
    if not valid_name(name):
        raise InputError(
            f"--name {name!r}: letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit"
        )
    if not valid_version(version):
        raise InputError(
            f"--version {version!r}: a Kubernetes label value (at most 63 letters, digits, '-', "
            "'_' or '.', starting and ending with a letter or digit), as spec.model.version"
        )
    return name, version


def _check_options(args: argparse.Namespace) -> None:
    if args.target is not None and args.labels is not None:
        raise InputError("--target (a CSV column) and --labels (a file): give one")
    if args.holdout is not None and args.holdout_fraction is not None:
        raise InputError("--holdout (a file) and --holdout-fraction (a split): give one")
    if args.holdout_labels is not None and args.holdout is None:
        raise InputError("--holdout-labels needs --holdout")
    if args.holdout_fraction is not None and not 0 <= args.holdout_fraction < 1:
        raise InputError(f"--holdout-fraction {args.holdout_fraction}: from 0 to below 1")
    if args.bins < 2:
        raise InputError(f"--bins {args.bins}: at least 2")


def _estimator_features(estimator: Any) -> list[str] | None:
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def _fit_or_check(estimator: Any, table: Table, fit: bool, path: Path) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if fit:
        if table.y is None:
            raise InputError("--fit needs the labels: --target COLUMN, --labels FILE or y in .npz")
        try:
            estimator.fit(table.x, table.y)
        except (ValueError, TypeError) as exc:
            raise BuildError(
                f"fitting {type(estimator).__name__} failed: {_one_line(exc)}"
            ) from None
        return
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise BuildError(
            f"the {type(estimator).__name__} in {path} is not fitted: fit it before saving it, "
            "or pass --fit to fit it on the training data here"
        ) from None
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and expected != table.x.shape[1]:
        raise InputError(
            f"the data has {table.x.shape[1]} feature columns, the estimator takes {expected}"
        )


@dataclass
class Result:
    packaged: PackagedModel
    uploaded: UploadedModel | None
    kept: bool  # the local files are still there (not a temporary folder)


@contextlib.contextmanager
def _out_dir(args: argparse.Namespace, name: str, version: str) -> Iterator[tuple[Path, bool]]:
    if args.out is not None:
        yield Path(args.out), True
    elif args.upload is not None:
        with tempfile.TemporaryDirectory(prefix="canarium-build-") as tmp:
            yield Path(tmp), False
    else:
        yield Path(f"{name}-{version}"), True


def _holdout(
    args: argparse.Namespace, table: Table, features: list[str] | None, estimator: Any
) -> tuple[Table, tuple[Array, Array] | None, str | None]:
    """The training part, the held-out data and where it came from: --holdout FILE, or a
    seeded split of the data (--holdout-fraction, default 0.2), or none."""
    if args.holdout is not None:
        held = read_table(
            Path(args.holdout),
            target=args.target,
            labels=Path(args.holdout_labels) if args.holdout_labels else None,
            features=table.features if Path(args.data).suffix.lower() == ".csv" else features,
        )
        if held.y is None:
            raise InputError(f"{args.holdout}: no labels (--target, --holdout-labels or y in .npz)")
        if held.x.shape[1] != table.x.shape[1]:
            raise InputError(
                f"{args.holdout} has {held.x.shape[1]} feature columns, {args.data} "
                f"{table.x.shape[1]}"
            )
        return table, (held.x, held.y), args.holdout
    fraction = DEFAULT_HOLDOUT_FRACTION if args.holdout_fraction is None else args.holdout_fraction
    if fraction == 0:
        return table, None, None
    if table.y is None:
        raise InputError(
            "held-out scores need labels: --target COLUMN (CSV), --labels FILE or y in .npz; "
            "or --holdout-fraction 0 to package without them"
        )
    task = estimator_task(estimator)
    if task == "other":
        raise InputError(
            f"a {type(estimator).__name__} has no held-out scores: --holdout-fraction 0"
        )
    train, held_out = _split(table, fraction, args.seed, task == "classification")
    return train, held_out, f"{args.data} (split: {fraction}, seed {args.seed})"


def build(args: argparse.Namespace) -> Result:
    """Do what `canarium model build` was asked; raises InputError or BuildError."""
    _check_options(args)
    name, version = _identity(args)
    upload_uri = None
    if args.upload is not None:
        upload_uri = args.upload or os.environ.get(TRAINING_ENV_OUTPUT_URI, "")
        if not upload_uri:
            raise InputError(f"--upload without a URI needs {TRAINING_ENV_OUTPUT_URI}")
    estimator_path, data_path = Path(args.estimator), Path(args.data)
    estimator = load_estimator(estimator_path)
    features = _feature_option(args.feature_names)
    if features is None and data_path.suffix.lower() == ".csv" and not args.fit:
        features = _estimator_features(estimator)  # the columns it was fitted on, in its order
    labels = Path(args.labels) if args.labels else None
    table = read_table(data_path, target=args.target, labels=labels, features=features)
    table, holdout, holdout_source = _holdout(args, table, features, estimator)
    _fit_or_check(estimator, table, args.fit, estimator_path)
    with _out_dir(args, name, version) as (out, kept), warnings.catch_warnings():
        # A pipeline fitted on a DataFrame is given the same columns as an array here.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            packaged = package_model(
                estimator,
                table.x,
                out,
                name=name,
                version=version,
                y=table.y,
                holdout=holdout,
                feature_names=table.features,
                bins=args.bins,
                data_source=args.data,
                holdout_source=holdout_source,
            )
        except OSError as exc:
            raise BuildError(f"cannot write {out}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
            raise BuildError(
                f"cannot package the {type(estimator).__name__}: {_one_line(exc)}"
            ) from None
        uploaded = None
        if upload_uri:
            try:
                uploaded = upload_model(out, upload_uri)
            except (UploadError, ManifestError) as exc:
                raise BuildError(_one_line(exc)) from None
    return Result(packaged, uploaded, kept)


def summary(result: Result) -> dict[str, Any]:
    """What -o json|yaml prints: the files written, the sha256, the upload, the manifest."""
    packaged = result.packaged
    document: dict[str, Any] = {"sha256": packaged.sha256}
    if result.kept:
        document["files"] = {
            "model": str(packaged.model_path),
            "reference": str(packaged.built.reference_path),
            "manifest": str(packaged.manifest_path),
        }
    if result.uploaded is not None:
        document["uploaded"] = {
            "uri": result.uploaded.uri,
            "model": result.uploaded.model_uri,
            "manifest": result.uploaded.manifest_uri,
        }
    document["manifest"] = packaged.manifest.dump()
    return document


def render(result: Result) -> str:
    """The text report: where it went, the sha256, what it was trained on, how it scored."""
    m = result.packaged.manifest
    lines = []
    if result.kept:
        lines += [
            f"model.onnx  {result.packaged.model_path}",
            f"manifest    {result.packaged.manifest_path}",
        ]
    if result.uploaded is not None:
        lines.append(f"uploaded    {result.uploaded.model_uri}")
    lines += [
        f"sha256      {m.model.sha256}",
        f"model       {m.name} {m.version}: {m.estimator.class_.rsplit('.', 1)[-1]} "
        f"({m.estimator.task}, {len(m.features)} features, {m.model.bytes} bytes)",
        f"trained on  {m.training.rows} rows of {m.training.source}",
    ]
    if m.holdout is None:
        lines.append("held out    none (no held-out scores)")
    else:
        scores = ", ".join(f"{k} {v:.4g}" for k, v in m.holdout.metrics.items())
        lines.append(f"held out    {m.holdout.rows} rows: {scores}")
    return "\n".join(lines)


def run(args: argparse.Namespace, output: str | None) -> int:
    """Build, print; the exit code (errors as one line on stderr are the caller's)."""
    result = build(args)
    if output == "json":
        print(json.dumps(summary(result), indent=2))
    elif output == "yaml":
        import yaml

        print(yaml.safe_dump(summary(result), sort_keys=False).rstrip("\n"))
    else:
        print(render(result))
    return 0
