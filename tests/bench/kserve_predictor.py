"""A KServe custom predictor, as KServe users write one, for bench_serving.py.

    python tests/bench/kserve_predictor.py --model_name iris --http_port 18080 --grpc_port 18081 \
        --backend onnx --model_path /path/model.onnx     # or: --backend sklearn (a .joblib)

A `kserve.Model` subclass served by `kserve.ModelServer` with KServe's defaults (one uvicorn
worker, gRPC on its own port with 4 threads, per-request latency logging on), answering V2 REST
and V2 gRPC. It returns the same two outputs as canarium-serve (`label` INT64 [N],
`probabilities` FP32 [N, classes]) from either the joblib'd scikit-learn estimator or the same
ONNX model in onnxruntime (one intra-op thread, like canarium-serve's default).

The one change to KServe: it binds 0.0.0.0 (REST) and [::] (gRPC) unconditionally; this
benchmark may only listen on loopback, so both addresses are rewritten to 127.0.0.1.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

HOST = "127.0.0.1"


def _bind_loopback() -> None:
    import grpc.aio
    import uvicorn

    config_init = uvicorn.Config.__init__

    def loopback_config(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = HOST
        config_init(self, *args, **kwargs)

    uvicorn.Config.__init__ = loopback_config  # type: ignore[method-assign]

    make_server = grpc.aio.server

    def loopback_server(*args: Any, **kwargs: Any) -> Any:
        server = make_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(  # type: ignore[method-assign]
            HOST + ":" + address.rsplit(":", 1)[1]
        )
        return server

    grpc.aio.server = loopback_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sklearn", "onnx"], required=True)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--model_name", required=True)
    # the rest (--http_port, --grpc_port, ...) is kserve.model_server's own parser's
    args, _ = parser.parse_known_args()

    _bind_loopback()
    import kserve  # type: ignore[import-untyped]
    from kserve import InferOutput, InferRequest, InferResponse

    class Predictor(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, backend: str, path: str) -> None:
            super().__init__(name)
            self.backend, self.path = backend, path
            self.load()

        def load(self) -> bool:
            if self.backend == "sklearn":
                import joblib  # type: ignore[import-untyped,unused-ignore]

                self.estimator = joblib.load(self.path)
            else:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                self.session = ort.InferenceSession(
                    self.path, options, providers=["CPUExecutionProvider"]
                )
                self.input_name = self.session.get_inputs()[0].name
            self.ready = True
            return True

        def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if self.backend == "sklearn":
                # What RandomForestClassifier.predict does (argmax of predict_proba), so the
                # probabilities come with the label for the cost of one prediction.
                proba = self.estimator.predict_proba(x).astype(np.float32)
                return self.estimator.classes_[proba.argmax(axis=1)].astype(np.int64), proba
            label, proba = self.session.run(None, {self.input_name: x})
            return np.asarray(label, dtype=np.int64), np.asarray(proba, dtype=np.float32)

        def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None
        ) -> InferResponse:
            x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            label, proba = self._run(x)
            binary = payload.use_binary_outputs  # gRPC raw inputs: raw outputs back
            outputs = []
            for name, datatype, array in (
                ("label", "INT64", label),
                ("probabilities", "FP32", proba),
            ):
                output = InferOutput(name, list(array.shape), datatype)
                output.set_data_from_numpy(array, binary_data=binary)
                outputs.append(output)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=outputs,
                use_binary_outputs=binary,
            )

    model = Predictor(args.model_name, args.backend, args.model_path)
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
