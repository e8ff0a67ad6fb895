"""The OpenAPI 3 description of the REST API: package data `openapi.json`, served completed.

openapi.json describes the V2 REST API as canarium-serve speaks it (paths, bodies, status codes,
error objects), for any model. A server answers GET /v2/openapi.json with it completed for the
model it serves: its name and version as the only values of the path parameters, and an example
inference request built from the model's inputs, so that a client generator or a fuzzer
(tests/serving/test_fuzz.py runs schemathesis with it) reaches the model rather than 404s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

from .protocol import TensorSpec

OPENAPI_FILE: Final = "openapi.json"
INFER_PATHS: Final = (
    "/v2/models/{model_name}/infer",
    "/v2/models/{model_name}/versions/{model_version}/infer",
)

# An example value of each datatype, for the example request.
_EXAMPLE_VALUES: Final[dict[str, Any]] = {"BOOL": False, "BYTES": "", "FP32": 0.0, "FP64": 0.0}


@cache
def _document_text() -> str:
    return resources.files(__package__).joinpath(OPENAPI_FILE).read_text(encoding="utf-8")


def document() -> dict[str, Any]:
    """openapi.json as it is in the package (a fresh copy)."""
    doc: dict[str, Any] = json.loads(_document_text())
    return doc


def example_request(inputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """A valid inference request for a model with `inputs`: one row (-1 dimensions: 1), of
    zeros (false, empty strings)."""
    tensors = []
    for spec in inputs:
        shape = [1 if d < 0 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        value = _EXAMPLE_VALUES.get(spec.datatype, 0)
        tensors.append(
            {"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": [value] * count}
        )
    return {"inputs": tensors}


def served_document(
    model_name: str,
    model_version: str,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
) -> dict[str, Any]:
    """openapi.json for a server of `model_name` at `model_version` whose model has `inputs`
    and `outputs` (None: not loaded yet). The path parameters take the served name and version
    only; once the model is known, a request's input names and datatypes are the model's, its
    output names too, and the infer operations have an example request."""
    doc = document()
    components = doc["components"]
    params = components["parameters"]
    params["ModelName"]["schema"] = {"type": "string", "enum": [model_name]}
    params["ModelVersion"]["schema"] = {"type": "string", "enum": [model_version]}
    model: dict[str, Any] = {"name": model_name, "version": model_version}
    if inputs is not None and outputs is not None:
        model["inputs"] = [spec.to_json() for spec in inputs]
        model["outputs"] = [spec.to_json() for spec in outputs]
        schemas = components["schemas"]
        tensor = schemas["RequestInput"]["properties"]
        tensor["name"] = {**tensor["name"], "enum": [spec.name for spec in inputs]}
        datatypes = list(dict.fromkeys(spec.datatype for spec in inputs))
        tensor["datatype"] = {"type": "string", "enum": datatypes}
        output = schemas["RequestOutput"]["properties"]
        output["name"] = {**output["name"], "enum": [spec.name for spec in outputs]}
        body = components["requestBodies"]["Inference"]["content"]["application/json"]
        body["example"] = example_request(inputs)
    doc["info"]["x-model"] = model
    return doc
