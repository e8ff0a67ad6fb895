"""The V2 clients people use, unchanged, against a server: run as a process by test_grpc.py.

    python -m tests.serving.v2_clients CLIENT TARGET MODEL INPUT.npy [--contents]
    run(CLIENT, TARGET, MODEL, rows, ...)   # the same, from a test

CLIENT is triton-grpc (tritonclient.grpc), kserve-grpc (kserve.InferenceGRPCClient) or
kserve-rest (kserve.InferenceRESTClient, V2). Prints one JSON object: what the client read of
the server (liveness, readiness, metadata) and the outputs of one inference on INPUT (FP32),
or the error the client raised as {"error": {"code": ..., "message": ...}}.

A process of its own because tritonclient.grpc, kserve and the server's generated protobuf
module each register the same `inference.*` symbols in protobuf's default pool: one process
can import only one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _triton_grpc(
    target: str, model: str, x: np.ndarray[Any, Any], contents: bool
) -> dict[str, Any]:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(target)
    try:
        out: dict[str, Any] = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(model),
            "server": client.get_server_metadata(as_json=True),
            "model": client.get_model_metadata(model, as_json=True),
        }
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)  # raw_input_contents, the client's only way
        try:
            result = client.infer(model, [tensor], request_id="triton-1")
        except InferenceServerException as exc:
            out["error"] = {"code": str(exc.status()), "message": exc.message()}
            return out
        response = result.get_response(as_json=True)
        out["id"] = response.get("id")
        out["raw"] = bool(response.get("raw_output_contents"))
        out["outputs"] = {
            o["name"]: result.as_numpy(o["name"]).tolist() for o in response["outputs"]
        }
        return out
    finally:
        client.close()


async def _kserve_grpc(
    target: str, model: str, x: np.ndarray[Any, Any], contents: bool
) -> dict[str, Any]:
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(target, channel_args=[("grpc.enable_retries", 0)])
    try:
        out: dict[str, Any] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
        }
        tensor = InferInput("input", list(x.shape), "FP32")
        if contents:
            tensor.set_data_from_numpy(x, binary_data=False)  # typed fp32_contents
        else:
            tensor.set_data_from_numpy(x, binary_data=True)  # raw_input_contents
        request = InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-1")
        try:
            response = await client.infer(request)
        except grpc.RpcError as exc:
            out["error"] = {"code": str(exc.code()), "message": exc.details()}
            return out
        out["id"] = response.id
        out["outputs"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
        return out
    finally:
        await client.close()


async def _kserve_rest(
    target: str, model: str, x: np.ndarray[Any, Any], contents: bool
) -> dict[str, Any]:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    base = f"http://{target}"
    try:
        out: dict[str, Any] = {
            "live": await client.is_server_live(base),
            "ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, model),
        }
        tensor = InferInput("input", list(x.shape), "FP32")
        # binary_data=True: the binary tensor data extension; False: JSON `data`
        tensor.set_data_from_numpy(x, binary_data=not contents)
        request = InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-2")
        try:
            response = await client.infer(base, request, model_name=model)
        except httpx.HTTPStatusError as exc:
            out["error"] = {"code": exc.response.status_code, "message": exc.response.text}
            return out
        assert not isinstance(response, dict)
        out["id"] = response.id
        out["outputs"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
        return out
    finally:
        await client.close()


def run(
    client: str,
    target: str,
    model: str,
    rows: Any,
    *flags: str,
    python: str = sys.executable,
) -> dict[str, Any]:
    """This module as a process of `python` (see why above): what CLIENT read of TARGET and
    answered for `rows` (FP32), as the JSON object it printed."""
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, np.asarray(rows, dtype=np.float32))
        r = subprocess.run(
            [python, "-m", "tests.serving.v2_clients", client, target, model, str(path), *flags],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=repo,
            check=False,
        )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=["triton-grpc", "kserve-grpc", "kserve-rest"])
    parser.add_argument("target", help="host:port")
    parser.add_argument("model")
    parser.add_argument("input", help="an .npy file of FP32 rows")
    parser.add_argument("--contents", action="store_true", help="typed contents / JSON data")
    args = parser.parse_args()
    x = np.load(args.input)
    if args.client == "triton-grpc":
        out = _triton_grpc(args.target, args.model, x, args.contents)
    elif args.client == "kserve-grpc":
        out = asyncio.run(_kserve_grpc(args.target, args.model, x, args.contents))
    else:
        out = asyncio.run(_kserve_rest(args.target, args.model, x, args.contents))
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
