"""The Open Inference Protocol (V2) operations of the model server, for any transport.

The split KServe makes between its `DataPlane` and `rest/v2_endpoints.py`: the DataPlane owns
the model (its loading state, the dynamic batcher, the metrics) and answers the protocol's
operations with Python objects; app.py is the REST transport over it (paths, bodies, JSON,
status codes), and a gRPC transport can use it as it is. Nothing here knows HTTP.

An operation that cannot be served raises a ProtocolError whose `status` tells which failure it
is, as the HTTP status code (which also labels the request metrics; a gRPC transport maps it to
its own codes): ModelNotFoundError (404), ModelNotReadyError (503), ProtocolError itself for a
bad request (400), and admission.OverloadedError (503, with when to retry) from `inflight`, the
bound on inference requests in flight that the transports share (they enter it before reading a
request, so that a refusal is answered at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .admission import InflightLimiter, default_max_inflight
from .batching import Batcher
from .config import ServerConfig
from .fetch import fetch_model
from .metrics import Labels, ServingMetrics
from .model import ModelLoadError, OnnxModel
from .protocol import (
    BINARY_EXTENSION,
    InferenceRequest,
    InferenceResponse,
    ProtocolError,
    TensorSpec,
    select_outputs,
)

log = logging.getLogger("canarium_serving")

SERVER_NAME = "canarium-serving"


class ModelNotFoundError(ProtocolError):
    """The request names a model, or a version of it, that this server does not serve."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class ModelNotReadyError(ProtocolError):
    """The model is still loading, or failed to load."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


class DataPlane:
    """One served model and the V2 operations on it.

    `on_fatal(reason)` is called when the model cannot be loaded and
    `config.exit_on_load_failure` is set.
    """

    def __init__(self, config: ServerConfig, on_fatal: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_fatal = on_fatal
        self.model: OnnxModel | None = None
        self.load_error: str | None = None
        self.metrics = ServingMetrics(
            Labels(
                model=config.model_name,
                version=config.model_version,
                deployment=config.deployment,
                namespace=config.namespace,
                revision=config.revision,
                role=config.role,
            )
        )
        self.batcher: Batcher | None = None
        self._metric_outputs: list[str] = []
        limit = config.max_inflight
        if limit is None:
            limit = default_max_inflight(config.batch_max_size)
        # `with dataplane.inflight:` around each inference request, by either transport.
        self.inflight = InflightLimiter(limit)
        # Set on SIGTERM (server.py): not ready from then on, while the requests in flight end.
        self.draining = False

    # --- model loading -------------------------------------------------------------------
    def load(self) -> None:
        """Fetch, verify and load the model (blocking); raise ModelLoadError with the reason."""
        cfg = self.config
        started = time.perf_counter()
        fetched = fetch_model(cfg.model_uri, sha256=cfg.model_sha256, cache_dir=cfg.model_cache_dir)
        model = OnnxModel(fetched.path, threads=cfg.ort_threads)
        self.metrics.configure_model(
            platform=model.platform,
            sha256=fetched.sha256,
            uri=cfg.model_uri,
            outputs=[(s.name, s.datatype, s.shape) for s in model.outputs],
            reference=model.reference,
        )
        if cfg.batch_max_size > 1 and model.batchable:
            self.batcher = Batcher(
                model.predict,
                max_size=cfg.batch_max_size,
                max_wait=cfg.batch_max_wait_ms / 1000.0,
                on_execute=self.metrics.observe_execution,
            )
        elif cfg.batch_max_size > 1:
            log.warning("dynamic batching is off: the model's inputs have no free batch dimension")
        self._metric_outputs = [
            n for n in model.output_names if n in self.metrics.observed_outputs()
        ]
        self.model = model
        self.metrics.ready = True
        log.info(
            "model %r version %r ready in %.2fs: %s (sha256 %s), inputs %s, outputs %s",
            cfg.model_name,
            cfg.model_version,
            time.perf_counter() - started,
            fetched.path,
            fetched.sha256,
            [s.to_json() for s in model.inputs],
            [s.to_json() for s in model.outputs],
        )

    async def load_in_thread(self) -> None:
        """Load the model in a worker thread, so that the event loop keeps answering health
        checks; a failure is recorded (not raised), logged and reported to `on_fatal`."""
        try:
            await asyncio.to_thread(self.load)
        except ModelLoadError as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.exception("unexpected error while loading the model")
            self._fail(f"unexpected error while loading the model: {exc!r}")

    def _fail(self, reason: str) -> None:
        self.load_error = reason
        log.error("model not loaded: %s", reason)
        self._write_termination_log(reason)
        if self.config.exit_on_load_failure and self.on_fatal is not None:
            self.on_fatal(reason)

    def _write_termination_log(self, reason: str) -> None:
        path = self.config.termination_log
        if not path:
            return
        try:
            if Path(path).parent.is_dir():
                with open(path, "w", encoding="utf-8") as f:
                    f.write(f"model not loaded: {reason}"[:4000])
        except OSError:
            pass  # outside Kubernetes there may be no such file; the log line is enough

    # --- V2 operations -------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.model is not None and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": [BINARY_EXTENSION]}

    def check_model(self, name: str, version: str | None = None) -> None:
        """Raise ModelNotFoundError unless this server serves model `name` (at `version`)."""
        cfg = self.config
        if name != cfg.model_name:
            raise ModelNotFoundError(
                f"model '{name}' not found; this server serves '{cfg.model_name}'"
            )
        if version is not None and version != cfg.model_version:
            raise ModelNotFoundError(
                f"model '{name}' has no version '{version}'; served: '{cfg.model_version}'"
            )

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.check_model(name, version)
        return self.ready()

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self._loaded_model(name, version)
        return {
            "name": self.config.model_name,
            "versions": [self.config.model_version],
            "platform": model.platform,
            "inputs": [s.to_json() for s in model.inputs],
            "outputs": [s.to_json() for s in model.outputs],
        }

    def model_inputs(self, name: str, version: str | None = None) -> tuple[TensorSpec, ...]:
        """The inputs an inference request for the model is parsed and checked against."""
        return self._loaded_model(name, version).inputs

    async def infer(
        self, name: str, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        """Run the model on a request already checked against `model_inputs(name, version)`."""
        model = self._loaded_model(name, version)
        names = select_outputs(request.outputs, model.output_names)
        run = names
        if self._metric_outputs:
            # The metrics count some outputs of every request, asked for or not.
            run = list(dict.fromkeys([*names, *self._metric_outputs]))
        if self.batcher is not None:
            outputs = await self.batcher.submit(request.inputs, run)
        else:
            outputs = model.predict(request.inputs, run)
            self.metrics.observe_execution(request.inputs, outputs, request.batch_size)
        if len(outputs) != len(names):
            outputs = {n: outputs[n] for n in names}
        cfg = self.config
        return InferenceResponse(cfg.model_name, cfg.model_version, outputs, request.id)

    def _loaded_model(self, name: str, version: str | None) -> OnnxModel:
        self.check_model(name, version)
        model = self.model
        if model is not None:
            return model
        if self.load_error:
            raise ModelNotReadyError(
                f"model '{self.config.model_name}' failed to load: {self.load_error}"
            )
        raise ModelNotReadyError(f"model '{self.config.model_name}' is still loading")
