"""A no-op gRPC server on grpc.aio (canarium-serve's gRPC stack), for bench_serving.py.

    python tests/bench/noop_grpc.py --port 18081 --answer-file answer.bin

Every inference.GRPCInferenceService/ModelInfer call gets the same serialized
ModelInferResponse (canarium-serve's answer for the model), without parsing the request: the
ceiling of grpcio's Python server on this machine, on uvloop like canarium-serve.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
from grpc import aio


async def serve(host: str, port: int, answer: bytes) -> None:
    async def model_infer(_request: bytes, _context: aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer

    # no (de)serializers: the request stays bytes, the answer is sent as it is
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)},
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--answer-file", type=Path, required=True)
    args = parser.parse_args()
    answer = args.answer_file.read_bytes()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of canarium-serve
        asyncio.run(serve(args.host, args.port, answer))
    else:
        uvloop.run(serve(args.host, args.port, answer))


if __name__ == "__main__":
    main()
