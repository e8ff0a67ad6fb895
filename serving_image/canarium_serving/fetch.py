"""Fetch a model file from its URI into a local path, and check its sha256.

Schemes: `file:///abs/path` and plain paths; `http(s)://`; `s3://bucket/key` (AWS or any
S3-compatible endpoint such as MinIO, signed with AWS Signature V4 from the usual env vars,
no SDK); `pvc://claim/path` and `configmap://name/key`, which the operator mounts read-only
under CANARIUM_PVC_ROOT / CANARIUM_CONFIGMAP_ROOT (see contract.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .contract import (
    CONFIGMAP_MOUNT_ROOT,
    DEFAULT_MODEL_CACHE_DIR,
    ENV_CONFIGMAP_ROOT,
    ENV_PVC_ROOT,
    PVC_MOUNT_ROOT,
)
from .model import ModelLoadError

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class FetchedModel:
    path: Path
    sha256: str


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
        request = urllib.request.Request(uri, headers={"User-Agent": "canarium-serving"})
        return _download(request, uri, expected, Path(cache_dir), timeout)
    if scheme == "s3":
        request = s3_request(parsed.netloc, parsed.path.lstrip("/"), env)
        return _download(request, uri, expected, Path(cache_dir), timeout)
    raise ModelLoadError(
        f"unsupported model URI scheme {scheme!r} in {uri!r}; "
        "use file://, a path, http(s)://, s3://, pvc:// or configmap://"
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


def _download(
    request: urllib.request.Request,
    uri: str,
    expected: str | None,
    cache_dir: Path,
    timeout: float,
) -> FetchedModel:
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
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        _check_digest(h.hexdigest(), expected, safe_uri)
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise ModelLoadError(
            f"cannot fetch {safe_uri}: HTTP {exc.code} {exc.reason}"
            + (f": {detail}" if detail else "")
        ) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelLoadError(f"cannot fetch {safe_uri}: {reason}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("fetched %s (%d bytes) into %s", safe_uri, target.stat().st_size, target)
    return FetchedModel(path=target, sha256=h.hexdigest())


def _redact(uri: str) -> str:
    """The URI without credentials or a query string (presigned URLs carry secrets there)."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --- S3: AWS Signature Version 4, GET Object only ----------------------------------------


def s3_request(
    bucket: str, key: str, env: Mapping[str, str], now: dt.datetime | None = None
) -> urllib.request.Request:
    """A signed GET for s3://bucket/key.

    Endpoint: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (path-style, as MinIO wants), else AWS
    (virtual-hosted style). Region: AWS_REGION / AWS_DEFAULT_REGION (us-east-1). Credentials:
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN; none = anonymous.
    """
    if not bucket or not key:
        raise ModelLoadError("an s3 URI must look like s3://<bucket>/<key>")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    quoted_key = urllib.parse.quote(key, safe="/~")
    if endpoint:
        ep = urllib.parse.urlsplit(endpoint.rstrip("/"))
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ModelLoadError(f"S3 endpoint {endpoint!r} must be an http(s) URL")
        host = ep.netloc
        path = f"{ep.path}/{urllib.parse.quote(bucket, safe='')}/{quoted_key}"
        url = f"{ep.scheme}://{host}{path}"
    else:
        host = f"{bucket}.s3.{region}.amazonaws.com"
        path = f"/{quoted_key}"
        url = f"https://{host}{path}"
    headers: dict[str, str] = {"User-Agent": "canarium-serving"}
    access_key = env.get("AWS_ACCESS_KEY_ID")
    secret_key = env.get("AWS_SECRET_ACCESS_KEY")
    if access_key and secret_key:
        headers.update(
            sigv4_headers(
                method="GET",
                host=host,
                path=path,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
                session_token=env.get("AWS_SESSION_TOKEN"),
                now=now,
            )
        )
    return urllib.request.Request(url, headers=headers, method="GET")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    *,
    method: str,
    host: str,
    path: str,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    service: str = "s3",
    query: str = "",
    extra_headers: Mapping[str, str] | None = None,
    payload_sha256: str = _EMPTY_SHA256,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Headers (Authorization, x-amz-date, x-amz-content-sha256, ...) signing one request.

    `path` is already URI-encoded; `query` is the canonical query string.
    """
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    headers = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date}
    if session_token:
        headers["x-amz-security-token"] = session_token
    for k, v in (extra_headers or {}).items():
        headers[k.lower()] = v
    names = sorted(headers)
    canonical_headers = "".join(f"{k}:{' '.join(headers[k].split())}\n" for k in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [method, path, query, canonical_headers, signed_headers, payload_sha256]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items() if k != "host"}
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return out
