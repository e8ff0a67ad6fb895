"""`canarium-serve`: run the model server. Every flag has a CANARIUM_* environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__, contract

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def _nonnegative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return x


def _default_name(uri: str) -> str:
    stem = Path(uri.split("?", 1)[0]).stem if uri else ""
    return stem if stem and stem != "model" else "model"


# (flag, env var, type, default, help); dest = flag without dashes, underscores for dashes.
_FLAGS: list[tuple[str, str, Any, Any, str]] = [
    ("--model-uri", contract.ENV_MODEL_URI, str, "",
     "model location: file:///path, a path, http(s)://, s3://bucket/key, gs://bucket/key, "
     "az://container/blob, pvc://claim/path, configmap://name/key (required)"),
    ("--model-sha256", contract.ENV_MODEL_SHA256, str, None,
     "expected sha256 of the model file; a mismatch fails the load"),
    ("--model-name", contract.ENV_MODEL_NAME, str, None,
     "name in /v2/models/{name} (default: the file name without extension)"),
    ("--model-version", contract.ENV_MODEL_VERSION, str, "1", "served model version"),
    ("--deployment", contract.ENV_DEPLOYMENT, str, "", "ModelDeployment name (metrics label)"),
    ("--namespace", contract.ENV_NAMESPACE, str, "", "namespace (metrics label)"),
    ("--revision", contract.ENV_REVISION, str, "", "revision name (metrics label)"),
    ("--role", contract.ENV_ROLE, str, "", "stable or canary (metrics label)"),
    ("--host", contract.ENV_HOST, str, "0.0.0.0", "address to bind"),
    ("--port", contract.ENV_PORT, int, contract.HTTP_PORT, "port for V2 REST and /metrics"),
    ("--grpc-port", contract.ENV_GRPC_PORT, _positive_int, contract.GRPC_PORT,
     "port for V2 gRPC (inference.GRPCInferenceService); 0 = no gRPC"),
    ("--model-cache-dir", contract.ENV_MODEL_CACHE_DIR, str, contract.DEFAULT_MODEL_CACHE_DIR,
     "where remote models are downloaded (an emptyDir under a read-only root filesystem)"),
    ("--max-body-bytes", contract.ENV_MAX_BODY_BYTES, _positive_int,
     contract.DEFAULT_MAX_BODY_BYTES, "largest request body accepted (larger: 413)"),
    ("--body-read-timeout-s", contract.ENV_BODY_READ_TIMEOUT_S, _positive_float,
     contract.DEFAULT_BODY_READ_TIMEOUT_S,
     "seconds a request body may go without data before the request is answered with 408 "
     "(a Content-Length larger than the body sent)"),
    ("--body-timeout-s", contract.ENV_BODY_TIMEOUT_S, _positive_float,
     contract.DEFAULT_BODY_TIMEOUT_S,
     "seconds a whole request body may take to arrive after its head, however steadily it "
     "trickles (408; an unread body: the connection is closed)"),
    ("--header-timeout-s", contract.ENV_HEADER_TIMEOUT_S, _positive_float,
     contract.DEFAULT_HEADER_TIMEOUT_S,
     "seconds a request head (request line and headers) may take to arrive whole, from its "
     "first byte or the connection's opening (408, connection closed: slowloris); also the "
     "time a gRPC connection has to send its HTTP/2 preface"),
    ("--keep-alive-timeout-s", contract.ENV_KEEP_ALIVE_TIMEOUT_S, _positive_float,
     contract.DEFAULT_KEEP_ALIVE_TIMEOUT_S,
     "seconds an idle HTTP/1.1 connection is kept open for a next request"),
    ("--shutdown-grace-s", contract.ENV_SHUTDOWN_GRACE_S, _nonnegative_float,
     contract.DEFAULT_SHUTDOWN_GRACE_S,
     "on SIGTERM/SIGINT, seconds the requests in flight (REST and gRPC) have to finish once "
     "the ports stop taking new ones; those still running then are answered 503 (gRPC: "
     "UNAVAILABLE) and the process exits 0"),
    ("--shutdown-delay-s", contract.ENV_SHUTDOWN_DELAY_S, _nonnegative_float,
     contract.DEFAULT_SHUTDOWN_DELAY_S,
     "on SIGTERM/SIGINT, seconds of answering not ready while still serving before the ports "
     "close (for load balancers that must see the pod go; the operator's pods wait in their "
     "preStop hook instead); a second signal ends it"),
    ("--batch-max-size", contract.ENV_BATCH_MAX_SIZE, _positive_int, 32,
     "dynamic batching: most rows per model execution; 0 or 1 = off"),
    ("--batch-max-wait-ms", contract.ENV_BATCH_MAX_WAIT_MS, float, 0.0,
     "dynamic batching: how long a batch waits for more requests; 0 = take only the requests "
     "already waiting (no added delay)"),
    ("--max-inflight", contract.ENV_MAX_INFLIGHT, _positive_int, None,
     "most inference requests (REST and gRPC ModelInfer together) in flight at once; beyond "
     "it a request is refused at once: REST 503 with Retry-After, gRPC UNAVAILABLE (health, "
     "metadata and /metrics are never refused); 0 = no limit; unset: 4 x "
     "--batch-max-size, at least 128"),
    ("--ort-threads", contract.ENV_ORT_THREADS, _positive_int, 1,
     "onnxruntime intra-op threads per model execution"),
    ("--exit-on-load-failure", contract.ENV_EXIT_ON_LOAD_FAILURE, _bool, True,
     "exit with status 1 when the model cannot be fetched, verified or loaded (false: keep "
     "serving with ready=false)"),
    ("--termination-log", contract.ENV_TERMINATION_LOG, str, contract.DEFAULT_TERMINATION_LOG,
     "file that receives the load failure reason (Kubernetes terminationMessagePath)"),
    ("--log-level", contract.ENV_LOG_LEVEL, str, "info", "debug, info, warning or error"),
]  # fmt: skip


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="canarium-serve",
        description=(
            "Serve one ONNX model over the Open Inference Protocol (V2), REST and gRPC, with "
            "Prometheus metrics on the REST port at /metrics. Each flag defaults to its "
            "environment variable, then to the default shown."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=(
            f"Other environment variables: {contract.ENV_PVC_ROOT} "
            f"(default {contract.PVC_MOUNT_ROOT}) and {contract.ENV_CONFIGMAP_ROOT} "
            f"(default {contract.CONFIGMAP_MOUNT_ROOT}) are where pvc://<claim>/<path> and "
            "configmap://<name>/<key> are read from (<root>/<claim or name>/<path or key>); "
            "s3://, gs:// and az:// go through obstore and read its usual variables: "
            "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (S3-compatible stores, path-style), "
            "AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_SESSION_TOKEN, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (IRSA), "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity; no credential source at "
            "all: anonymous, unless AWS_SKIP_SIGNATURE=false); GOOGLE_APPLICATION_CREDENTIALS "
            "(else the GKE metadata server); AZURE_STORAGE_ACCOUNT_NAME with "
            "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE (workload identity); http(s):// "
            "honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for flag, var, kind, default, help_text in _FLAGS:
        value = default
        if var in env:
            raw = env[var]
            try:
                value = kind(raw) if kind is not str else raw
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {var}={raw!r}: {exc}")
        if kind is _bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=value,
                help=f"{help_text} [env {var}]",
            )
        else:
            parser.add_argument(
                flag, type=kind, default=value, metavar=var.removeprefix("CANARIUM_"),
                help=f"{help_text} [env {var}]",
            )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("canarium_serving")
    if not args.model_uri:
        log.error("no model URI: pass --model-uri or set %s", contract.ENV_MODEL_URI)
        return 2
    if args.model_name is None:
        args.model_name = _default_name(args.model_uri)

    from .config import ServerConfig
    from .server import serve

    fields = set(ServerConfig.__slots__)
    config = ServerConfig(**{k: v for k, v in vars(args).items() if k in fields})
    return serve(
        config, host=args.host, port=args.port, grpc_port=args.grpc_port, log_level=args.log_level
    )


if __name__ == "__main__":
    sys.exit(main())
