"""The contract between the operator's pod templates and the model server.

Written down once: the operator renders these env vars and ports into every serving pod, and
the server reads them. Change a name here and both sides follow.
"""

from typing import Final

# --- Environment variables the operator sets on every serving container -------------------
ENV_MODEL_URI: Final = (
    "CANARIUM_MODEL_URI"  # file:///, path, http(s)://, s3://, gs://, az://, pvc://, configmap://
)
ENV_MODEL_SHA256: Final = "CANARIUM_MODEL_SHA256"  # optional hex digest of the model file
ENV_MODEL_NAME: Final = "CANARIUM_MODEL_NAME"  # the name in /v2/models/{name}
ENV_MODEL_VERSION: Final = "CANARIUM_MODEL_VERSION"  # spec.model.version
ENV_DEPLOYMENT: Final = "CANARIUM_DEPLOYMENT"  # the ModelDeployment's name
ENV_NAMESPACE: Final = "CANARIUM_NAMESPACE"  # its namespace
ENV_REVISION: Final = "CANARIUM_REVISION"  # the revision (child Deployment) name
ENV_ROLE: Final = "CANARIUM_ROLE"  # "stable" or "canary"
# --- Server knobs (flags of canarium-serve; the operator may set them from spec.serving.env) --
ENV_HOST: Final = "CANARIUM_HOST"  # bind address (default 0.0.0.0)
ENV_PORT: Final = "CANARIUM_PORT"  # HTTP port for V2 and /metrics (default 8080)
ENV_GRPC_PORT: Final = "CANARIUM_GRPC_PORT"  # V2 gRPC port (default 8081; 0 = no gRPC)
ENV_MODEL_CACHE_DIR: Final = "CANARIUM_MODEL_CACHE_DIR"  # where remote models are downloaded
ENV_MAX_BODY_BYTES: Final = "CANARIUM_MAX_BODY_BYTES"
ENV_BATCH_MAX_SIZE: Final = "CANARIUM_BATCH_MAX_SIZE"  # 0/1 = dynamic batching off
ENV_BATCH_MAX_WAIT_MS: Final = "CANARIUM_BATCH_MAX_WAIT_MS"
# Inference requests (REST and gRPC ModelInfer together) in flight at once in one server process;
# beyond it a request is refused at once (REST 503 + Retry-After, gRPC UNAVAILABLE). 0 = no limit;
# unset: admission.default_max_inflight(batch max size), 128 with the defaults.
ENV_MAX_INFLIGHT: Final = "CANARIUM_MAX_INFLIGHT"

ROLE_STABLE: Final = "stable"
ROLE_CANARY: Final = "canary"

# --- Ports and paths -----------------------------------------------------------------------
HTTP_PORT: Final = 8080  # V2 REST and Prometheus /metrics share one port, named "http"
HTTP_PORT_NAME: Final = "http"
GRPC_PORT: Final = 8081  # V2 gRPC (inference.GRPCInferenceService), as KServe and Triton
GRPC_PORT_NAME: Final = "grpc"
METRICS_PATH: Final = "/metrics"
LIVE_PATH: Final = "/v2/health/live"
READY_PATH: Final = "/v2/health/ready"
DEFAULT_MODEL_CACHE_DIR: Final = (
    "/tmp/canarium-models"  # an emptyDir in the pod (read-only root fs)
)

# Reference statistics travel inside the ONNX file (metadata_props), so one artifact and one
# sha256 cover both; `canarium model build` also writes them next to it as a JSON file.
ONNX_METADATA_KEY: Final = "canarium.reference"
REFERENCE_FILE_SUFFIX: Final = ".reference.json"

# --- Added with the model server (issue 4) --------------------------------------------------
ENV_ORT_THREADS: Final = "CANARIUM_ORT_THREADS"  # onnxruntime intra-op threads (default 1)
ENV_LOG_LEVEL: Final = "CANARIUM_LOG_LEVEL"  # debug, info, warning, error
ENV_EXIT_ON_LOAD_FAILURE: Final = "CANARIUM_EXIT_ON_LOAD_FAILURE"  # "true" (default) / "false"
ENV_TERMINATION_LOG: Final = "CANARIUM_TERMINATION_LOG"  # where the load failure reason goes
ENV_BODY_READ_TIMEOUT_S: Final = "CANARIUM_BODY_READ_TIMEOUT_S"  # a body that stops arriving: 408
ENV_PVC_ROOT: Final = "CANARIUM_PVC_ROOT"  # override of PVC_MOUNT_ROOT (tests)
ENV_CONFIGMAP_ROOT: Final = "CANARIUM_CONFIGMAP_ROOT"  # override of CONFIGMAP_MOUNT_ROOT (tests)
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
DEFAULT_BODY_READ_TIMEOUT_S: Final = 30.0
# --- Slow clients and shutdown (issue 14; see serving_image/README.md, "Slow clients" and
# "Shutdown") ----------------------------------------------------------------------------------
# A request head (request line and headers) must arrive whole within this many seconds of its
# first byte (of the connection's opening, for its first request), or the connection is closed
# with a 408; the gRPC port closes a connection that has not sent its HTTP/2 preface by then.
ENV_HEADER_TIMEOUT_S: Final = "CANARIUM_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0
# A request body must arrive whole within this many seconds of its head (408), however steadily
# it trickles; CANARIUM_BODY_READ_TIMEOUT_S bounds the time without any of its data.
ENV_BODY_TIMEOUT_S: Final = "CANARIUM_BODY_TIMEOUT_S"
DEFAULT_BODY_TIMEOUT_S: Final = 60.0
# An idle HTTP/1.1 connection (no byte of a next request) is closed after this many seconds.
ENV_KEEP_ALIVE_TIMEOUT_S: Final = "CANARIUM_KEEP_ALIVE_TIMEOUT_S"
DEFAULT_KEEP_ALIVE_TIMEOUT_S: Final = 5.0
# On SIGTERM: not ready at once, still serving for SHUTDOWN_DELAY seconds (0 with the operator's
# pods: their preStop hook already waits while the endpoints go), then no new connections or
# calls, and the requests in flight (REST and gRPC) have SHUTDOWN_GRACE seconds to finish
# before the process exits 0. The operator's pods: terminationGracePeriodSeconds 30 = 5 s of
# preStop + 20 s of grace + 5 s to spare.
ENV_SHUTDOWN_GRACE_S: Final = "CANARIUM_SHUTDOWN_GRACE_S"
DEFAULT_SHUTDOWN_GRACE_S: Final = 20.0
ENV_SHUTDOWN_DELAY_S: Final = "CANARIUM_SHUTDOWN_DELAY_S"
DEFAULT_SHUTDOWN_DELAY_S: Final = 0.0
# The OpenAPI 3 description of the REST API (package data openapi.json, completed with the
# served model's name, version and an example request).
OPENAPI_PATH: Final = "/v2/openapi.json"
DEFAULT_TERMINATION_LOG: Final = "/dev/termination-log"  # Kubernetes' terminationMessagePath
# pvc://<claim>/<path> is read from PVC_MOUNT_ROOT/<claim>/<path>: the operator mounts the claim
# read-only at PVC_MOUNT_ROOT/<claim>. configmap://<name>/<key> likewise: the ConfigMap
# (binaryData for an .onnx file) is mounted at CONFIGMAP_MOUNT_ROOT/<name>.
PVC_MOUNT_ROOT: Final = "/mnt/canarium/pvc"
CONFIGMAP_MOUNT_ROOT: Final = "/mnt/canarium/configmap"

# --- Packaged models: the files `canarium model build` (packaging.package_model) writes --------
# One directory per model version: MODEL_FILE, its reference statistics next to it, and
# MANIFEST_FILE, written last (its presence means the directory is complete; see manifest.py).
MODEL_FILE: Final = "model.onnx"
REFERENCE_FILE: Final = "model" + REFERENCE_FILE_SUFFIX  # "model.reference.json"
MANIFEST_FILE: Final = "model.manifest.json"

# --- The retraining Job: env the operator sets on a user's training container (issue 13) ------
# The training image (training_image/Dockerfile) runs `python /train/train.py`; the script
# trains, packages with canarium_serving.packaging.package_model (or `canarium model build`) and
# uploads the folder with packaging.upload_model, which reads TRAINING_ENV_OUTPUT_URI
# (packaging.TrainingContext.from_env() reads them all). ENV_MODEL_NAME and ENV_MODEL_VERSION
# (above) are set too: the name and the version to package (the version is the operator's
# choice for the candidate); ENV_DEPLOYMENT and ENV_NAMESPACE name the ModelDeployment the run
# is for. TRAINING_ENV_*, not ENV_*: the model server never reads these (ENV_* are the ones
# canarium-serve documents in its --help).
# The folder to upload to (file:///..., s3://bucket/prefix, gs://, az://); the candidate's
# spec.model.uri is <it>/model.onnx, its sha256 the manifest's.
TRAINING_ENV_OUTPUT_URI: Final = "CANARIUM_OUTPUT_URI"
# The model the run starts from: the stable revision's spec.model (uri, sha256 when the spec
# has one, version), to warm-start from or to score on the same held-out rows.
TRAINING_ENV_BASE_MODEL_URI: Final = "CANARIUM_BASE_MODEL_URI"
TRAINING_ENV_BASE_MODEL_SHA256: Final = "CANARIUM_BASE_MODEL_SHA256"
TRAINING_ENV_BASE_MODEL_VERSION: Final = "CANARIUM_BASE_MODEL_VERSION"
# A JSON object: the drift that triggered the run (unset when a person did).
TRAINING_ENV_DRIFT_REPORT: Final = "CANARIUM_DRIFT_REPORT"
TRAINING_ENV_TRIGGER: Final = "CANARIUM_TRAINING_TRIGGER"  # one of TRAINING_TRIGGERS
TRAINING_TRIGGERS: Final = ("drift", "schedule", "manual")  # sustained drift, cron, a person
# The file the training container ends by writing its result to (manifest.TrainingResult, JSON):
# the container's terminationMessagePath, where the kubelet reads it for the operator.
TRAINING_ENV_RESULT_FILE: Final = "CANARIUM_RESULT_FILE"
DEFAULT_RESULT_FILE: Final = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
TRAINING_SCRIPT: Final = "/train/train.py"  # what the training image runs by default
DEFAULT_TRAINING_WORK_DIR: Final = "/tmp/canarium-train"  # where a script builds (an emptyDir)
