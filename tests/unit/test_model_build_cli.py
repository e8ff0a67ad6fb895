"""`canarium model build`: files in, a packaged model out; usage errors exit 2 and build
errors exit 1, each one line on stderr; -o json|yaml for machines; the missing `build` extra
said in one line. Real scikit-learn estimators saved with joblib and pickle, real data files."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import yaml
from canarium.cli import MODEL_BUILD_EPILOG, build_parser, main
from canarium_serving import contract
from canarium_serving.manifest import read_manifest
from canarium_serving.packaging import data_fingerprint
from sklearn.datasets import load_iris, make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = np.asarray(["setosa", "versicolor", "virginica"])


def write_csv(
    path: Path, x: Any, y: Any, names: list[str] = FEATURES, target: str = "species"
) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, target])
        for row, label in zip(np.asarray(x).tolist(), np.asarray(y).tolist(), strict=True):
            writer.writerow([*row, label])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """iris.csv (all rows, species names), iris-train/-test.csv, a pipeline fitted on the
    training rows (joblib and pickle), an unfitted one, a regressor and its .npz data."""
    root = tmp_path_factory.mktemp("inputs")
    iris = load_iris()
    y = SPECIES[iris.target]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, y, test_size=0.2, random_state=1, stratify=y
    )
    fitted = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        x_train, y_train
    )
    joblib.dump(fitted, root / "iris.joblib")
    with (root / "iris.pkl").open("wb") as f:
        pickle.dump(fitted, f)
    joblib.dump(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), root / "new.joblib"
    )
    with (root / "dict.pkl").open("wb") as f:
        pickle.dump({"not": "an estimator"}, f)
    xr, yr = make_regression(n_samples=200, n_features=3, noise=3.0, random_state=0)
    np.savez(root / "reg.npz", X=xr, y=yr, feature_names=np.asarray(["a", "b", "c"]))
    joblib.dump(Ridge().fit(xr, yr), root / "ridge.joblib")
    return {
        "root": root,
        "fitted": fitted,
        "iris": write_csv(root / "iris.csv", iris.data, y),
        "train": write_csv(root / "iris-train.csv", x_train, y_train),
        "test": write_csv(root / "iris-test.csv", x_test, y_test),
        "split": (x_train, x_test, y_train, y_test),
        "reg": (xr, yr),
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> tuple[str, str]:
    assert main(["model", "build", *argv]) == code
    out, err = capsys.readouterr()
    if code:
        assert err.startswith("error: "), err
        assert err.count("\n") == 1, err  # one line
        assert "Traceback" not in err
    return out, err


@pytest.fixture(autouse=True)
def _no_training_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        contract.ENV_MODEL_NAME,
        contract.ENV_MODEL_VERSION,
        contract.TRAINING_ENV_OUTPUT_URI,
    ):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


def test_a_fitted_pipeline_with_held_out_data(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(
        [str(files["root"] / "iris.joblib"), str(files["train"]), "--target", "species",
         "--holdout", str(files["test"]), "--name", "iris", "--version", "2.0.0",
         "--out", str(tmp_path / "built")],
        capsys,
    )  # fmt: skip
    manifest = read_manifest(tmp_path / "built", name="iris", version="2.0.0")
    x_train, x_test, y_train, y_test = files["split"]
    assert manifest.features == tuple(FEATURES)  # the CSV header
    assert manifest.estimator.classes == tuple(SPECIES)
    assert manifest.training.rows == 120
    assert manifest.training.source == str(files["train"])
    # the same rows from a CSV file and from numpy give the same fingerprint
    assert manifest.training.sha256 == data_fingerprint(x_train, y_train)
    assert manifest.holdout is not None
    assert manifest.holdout.rows == 30
    assert manifest.holdout.sha256 == data_fingerprint(x_test, y_test)
    accuracy = accuracy_score(y_test, files["fitted"].predict(x_test))
    assert manifest.holdout.metrics["accuracy"] == pytest.approx(accuracy)
    lines = {line[:12].strip(): line[12:] for line in out.splitlines()}
    assert lines["model.onnx"] == str(tmp_path / "built" / "model.onnx")
    assert lines["manifest"] == str(tmp_path / "built" / "model.manifest.json")
    assert lines["sha256"] == manifest.model.sha256
    assert lines["model"].startswith("iris 2.0.0: Pipeline (classification, 4 features, ")
    assert lines["held out"] == (
        f"30 rows: accuracy {accuracy:.4g}, f1_macro {manifest.holdout.metrics['f1_macro']:.4g}"
    )


def test_fit_trains_on_a_seeded_stratified_split(
    files: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files["root"] / "new.joblib"), str(files["iris"]), "--target", "species",
            "--fit", "--name", "iris", "--version", "3.0.0", "-o", "json"]  # fmt: skip
    out, _ = run(argv, capsys)
    result = json.loads(out)
    default_out = Path("iris-3.0.0").resolve()
    assert Path(result["files"]["model"]).resolve() == default_out / "model.onnx"
    manifest = read_manifest(default_out)
    assert result["manifest"] == manifest.dump()
    assert result["sha256"] == manifest.model.sha256
    assert manifest.training.rows == 120
    assert manifest.holdout is not None
    assert manifest.holdout.rows == 30
    assert manifest.holdout.source == f"{files['iris']} (split: 0.2, seed 0)"
    assert manifest.holdout.metrics["accuracy"] > 0.9
    # stratified: 10 of each species held out (checked through the fingerprint)
    iris = load_iris()
    _, x_test, _, y_test = train_test_split(
        iris.data, SPECIES[iris.target], test_size=0.2, random_state=0,
        stratify=SPECIES[iris.target],
    )  # fmt: skip
    assert Counter(y_test.tolist()) == dict.fromkeys(SPECIES.tolist(), 10)
    assert manifest.holdout.sha256 == data_fingerprint(x_test, y_test)
    # the seed is the split's: another seed holds out other rows
    run([*argv[:-2], "--seed", "7", "--out", "seed7"], capsys)
    other = read_manifest("seed7")
    assert other.holdout is not None
    assert other.holdout.sha256 != manifest.holdout.sha256
    assert other.training.sha256 != manifest.training.sha256


def test_a_regressor_from_npz_as_json(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(
        [str(files["root"] / "ridge.joblib"), str(files["root"] / "reg.npz"),
         "--name", "reg", "--version", "1", "--holdout-fraction", "0.25", "-o", "json",
         "--out", str(tmp_path / "reg")],
        capsys,
    )  # fmt: skip
    result = json.loads(out)
    manifest = result["manifest"]
    assert manifest["estimator"]["task"] == "regression"
    assert manifest["features"] == ["a", "b", "c"]  # the .npz's feature_names
    assert manifest["training"]["rows"] == 150
    assert manifest["holdout"]["rows"] == 50
    assert set(manifest["holdout"]["metrics"]) == {"r2", "mae"}
    xr, yr = files["reg"]
    _, x_test, _, y_test = train_test_split(xr, yr, test_size=0.25, random_state=0)
    ridge = joblib.load(files["root"] / "ridge.joblib")
    assert manifest["holdout"]["metrics"]["r2"] == pytest.approx(
        r2_score(y_test, ridge.predict(x_test)), rel=1e-4
    )
    assert manifest["holdout"]["sha256"] == data_fingerprint(x_test, y_test)
    assert result["sha256"] == read_manifest(tmp_path / "reg").model.sha256
    assert result["files"]["reference"] == str(tmp_path / "reg" / "model.reference.json")


def test_npy_with_labels_and_names_and_a_pickle_file(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x_train, x_test, y_train, y_test = files["split"]
    for name, array in {"x": x_train, "y": y_train, "xt": x_test, "yt": y_test}.items():
        np.save(tmp_path / f"{name}.npy", array)
    out, _ = run(
        [str(files["root"] / "iris.pkl"), str(tmp_path / "x.npy"), "--labels",
         str(tmp_path / "y.npy"), "--holdout", str(tmp_path / "xt.npy"), "--holdout-labels",
         str(tmp_path / "yt.npy"), "--feature-names", "sl,sw,pl,pw", "--name", "iris",
         "--version", "2", "-o", "yaml", "--out", str(tmp_path / "m")],
        capsys,
    )  # fmt: skip
    result = yaml.safe_load(out)
    assert result["manifest"]["features"] == ["sl", "sw", "pl", "pw"]
    assert result["manifest"]["holdout"]["sha256"] == data_fingerprint(x_test, y_test)
    assert result["manifest"]["training"]["sha256"] == data_fingerprint(x_train, y_train)


def test_csv_columns_are_taken_by_the_estimators_feature_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An estimator fitted on a DataFrame knows its columns (`feature_names_in_`, which
    scikit-learn sets from the frame's columns, set here as it would: the test needs no
    pandas): a CSV file with them in another order and an extra column gives the model its
    features in its own order."""
    iris = load_iris()
    est = LogisticRegression(max_iter=1000).fit(iris.data, iris.target)
    est.feature_names_in_ = np.asarray(FEATURES, dtype=object)
    joblib.dump(est, tmp_path / "df.joblib")
    order = [3, 0, 2, 1]
    extra = np.c_[iris.data[:, order], np.arange(150)]
    write_csv(tmp_path / "shuffled.csv", extra, iris.target, [FEATURES[i] for i in order] + ["id"])
    run([str(tmp_path / "df.joblib"), str(tmp_path / "shuffled.csv"), "--target", "species",
         "--name", "iris", "--version", "1", "--out", "df"], capsys)  # fmt: skip
    manifest = read_manifest("df")
    assert manifest.features == tuple(FEATURES)
    assert manifest.holdout is not None
    assert manifest.holdout.metrics["accuracy"] > 0.9  # the right columns went in


def test_upload_to_the_output_uri(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """In a retraining Job: name, version and the output URI from the environment, built in a
    temporary folder and uploaded; nothing left in the working directory."""
    target = tmp_path / "published" / "iris" / "4.0.0"
    monkeypatch.setenv(contract.ENV_MODEL_NAME, "iris")
    monkeypatch.setenv(contract.ENV_MODEL_VERSION, "4.0.0")
    monkeypatch.setenv(contract.TRAINING_ENV_OUTPUT_URI, target.as_uri())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out, _ = run([str(files["root"] / "iris.joblib"), str(files["train"]), "--target",
                  "species", "--upload", "-o", "json"], capsys)  # fmt: skip
    result = json.loads(out)
    assert "files" not in result  # a temporary folder, gone
    assert result["uploaded"] == {
        "uri": target.as_uri(),
        "model": target.as_uri() + "/model.onnx",
        "manifest": target.as_uri() + "/model.manifest.json",
    }
    assert read_manifest(target, name="iris", version="4.0.0").model.sha256 == result["sha256"]
    assert list(work.iterdir()) == []
    # an explicit URI wins; --out keeps the local copy too
    elsewhere = (tmp_path / "b").as_uri()
    out, _ = run([str(files["root"] / "iris.joblib"), str(files["train"]), "--target",
                  "species", "--upload", elsewhere, "--out", "keep"], capsys)  # fmt: skip
    assert "uploaded    " + (tmp_path / "b").as_uri() + "/model.onnx" in out
    assert read_manifest(tmp_path / "b").model.sha256 == read_manifest(work / "keep").model.sha256


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{est}", "{train}", "--target", "species", "--labels", "y.npy"],
         "--target (a CSV column) and --labels (a file): give one"),
        (["{est}", "{train}", "--target", "species", "--holdout", "{test}",
          "--holdout-fraction", "0.3"], "--holdout (a file) and --holdout-fraction (a split)"),
        (["{est}", "{train}", "--target", "species", "--holdout-fraction", "1"],
         "--holdout-fraction 1.0: from 0 to below 1"),
        (["{est}", "{train}", "--target", "species", "--holdout-labels", "y.npy"],
         "--holdout-labels needs --holdout"),
        (["{est}", "missing.csv", "--target", "species"], "missing.csv: no such file"),
        (["missing.joblib", "{train}", "--target", "species"], "missing.joblib: no such file"),
        (["{train}", "{train}", "--target", "species"], "not a joblib or pickle file"),
        (["{root}/dict.pkl", "{train}", "--target", "species"],
         "holds a dict, not a scikit-learn estimator"),
        (["{est}", "{train}", "--target", "label"], "has no column 'label' (columns: sepal_length"),
        (["{est}", "{train}"],
         "'setosa' is not a number (the labels? name their column with --target)"),
        (["{est}", "{nolabels}"], "held-out scores need labels: --target COLUMN"),
        (["{est}", "{root}/reg.npz", "--target", "y"], "--target names a CSV column"),
        (["{est}", "{train}", "--target", "species", "--version", "2 0"],
         "--version '2 0': a Kubernetes label value"),
        (["{est}", "{train}", "--target", "species", "--name", "a/b"], "--name 'a/b': letters"),
        (["{est}", "{root}/iris.joblib", "--target", "species"],
         "data must be a .csv, .npy or .npz file"),
        (["{root}/ridge.joblib", "{train}", "--target", "species", "--holdout-fraction", "0"],
         "the data has 4 feature columns, the estimator takes 3"),
        (["{est}", "{bad}", "--target", "species"],
         "line 3, column 'petal_length': 'n/a' is not a number"),
    ],
)  # fmt: skip
def test_input_errors_exit_2_in_one_line(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str], message: str,
) -> None:  # fmt: skip
    bad = tmp_path / "bad.csv"
    lines = files["train"].read_text().splitlines()
    nolabels = tmp_path / "nolabels.csv"
    nolabels.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines))
    lines[2] = lines[2].split(",", 2)[0] + ",3.0,n/a,0.2,setosa"
    bad.write_text("\n".join(lines) + "\n")
    values = {"est": str(files["root"] / "iris.joblib"), "train": str(files["train"]),
              "test": str(files["test"]), "root": str(files["root"]), "bad": str(bad),
              "nolabels": str(nolabels)}  # fmt: skip
    argv = [a.format(**values) for a in argv]
    if "--name" not in argv:
        argv += ["--name", "iris"]
    if "--version" not in argv:
        argv += ["--version", "1"]
    _, err = run(argv, capsys, code=2)
    assert message in err
    assert not list(Path.cwd().iterdir())  # nothing written


def test_a_missing_name_or_version(
    files: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files["root"] / "iris.joblib"), str(files["train"]), "--target", "species"]
    _, err = run(argv, capsys, code=2)
    assert "no model name: --name NAME (or CANARIUM_MODEL_NAME)" in err
    _, err = run([*argv, "--name", "iris"], capsys, code=2)
    assert "no model version: --version VERSION (or CANARIUM_MODEL_VERSION)" in err
    _, err = run([*argv, "--name", "iris", "--version", "1", "--upload"], capsys, code=2)
    assert "--upload without a URI needs CANARIUM_OUTPUT_URI" in err


def test_an_unfitted_estimator_is_an_error_unless_fit(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(files["root"] / "new.joblib"), str(files["train"]), "--target", "species",
            "--name", "iris", "--version", "1"]  # fmt: skip
    _, err = run(argv, capsys, code=1)
    assert "the Pipeline in " in err
    assert "is not fitted: fit it before saving it, or pass --fit" in err
    nolabels = tmp_path / "nolabels.csv"
    nolabels.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in
                                files["train"].read_text().splitlines()))  # fmt: skip
    _, err = run([argv[0], str(nolabels), "--fit", "--holdout-fraction", "0", *argv[4:]],
                 capsys, code=2)  # fmt: skip
    assert "--fit needs the labels" in err
    run([*argv, "--fit"], capsys)


def test_an_estimator_skl2onnx_cannot_convert_is_exit_1(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.kernel_ridge import KernelRidge

    xr, yr = files["reg"]
    joblib.dump(KernelRidge().fit(xr, yr), tmp_path / "kr.joblib")
    _, err = run([str(tmp_path / "kr.joblib"), str(files["root"] / "reg.npz"), "--name", "kr",
                  "--version", "1", "--out", "kr"], capsys, code=1)  # fmt: skip
    assert err.startswith(
        "error: cannot package the KernelRidge: Unable to find a shape calculator for type"
    )
    assert not (Path("kr") / "model.manifest.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["model"],
        ["model", "build"],
        ["model", "build", "m.joblib"],
        ["model", "build", "m.joblib", "d.csv", "--holdout-fraction", "x"],
        ["model", "build", "m.joblib", "d.csv", "-o", "table"],
        ["model", "train", "m.joblib", "d.csv"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_says_unpickling_runs_code_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["model", "build", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert MODEL_BUILD_EPILOG in out
    assert "runs code from the file, so give it only\nfiles you trust" in out
    for code in ("0  success", "1  error", "2  usage error"):
        assert code in out
    for option in ("--target", "--labels", "--holdout", "--holdout-fraction", "--fit",
                   "--upload", "--name", "--version", "--out", "--seed", "-o"):  # fmt: skip
        assert option in out
    args = build_parser().parse_args(["model", "build", "m", "d"])
    assert (args.holdout_fraction, args.seed, args.bins, args.fit) == (None, 0, 10, False)


def test_the_missing_build_extra_is_one_line(
    files: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # as in a plain `pip install canarium`
    _, err = run([str(files["root"] / "iris.joblib"), str(files["train"]), "--target",
                  "species", "--name", "iris", "--version", "1"], capsys, code=1)  # fmt: skip
    assert err == (
        "error: `canarium model build` needs the build extra (no module 'skl2onnx'): "
        "pip install 'canarium[build]'\n"
    )
    assert not list(Path.cwd().iterdir())


def test_it_runs_without_the_cluster_libraries(files: dict[str, Any], tmp_path: Path) -> None:
    """The training image installs the build extra, not the CLI's base dependencies: the
    command must not need the Kubernetes client (or the operator's libraries)."""
    script = (
        "import sys\n"
        "for m in ('kubernetes', 'urllib3', 'kopf', 'aiohttp', 'prometheus_client'):\n"
        "    sys.modules[m] = None\n"
        "from canarium.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["model", "build", str(files["root"] / "iris.joblib"), str(files["train"]),
            "--target", "species", "--name", "iris", "--version", "1", "--out", "m",
            "-o", "yaml"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["manifest"]["name"] == "iris"
