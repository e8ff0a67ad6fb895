"""An ONNX model behind onnxruntime, described in V2 terms."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .contract import ONNX_METADATA_KEY, REFERENCE_FILE_SUFFIX
from .metrics_contract import ReferenceStatistics
from .protocol import ONNX_TO_DATATYPE, ProtocolError, TensorSpec

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model could not be fetched, verified or loaded; the message says why."""


def _shape_of(shape: Sequence[object] | None) -> tuple[int, ...]:
    if shape is None:
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _output_spec(name: str, onnx_type: str, shape: Sequence[object] | None) -> TensorSpec:
    datatype = ONNX_TO_DATATYPE.get(onnx_type)
    if datatype is not None:
        return TensorSpec(name, datatype, _shape_of(shape))
    if onnx_type.startswith("seq(map("):
        # skl2onnx's ZipMap: a list of {class: probability}; served as an [N, classes] tensor.
        return TensorSpec(name, "FP32", (-1, -1))
    raise ModelLoadError(f"output '{name}' has a type this server cannot serve: {onnx_type}")


class OnnxModel:
    """One loaded ONNX model: its V2 signature, its reference statistics, and `predict`."""

    platform = "onnxruntime_onnx"

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 1)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads would steal CPU from the HTTP loop on a small pod.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.path = path
        inputs: list[TensorSpec] = []
        for node in self._session.get_inputs():
            datatype = ONNX_TO_DATATYPE.get(node.type)
            if datatype is None:
                raise ModelLoadError(f"input '{node.name}' has an unsupported type {node.type}")
            inputs.append(TensorSpec(node.name, datatype, _shape_of(node.shape)))
        self.inputs: tuple[TensorSpec, ...] = tuple(inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(
            _output_spec(node.name, node.type, node.shape) for node in self._session.get_outputs()
        )
        self.input_names: tuple[str, ...] = tuple(spec.name for spec in self.inputs)
        self.output_names: tuple[str, ...] = tuple(spec.name for spec in self.outputs)
        self._zipmap = {
            node.name for node in self._session.get_outputs() if node.type.startswith("seq(map(")
        }
        # All inputs batch along a free first dimension: requests can be concatenated.
        self.batchable = all(len(spec.shape) >= 1 and spec.shape[0] == -1 for spec in self.inputs)
        meta = self._session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.reference = self._load_reference(path)

    def _load_reference(self, path: Path) -> ReferenceStatistics | None:
        raw: str | bytes | None = self.metadata.get(ONNX_METADATA_KEY)
        source = "the model's metadata"
        if raw is None:
            sidecar = path.with_name(path.stem + REFERENCE_FILE_SUFFIX)
            if sidecar.is_file():
                raw = sidecar.read_bytes()
                source = str(sidecar)
        if raw is None:
            log.info("model has no reference statistics: drift metrics are off")
            return None
        try:
            return ReferenceStatistics.model_validate_json(raw)
        except ValidationError as exc:
            # An unusable reference costs the drift metrics, never the model.
            log.warning("reference statistics in %s are invalid: ignored\n%s", source, exc)
            return None

    def predict(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model. Input names/dtypes/shapes are already checked by the protocol."""
        try:
            results = self._session.run(list(outputs), dict(inputs))
        except Exception as exc:
            # What gets here passed our checks; onnxruntime's own complaints about an input
            # (a value a tree/label encoder cannot take, a batch mismatch) are the client's.
            name = type(exc).__name__
            if name in {"InvalidArgument", "InvalidGraph", "Fail", "RuntimeException"}:
                raise ProtocolError(f"the model rejected the input: {exc}") from exc
            raise
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, value in zip(outputs, results, strict=True):
            if name in self._zipmap:
                out[name] = _zipmap_to_array(value)
            else:
                out[name] = value if isinstance(value, np.ndarray) else np.asarray(value)
        return out


def _zipmap_to_array(rows: list[dict[Any, float]]) -> np.ndarray[Any, Any]:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    keys = list(rows[0])
    return np.asarray([[row[k] for k in keys] for row in rows], dtype=np.float32)
