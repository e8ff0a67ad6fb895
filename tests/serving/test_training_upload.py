"""A retraining Job's output, end to end without a cluster: package a model, upload it with
packaging.upload_model to a real S3 server (versitygw) and Azure's emulator (Azurite), and
serve it from there with its manifest's sha256, as the operator will deploy the candidate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from canarium_serving import contract
from canarium_serving.fetch import fetch_model
from canarium_serving.manifest import parse_manifest, read_manifest
from canarium_serving.packaging import PackagedModel, UploadError, package_model, upload_model

from tests.azurite import Azurite, start_azurite
from tests.s3server import S3Server, start_s3_server

from .conftest import Models, infer_body, start_server

pytestmark = pytest.mark.serving

NO_PROXY = {"no_proxy": "*", "NO_PROXY": "*", "http_proxy": "", "HTTP_PROXY": ""}
S3_SECRET = "training-Secret/Value+9876543210"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NO_PROXY.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(
        tmp_path_factory.mktemp("s3"), access_key="canarium-train", secret_key=S3_SECRET
    )
    (server.root / "models").mkdir()  # the bucket
    yield server
    server.stop()


@pytest.fixture(scope="module")
def packaged(models: Models, tmp_path_factory: pytest.TempPathFactory) -> PackagedModel:
    x = models.iris_x
    y = models.iris_estimator.predict(x)
    return package_model(
        models.iris_estimator,
        x,
        tmp_path_factory.mktemp("candidate"),
        name="iris",
        version="2.0.0",
        y=y,
        holdout=(x[::5], y[::5]),
    )


def test_uploaded_to_s3_and_served_from_there(
    models: Models, packaged: PackagedModel, s3: S3Server, tmp_path: Path
) -> None:
    uri = "s3://models/iris/2.0.0"
    uploaded = upload_model(packaged.model_path.parent, uri, env=s3.env())
    assert uploaded.model_uri == "s3://models/iris/2.0.0/model.onnx"
    folder = s3.root / "models" / "iris" / "2.0.0"  # versitygw's posix backend: plain files
    assert read_manifest(folder, name="iris", version="2.0.0").model.sha256 == packaged.sha256
    assert (folder / "model.reference.json").read_bytes() == (
        packaged.built.reference_path.read_bytes()
    )
    # the operator's view: the manifest, then the model by its URI and the manifest's sha256
    manifest_copy = fetch_model(uploaded.manifest_uri, cache_dir=tmp_path / "m", env=s3.env())
    manifest = parse_manifest(manifest_copy.path.read_bytes())
    env = {
        **s3.env(),
        contract.ENV_MODEL_URI: uploaded.model_uri,
        contract.ENV_MODEL_SHA256: manifest.model.sha256,
        contract.ENV_MODEL_NAME: "iris",
        contract.ENV_MODEL_VERSION: manifest.version,
    }
    server = start_server([], tmp_path, env={**NO_PROXY, **env})
    try:
        with server.client() as c:
            r = c.post("/v2/models/iris/infer", content=orjson.dumps(infer_body(models.iris_x[:3])))
            assert r.status_code == 200, r.text
            label = next(o for o in r.json()["outputs"] if o["name"] == "label")
            assert label["data"] == models.iris_estimator.predict(models.iris_x[:3]).tolist()
    finally:
        assert server.stop() == 0, server.log()


def test_a_published_version_is_not_replaced(
    models: Models, packaged: PackagedModel, s3: S3Server, tmp_path: Path
) -> None:
    uri = "s3://models/iris/2.0.1"
    upload_model(packaged.model_path.parent, uri, env=s3.env())
    upload_model(packaged.model_path.parent, uri, env=s3.env())  # the same model: fine
    other = package_model(
        models.regressor_estimator, models.regressor_x, tmp_path, name="iris", version="2.0.1"
    )
    with pytest.raises(UploadError, match=r"s3://models/iris/2.0.1/model.manifest.json already"):
        upload_model(tmp_path, uri, env=s3.env())
    folder = s3.root / "models" / "iris" / "2.0.1"
    assert read_manifest(folder).model.sha256 == packaged.sha256
    upload_model(tmp_path, uri, env=s3.env(), overwrite=True)
    assert read_manifest(folder).model.sha256 == other.sha256


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret", "HTTP 403 Forbidden: SignatureDoesNotMatch"),
        ("no bucket", "NoSuchBucket"),
    ],
)
def test_a_failed_upload_says_why_without_the_secret(
    packaged: PackagedModel, s3: S3Server, case: str, message: str
) -> None:
    env = s3.env()
    uri = "s3://models/iris/9.9.9"
    if case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = S3_SECRET[:-1] + "X"
    else:
        uri = "s3://no-such-bucket/iris/9.9.9"
    with pytest.raises(UploadError) as error:
        upload_model(packaged.model_path.parent, uri, env=env, timeout=10)
    text = str(error.value)
    assert message in text
    assert text.startswith(f"cannot upload {uri}/")
    assert S3_SECRET not in text
    assert env["AWS_SECRET_ACCESS_KEY"] not in text
    assert not (s3.root / "models" / "iris" / "9.9.9" / contract.MANIFEST_FILE).exists()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    server.put("models", "placeholder", b"")  # creates the container
    yield server
    server.stop()


def test_uploaded_to_azure_blob_storage(
    packaged: PackagedModel, azurite: Azurite, tmp_path: Path
) -> None:
    uploaded = upload_model(packaged.model_path.parent, "az://models/iris/2.0.0", env=azurite.env())
    fetched = fetch_model(
        uploaded.model_uri, sha256=uploaded.sha256, cache_dir=tmp_path, env=azurite.env()
    )
    assert fetched.path.read_bytes() == packaged.model_path.read_bytes()
    manifest = fetch_model(uploaded.manifest_uri, cache_dir=tmp_path, env=azurite.env())
    assert parse_manifest(manifest.path.read_bytes()) == packaged.manifest
