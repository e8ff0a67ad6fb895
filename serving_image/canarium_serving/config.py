"""The settings of one model server process: every flag of `canarium-serve` (see cli.py).

The DataPlane reads the model's fields and the in-flight limit, a transport its own (the REST
body limits and timeouts), the server the shutdown's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .contract import (
    DEFAULT_BODY_READ_TIMEOUT_S,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEP_ALIVE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MODEL_CACHE_DIR,
    DEFAULT_SHUTDOWN_DELAY_S,
    DEFAULT_SHUTDOWN_GRACE_S,
    DEFAULT_TERMINATION_LOG,
)


@dataclass(slots=True)
class ServerConfig:
    model_uri: str
    model_name: str = "model"
    model_version: str = "1"
    model_sha256: str | None = None
    deployment: str = ""
    namespace: str = ""
    revision: str = ""
    role: str = ""
    model_cache_dir: str = DEFAULT_MODEL_CACHE_DIR
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_read_timeout_s: float = DEFAULT_BODY_READ_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    shutdown_delay_s: float = DEFAULT_SHUTDOWN_DELAY_S
    batch_max_size: int = 32
    batch_max_wait_ms: float = 0.0
    max_inflight: int | None = None  # None: admission.default_max_inflight(batch_max_size)
    ort_threads: int = 1
    exit_on_load_failure: bool = True
    termination_log: str = DEFAULT_TERMINATION_LOG
