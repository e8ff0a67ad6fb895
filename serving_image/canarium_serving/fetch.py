"""Fetch a model file from its URI into a local path, and check its sha256.

Schemes: `file:///abs/path` and plain paths; `http(s)://`; object stores through obstore (the
Python binding of Rust's maintained `object_store` crate): `s3://bucket/key` (AWS or any
S3-compatible endpoint), `gs://bucket/key` (Google Cloud Storage) and
`az://container/blob` / `azure://container/blob` (Azure Blob Storage), with credentials and
settings from the usual environment variables (see `S3_ENV`, `GCS_ENV`, `AZURE_ENV`), including
web identity (IRSA), EKS Pod Identity, GKE metadata and Azure federated tokens; `pvc://claim/path`
and `configmap://name/key`, which the operator mounts read-only under CANARIUM_PVC_ROOT /
CANARIUM_CONFIGMAP_ROOT (see contract.py).

Nothing secret reaches a message: errors name the URI without query or user info, and any
credential value from the environment is masked before it is raised.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import html
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .contract import (
    CONFIGMAP_MOUNT_ROOT,
    DEFAULT_MODEL_CACHE_DIR,
    ENV_CONFIGMAP_ROOT,
    ENV_PVC_ROOT,
    PVC_MOUNT_ROOT,
)
from .model import ModelLoadError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20

# Environment variable -> obstore config key, per store. Only these are read (an unknown key
# would make obstore refuse the whole config); obstore reads the same names from the process
# environment, so this table is what `env` (tests) and the process agree on.
S3_ENV: Final[Mapping[str, str]] = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_DEFAULT_REGION": "region",  # AWS_REGION, below, wins
    "AWS_REGION": "region",
    "AWS_ENDPOINT_URL": "endpoint",  # AWS_ENDPOINT_URL_S3, below, wins
    "AWS_ENDPOINT_URL_S3": "endpoint",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "web_identity_token_file",  # IRSA, with AWS_ROLE_ARN
    "AWS_ROLE_ARN": "role_arn",
    "AWS_ROLE_SESSION_NAME": "role_session_name",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "container_credentials_full_uri",  # EKS Pod Identity
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "container_authorization_token_file",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "container_credentials_relative_uri",  # ECS
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "virtual_hosted_style_request",
    "AWS_REQUEST_PAYER": "request_payer",
    "AWS_SKIP_SIGNATURE": "skip_signature",
    "AWS_IMDSV1_FALLBACK": "imdsv1_fallback",
    "AWS_METADATA_ENDPOINT": "metadata_endpoint",
}
GCS_ENV: Final[Mapping[str, str]] = {
    "GOOGLE_APPLICATION_CREDENTIALS": "application_credentials",
    "GOOGLE_SERVICE_ACCOUNT": "service_account",
    "GOOGLE_SERVICE_ACCOUNT_PATH": "service_account",
    "GOOGLE_SERVICE_ACCOUNT_KEY": "service_account_key",
    "GOOGLE_BASE_URL": "base_url",
    "GOOGLE_SKIP_SIGNATURE": "skip_signature",
}
AZURE_ENV: Final[Mapping[str, str]] = {
    "AZURE_STORAGE_ACCOUNT_NAME": "account_name",
    "AZURE_STORAGE_ACCOUNT_KEY": "account_key",
    "AZURE_STORAGE_ACCESS_KEY": "account_key",
    "AZURE_STORAGE_SAS_TOKEN": "sas_key",
    "AZURE_STORAGE_SAS_KEY": "sas_key",
    "AZURE_STORAGE_TOKEN": "token",
    "AZURE_STORAGE_CLIENT_ID": "client_id",
    "AZURE_CLIENT_ID": "client_id",  # workload identity, with the two below
    "AZURE_TENANT_ID": "tenant_id",
    "AZURE_FEDERATED_TOKEN_FILE": "federated_token_file",
    "AZURE_CLIENT_SECRET": "client_secret",
    "AZURE_AUTHORITY_HOST": "authority_host",
    "AZURE_STORAGE_ENDPOINT": "endpoint",
    "AZURE_STORAGE_USE_EMULATOR": "use_emulator",
    "AZURE_SKIP_SIGNATURE": "skip_signature",
    "AZURE_MSI_ENDPOINT": "msi_endpoint",
}
# Values never shown in a message, whatever the store says back.
SECRET_ENV: Final = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_TOKEN",
        "AZURE_CLIENT_SECRET",
    }
)
_S3_CREDENTIAL_SOURCES: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)
OBJECT_STORE_SCHEMES: Final = {"s3": "s3", "gs": "gcs", "az": "azure", "azure": "azure"}


@dataclass(frozen=True, slots=True)
class FetchedModel:
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How to open one object: which store, its config (obstore keys), the path in it."""

    kind: str  # "s3", "gcs" or "azure"
    bucket: str
    path: str
    config: dict[str, str]
    allow_http: bool


def fetch_model(
    uri: str,
    *,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_MODEL_CACHE_DIR,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> FetchedModel:
    """Make the model at `uri` a local file and verify it; raise ModelLoadError on any failure."""
    env = os.environ if env is None else env
    expected = _normalise_digest(sha256)
    if not uri:
        raise ModelLoadError("no model URI given (--model-uri / CANARIUM_MODEL_URI)")
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri)
        return _verify_local(path, expected, uri)
    if scheme == "pvc":
        root = env.get(ENV_PVC_ROOT, PVC_MOUNT_ROOT)
        return _verify_local(_mounted(root, parsed, uri), expected, uri)
    if scheme == "configmap":
        root = env.get(ENV_CONFIGMAP_ROOT, CONFIGMAP_MOUNT_ROOT)
        return _verify_local(_mounted(root, parsed, uri), expected, uri)
    if scheme in ("http", "https"):
        return _download(_http_chunks(uri, timeout), uri, expected, Path(cache_dir), env)
    if scheme in OBJECT_STORE_SCHEMES:
        spec = store_spec(uri, env)
        chunks = _object_chunks(spec, timeout)
        return _download(chunks, uri, expected, Path(cache_dir), env)
    raise ModelLoadError(
        f"unsupported model URI scheme {scheme!r} in {uri!r}; use file://, a path, http(s)://, "
        "s3://, gs://, az:// (azure://), pvc:// or configmap://"
    )


def _normalise_digest(sha256: str | None) -> str | None:
    if not sha256:
        return None
    digest = sha256.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelLoadError(f"expected sha256 {sha256!r} is not 64 hex digits")
    return digest


def _mounted(root: str, parsed: urllib.parse.SplitResult, uri: str) -> Path:
    name = parsed.netloc
    rest = urllib.parse.unquote(parsed.path).lstrip("/")
    if not name or not rest:
        raise ModelLoadError(f"{uri!r} must look like {parsed.scheme}://<name>/<path in it>")
    base = Path(root, name).resolve()
    path = (base / rest).resolve()
    if base != path and base not in path.parents:
        raise ModelLoadError(f"{uri!r} points outside its volume")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _verify_local(path: Path, expected: str | None, uri: str) -> FetchedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (from {uri!r})")
    try:
        digest = _file_sha256(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc
    _check_digest(digest, expected, uri)
    return FetchedModel(path=path, sha256=digest)


def _check_digest(digest: str, expected: str | None, uri: str) -> None:
    if expected is not None and digest != expected:
        raise ModelLoadError(f"sha256 mismatch for {uri!r}: expected {expected}, got {digest}")


class _FetchError(Exception):
    """A download failed; the message is safe to show once masked."""


def _download(
    chunks: Iterable[bytes],
    uri: str,
    expected: str | None,
    cache_dir: Path,
    env: Mapping[str, str],
) -> FetchedModel:
    """Write `chunks` into the cache under a name of the URI, hashing as they come; the file
    appears (atomically) only once complete and matching `expected`."""
    safe_uri = _redact(uri)
    name = Path(urllib.parse.urlsplit(uri).path).name or "model.onnx"
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create model cache dir {cache_dir}: {exc}") from exc
    target = cache_dir / f"{key}-{name}"
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                h.update(chunk)
                out.write(chunk)
        _check_digest(h.hexdigest(), expected, safe_uri)
        os.replace(tmp, target)
    except _FetchError as exc:
        raise ModelLoadError(mask_secrets(f"cannot fetch {safe_uri}: {exc}", env)) from None
    except OSError as exc:
        raise ModelLoadError(mask_secrets(f"cannot fetch {safe_uri}: {exc}", env)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("fetched %s (%d bytes) into %s", safe_uri, target.stat().st_size, target)
    return FetchedModel(path=target, sha256=h.hexdigest())


def _http_chunks(uri: str, timeout: float) -> Iterable[bytes]:
    request = urllib.request.Request(uri, headers={"User-Agent": "canarium-serving"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                yield chunk
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise _FetchError(
            f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise _FetchError(str(getattr(exc, "reason", exc))) from None


def _redact(uri: str) -> str:
    """The URI without credentials or a query string (presigned URLs carry secrets there)."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def mask_secrets(text: str, env: Mapping[str, str]) -> str:
    """`text` with every credential value of `env` (see SECRET_ENV) replaced by ***."""
    for name in SECRET_ENV:
        value = env.get(name)
        if value and len(value) >= 4:  # masking a 1-3 character value would garble the text
            text = text.replace(value, "***")
    return text


# --- Object stores (obstore) ------------------------------------------------------------------


def store_spec(uri: str, env: Mapping[str, str]) -> StoreSpec:
    """Parse an object-store URI and map the environment to the store's config. Pure.

    S3 without any credential source (static keys, web identity, container credentials) and
    without AWS_SKIP_SIGNATURE is read anonymously, as before: public buckets and S3-compatible
    stores that allow it. AWS_SKIP_SIGNATURE=false lets obstore look further (the node's
    instance metadata).
    """
    parsed = urllib.parse.urlsplit(uri)
    kind = OBJECT_STORE_SCHEMES[parsed.scheme.lower()]
    bucket = parsed.netloc
    path = urllib.parse.unquote(parsed.path).lstrip("/")
    if not bucket or not path or parsed.query or parsed.fragment:
        raise ModelLoadError(
            f"{_redact(uri)!r} must look like {parsed.scheme}://<bucket or container>/<key>"
        )
    table = {"s3": S3_ENV, "gcs": GCS_ENV, "azure": AZURE_ENV}[kind]
    config: dict[str, str] = {}
    for name, key in table.items():  # later names of the same key win (the table's order)
        if env.get(name):
            config[key] = env[name]
    allow_http = False
    if kind == "s3":
        endpoint = config.get("endpoint")
        if endpoint is not None:
            ep = urllib.parse.urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise ModelLoadError(f"S3 endpoint {_redact(endpoint)!r} must be an http(s) URL")
            allow_http = ep.scheme == "http"
        if "skip_signature" not in config and not any(env.get(n) for n in _S3_CREDENTIAL_SOURCES):
            config["skip_signature"] = "true"
        if "access_key_id" in config and "secret_access_key" not in config:
            raise ModelLoadError("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
        config.setdefault("region", "us-east-1")
    elif kind == "azure":
        endpoint = config.get("endpoint", "")
        allow_http = endpoint.startswith("http://") or config.get("use_emulator") == "true"
        if "account_name" not in config and "use_emulator" not in config:
            raise ModelLoadError(
                f"{_redact(uri)!r}: set AZURE_STORAGE_ACCOUNT_NAME to the storage account"
            )
    elif kind == "gcs":
        allow_http = config.get("base_url", "").startswith("http://")
    return StoreSpec(kind, bucket, path, config, allow_http)


def _object_chunks(spec: StoreSpec, timeout: float) -> Iterable[bytes]:
    """Stream one object; store errors become _FetchError with the store's own reason."""
    import obstore
    from obstore.store import AzureStore, GCSStore, S3Store

    client: ClientConfig = {
        "allow_http": spec.allow_http,
        "connect_timeout": dt.timedelta(seconds=min(timeout, 10.0)),
        "timeout": dt.timedelta(seconds=timeout),
        "user_agent": "canarium-serving",
    }
    # A wrong key or a missing object is not retried; an unreachable store is, for a while.
    retry: RetryConfig = {"max_retries": 3, "retry_timeout": dt.timedelta(seconds=timeout)}
    config: Any = spec.config
    try:
        store: Any
        if spec.kind == "s3":
            store = S3Store(spec.bucket, config=config, client_options=client, retry_config=retry)
        elif spec.kind == "gcs":
            store = GCSStore(spec.bucket, config=config, client_options=client, retry_config=retry)
        else:
            store = AzureStore(
                spec.bucket, config=config, client_options=client, retry_config=retry
            )
        for chunk in obstore.get(store, spec.path).stream(min_chunk_size=_CHUNK):
            yield bytes(chunk)
    except Exception as exc:  # obstore's errors (NotFoundError is also a FileNotFoundError)
        raise _FetchError(store_reason(exc)) from None


_STATUS_RE: Final = re.compile(r"status code: (\d{3}(?: [A-Za-z ]+?)?):")
_XML_RE: Final = re.compile(r"<(Code|Message)>([^<]{1,300})</\1>")


def store_reason(exc: Exception) -> str:
    """A one-line reason from an obstore error: the HTTP status and the store's error code and
    message when it answered (e.g. `HTTP 403 Forbidden: SignatureDoesNotMatch: The request
    signature ...`), else the error's first line. Never the Debug dump, which quotes the
    request."""
    text = str(exc).split("\n\nDebug source:", 1)[0]
    status = _STATUS_RE.search(text)
    if status:
        found = {key: " ".join(html.unescape(v).split()) for key, v in _XML_RE.findall(text)}
        parts = [f"HTTP {status.group(1).strip()}", found.get("Code"), found.get("Message")]
        return ": ".join(p for p in parts if p)
    first = " ".join(text.split())
    if len(first) > 400:
        first = first[:400] + "..."
    return first or type(exc).__name__
