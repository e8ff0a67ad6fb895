"""The generated CRDs: up to date, structural, and consistent with the pydantic models.

A small emulation of the API server's handling of a custom resource (strict unknown-field
detection, structural defaulting, OpenAPI validation, list-type uniqueness, with its error
messages) checks the examples and the e2e invalid manifests offline. CEL rules are not evaluated
here: the e2e suite applies the same manifests to a real kube-apiserver.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from canarium import crdgen
from canarium.api import ModelDeployment, RolloutPolicy

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
EXAMPLES = REPO / "manifests" / "examples"
INVALID = REPO / "tests" / "e2e" / "invalid"

Schema = dict[str, Any]


@functools.cache
def crds() -> dict[str, Schema]:
    """The committed CRDs, keyed by kind."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.canarium.dev.yaml")):
        crd = yaml.safe_load(path.read_text())
        out[crd["spec"]["names"]["kind"]] = crd
    return out


def root_schema(kind: str) -> Schema:
    schema = crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


# --- staleness ----------------------------------------------------------------------------


def test_crds_are_up_to_date() -> None:
    stale = crdgen.stale_files(CRD_DIR)
    assert stale == [], f"stale CRDs {stale}: run `python -m canarium.crdgen` (make crds)"


def _render_in_fresh_process(hash_seed: str) -> dict[str, str]:
    """render_crds() in a new interpreter with its own string hashing (set and dict orders)."""
    package_root = Path(crdgen.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(package_root)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from canarium import crdgen; "
            "json.dump(crdgen.render_crds(), sys.stdout)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rendered: dict[str, str] = json.loads(out)
    return rendered


def test_generation_is_deterministic() -> None:
    # The same text in other processes with other hash seeds, and byte for byte the committed
    # files: nothing depends on set or dict iteration order or on the run.
    committed = {p.name: p.read_bytes() for p in CRD_DIR.glob("*.canarium.dev.yaml")}
    assert sorted(committed) == [
        "modeldeployments.canarium.dev.yaml",
        "modelretrainings.canarium.dev.yaml",
        "rolloutpolicies.canarium.dev.yaml",
    ]
    for seed in ("1", "4242"):
        fresh = _render_in_fresh_process(seed)
        assert {name: text.encode() for name, text in fresh.items()} == committed, seed
    for text in crdgen.render_crds().values():
        assert text.endswith("\n")
        assert not text.endswith("\n\n")


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crdgen.render_crds())
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / "rolloutpolicies.canarium.dev.yaml"
    victim.write_text(victim.read_text().replace("rpol", "rp"))
    capsys.readouterr()
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "rolloutpolicies.canarium.dev.yaml" in capsys.readouterr().err
    # A file the generator wrote for a kind that no longer exists is stale too.
    (tmp_path / "gone.canarium.dev.yaml").write_text(crdgen.HEADER)
    assert "gone.canarium.dev.yaml" in crdgen.stale_files(tmp_path)


def test_stdout_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--stdout"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"] * 3


# --- the CRD envelope ---------------------------------------------------------------------


def test_names() -> None:
    md = crds()["ModelDeployment"]["spec"]
    assert md["group"] == "canarium.dev"
    assert md["scope"] == "Namespaced"
    assert md["names"]["plural"] == "modeldeployments"
    assert md["names"]["shortNames"] == ["mdep"]
    assert md["names"]["categories"] == ["canarium"]
    rp = crds()["RolloutPolicy"]["spec"]
    assert rp["names"]["plural"] == "rolloutpolicies"
    assert rp["names"]["shortNames"] == ["rpol"]
    assert rp["names"]["categories"] == ["canarium"]
    for crd in crds().values():
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["served"]
        assert version["storage"]
        assert version["subresources"] == {"status": {}}
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.canarium.dev"


def schema_at(schema: Schema, json_path: str) -> Schema | None:
    node = schema
    for raw in json_path.strip(".").split("."):
        part = re.sub(r"\[.*\]$", "", raw)
        if node.get("type") == "array":
            node = node["items"]
        props = node.get("properties", {})
        if part not in props:
            return None
        node = props[part]
    return node


@pytest.mark.parametrize("kind", ["ModelDeployment", "RolloutPolicy"])
def test_printer_columns_point_at_fields(kind: str) -> None:
    schema = root_schema(kind)
    columns = crds()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns[-1]["name"] == "Age"
    for column in columns:
        assert column["description"]
        if column["jsonPath"].startswith(".metadata"):
            continue
        json_path = column["jsonPath"]
        if "[?(" in json_path:  # a filtered list, e.g. the Ready condition's status
            prefix, _, rest = json_path.partition("[?(")
            target = schema_at(schema, prefix)
            assert target is not None, column
            target = schema_at(target["items"], rest.partition(")]")[2])
        else:
            target = schema_at(schema, json_path)
        assert target is not None, column
        assert target["type"] == column["type"], column


def test_model_deployment_columns() -> None:
    columns = crds()["ModelDeployment"]["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Version", "Phase", "Ready", "Stable", "Canary", "Age"]


# --- structural schema --------------------------------------------------------------------

FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "nullable"}
ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


@pytest.mark.parametrize("kind", ["ModelDeployment", "RolloutPolicy"])
def test_structural(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        assert not FORBIDDEN_KEYS & node.keys(), path
        assert node.keys() <= ALLOWED_KEYS, (path, node.keys() - ALLOWED_KEYS)
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties", {}) is not False, path
        if node.get("type") == "array":
            assert "items" in node, path
            assert "maxItems" in node, f"{path}: unbounded list (CEL cost, etcd size)"
        if (
            node.get("type") == "string"
            and "enum" not in node
            and node.get("format") != "date-time"
        ):
            assert "maxLength" in node or path in {".apiVersion", ".kind"}, f"{path}: unbounded"
        for name in node.get("required", []):
            assert name in node["properties"], (path, name)
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path
            assert "minimum" in node, path


@pytest.mark.parametrize("kind", ["ModelDeployment", "RolloutPolicy"])
def test_every_field_is_described(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        if path in {".metadata"} or path.endswith(("[*]", ".*")):
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain)"
        assert "\n" not in node["description"], path


@pytest.mark.parametrize("kind", ["ModelDeployment", "RolloutPolicy"])
def test_validation_rules_are_well_formed(kind: str) -> None:
    count = 0
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            count += 1
            assert rule.keys() <= {"rule", "message", "fieldPath", "reason"}, path
            assert rule["rule"], path
            assert rule["message"], path
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueForbidden",
                "FieldValueRequired",
            }
            if "fieldPath" in rule:
                field = rule["fieldPath"]
                assert re.fullmatch(r"(\.[A-Za-z][A-Za-z0-9]*)+", field), field
                assert schema_at(node, field) is not None, (path, field)
            # CEL reserved words must be escaped; none of our field names is one.
            for word in ("namespace", "in", "as", "break", "const", "continue", "else", "for"):
                assert f"self.{word} " not in rule["rule"] + " ", rule
    assert count >= 3


def test_conditions_are_metav1() -> None:
    for kind in ("ModelDeployment", "RolloutPolicy"):
        conditions = root_schema(kind)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert sorted(item["required"]) == [
            "lastTransitionTime",
            "message",
            "reason",
            "status",
            "type",
        ]
        props = item["properties"]
        assert set(props) == set(item["required"]) | {"observedGeneration"}
        assert props["status"]["enum"] == ["True", "False", "Unknown"]
        assert props["lastTransitionTime"]["format"] == "date-time"
        assert props["observedGeneration"] == {
            **props["observedGeneration"],
            "type": "integer",
            "format": "int64",
            "minimum": 0,
        }
        assert props["reason"]["maxLength"] == 1024
        assert props["message"]["maxLength"] == 32768
        assert props["type"]["maxLength"] == 316


def test_list_map_keys_are_required_or_defaulted() -> None:
    for kind in ("ModelDeployment", "RolloutPolicy"):
        for path, node in walk(root_schema(kind)):
            if node.get("x-kubernetes-list-type") == "map":
                item = node["items"]
                for key in node["x-kubernetes-list-map-keys"]:
                    assert key in item.get("required", []) or "default" in item["properties"][key]
                    assert path


# --- an offline API server: prune check, defaulting, validation ---------------------------


def go_number(value: float) -> str:
    """Numbers the way Go's %v prints them in validation messages."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# JSON type names by Python type, bool first: a bool is an int to isinstance.
JSON_TYPES: list[tuple[type, str]] = [
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
]


def json_type(value: Any) -> str:
    return next(
        (name for python_type, name in JSON_TYPES if isinstance(value, python_type)), "null"
    )


def unknown_fields(obj: Any, schema: Schema, path: str) -> list[str]:
    """Strict field validation (kubectl's default): unknown fields are errors."""
    errors: list[str] = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            child_path = f"{path}.{key}" if path else key
            if props is not None and key in props:
                errors += unknown_fields(value, props[key], child_path)
            elif isinstance(extra, dict):
                errors += unknown_fields(value, extra, child_path)
            elif props is not None and path != "metadata":
                errors.append(f'unknown field "{child_path}"')
    elif isinstance(obj, list) and "items" in schema:
        for index, value in enumerate(obj):
            errors += unknown_fields(value, schema["items"], f"{path}[{index}]")
    return errors


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """Structural defaulting, as the API server does it (top down, into defaulted objects)."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        obj = {k: v for k, v in obj.items() if v is not None}
        for key, prop in schema.get("properties", {}).items():
            if key not in obj and "default" in prop:
                obj[key] = copy.deepcopy(prop["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], prop)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            obj = {k: apply_defaults(v, extra) for k, v in obj.items()}
    elif isinstance(obj, list) and "items" in schema:
        obj = [apply_defaults(v, schema["items"]) for v in obj]
    return obj


def validate(obj: Any, schema: Schema, path: str) -> list[str]:
    """OpenAPI validation with the API server's messages (the subset our schemas use)."""
    kind = json_type(obj)
    if (
        not schema.get("x-kubernetes-int-or-string")
        and schema["type"] != kind
        and not (schema["type"] == "number" and kind == "integer")
    ):
        # A value of the wrong type gets this one error: no other check applies to it.
        return [
            f'{path}: Invalid value: "{kind}": {path} in body must be of type '
            f'{schema["type"]}: "{kind}"'
        ]
    errors: list[str] = []
    for check in VALUE_CHECKS:
        errors += check(obj, kind, schema, path)
    return errors


def int_or_string_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if schema.get("x-kubernetes-int-or-string") and kind not in ("integer", "string"):
        return [f"{path}: Invalid value: must be an integer or a string"]
    return []


def enum_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if "enum" in schema and obj not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        return [f"{path}: Unsupported value: {json.dumps(obj)}: supported values: {supported}"]
    return []


def string_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if not isinstance(obj, str):
        return []
    errors: list[str] = []
    if "pattern" in schema and not re.search(schema["pattern"], obj):
        errors.append(
            f"{path}: Invalid value: {json.dumps(obj)}: {path} in body should match "
            f"'{schema['pattern']}'"
        )
    if "maxLength" in schema and len(obj) > schema["maxLength"]:
        errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if "minLength" in schema and len(obj) < schema["minLength"]:
        errors.append(
            f"{path}: Invalid value: {json.dumps(obj)}: {path} in body should be at least "
            f"{schema['minLength']} chars long"
        )
    return errors


def number_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if kind not in ("integer", "number") or isinstance(obj, bool):
        return []
    errors: list[str] = []
    if "maximum" in schema and obj > schema["maximum"]:
        errors.append(
            f"{path}: Invalid value: {go_number(obj)}: {path} in body should be less than "
            f"or equal to {go_number(schema['maximum'])}"
        )
    if "minimum" in schema:
        if schema.get("exclusiveMinimum") and obj <= schema["minimum"]:
            errors.append(
                f"{path}: Invalid value: {go_number(obj)}: {path} in body should be "
                f"greater than {go_number(schema['minimum'])}"
            )
        elif obj < schema["minimum"]:
            errors.append(
                f"{path}: Invalid value: {go_number(obj)}: {path} in body should be "
                f"greater than or equal to {go_number(schema['minimum'])}"
            )
    return errors


def object_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if not isinstance(obj, dict):
        return []
    errors: list[str] = []
    if "maxProperties" in schema and len(obj) > schema["maxProperties"]:
        errors.append(f"{path}: Too many: {len(obj)}: must have at most ... items")
    for name in schema.get("required", []):
        if name not in obj:
            errors.append(f"{path}.{name}: Required value")
    for key, value in obj.items():
        if key in schema.get("properties", {}):
            errors += validate(value, schema["properties"][key], f"{path}.{key}")
        elif isinstance(schema.get("additionalProperties"), dict):
            errors += validate(value, schema["additionalProperties"], f"{path}.{key}")
    return errors


def list_errors(obj: Any, kind: str, schema: Schema, path: str) -> list[str]:
    if not isinstance(obj, list):
        return []
    errors: list[str] = []
    if "maxItems" in schema and len(obj) > schema["maxItems"]:
        errors.append(f"{path}: Too many: {len(obj)}: must have at most {schema['maxItems']} items")
    if "minItems" in schema and len(obj) < schema["minItems"]:
        errors.append(
            f"{path}: Invalid value: {len(obj)}: {path} in body should have at least "
            f"{schema['minItems']} items"
        )
    list_type = schema.get("x-kubernetes-list-type")
    seen: list[Any] = []
    for index, value in enumerate(obj):
        errors += validate(value, schema["items"], f"{path}[{index}]")
        if list_type == "map":
            key = {k: value.get(k) for k in schema["x-kubernetes-list-map-keys"]}
        elif list_type == "set":
            key = value
        else:
            continue
        if key in seen:
            errors.append(f"{path}[{index}]: Duplicate value: {json.dumps(key)}")
        seen.append(key)
    return errors


# The checks of a value of the right type, in the order the API server reports their errors;
# each takes (value, its JSON type, schema, path) and checks only the types it applies to.
VALUE_CHECKS: list[Callable[[Any, str, Schema, str], list[str]]] = [
    int_or_string_errors,
    enum_errors,
    string_errors,
    number_errors,
    object_errors,
    list_errors,
]


def api_server(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What the API server does with a create request, short of CEL: the stored object (with
    defaults) and the error messages."""
    schema = root_schema(obj["kind"])
    errors = unknown_fields(obj, schema, "")
    stored = apply_defaults(obj, schema)
    for key in ("spec", "status"):
        if key in schema.get("required", []) and key not in stored:
            errors.append(f"{key}: Required value")
        if key in stored:
            errors += validate(stored[key], schema["properties"][key], key)
    return stored, errors


def cel_messages(kind: str) -> set[str]:
    return {
        rule["message"]
        for _, node in walk(root_schema(kind))
        for rule in node.get("x-kubernetes-validations", [])
    }


def test_emulator_accepts_examples() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "canarium.dev/v1alpha1":
                _, errors = api_server(doc)
                assert errors == [], (path.name, errors)


INVALID_FILES = sorted(INVALID.glob("*.yaml"))


def expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_manifest_expectation(path: Path) -> None:
    """Schema defects: the emulated API server reports exactly the expected error. CEL defects:
    the schema accepts the manifest and the expected message is one of the CRD's rules."""
    obj = yaml.safe_load(path.read_text())
    expected = expectation(path)
    _, errors = api_server(obj)
    rule_messages = [m for m in cel_messages(obj["kind"]) if m in expected]
    if rule_messages:
        assert errors == [], errors
    else:
        assert len(errors) == 1, errors
        assert expected in errors[0], errors


# --- the CRD and the models agree on defaults ---------------------------------------------


def prune_empty(value: Any) -> Any:
    """Drop empty lists and maps (pydantic's default_factory=list/dict; the API server omits
    them), recursively."""
    if isinstance(value, dict):
        out = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [prune_empty(v) for v in value]
    return value


SPEC_SAMPLES: list[dict[str, Any]] = [
    {"model": {"uri": "file:///models/iris.onnx", "version": "1"}},
    {
        "model": {"uri": "file:///models/iris.onnx", "version": "1"},
        "serving": {"autoscaling": {"maxReplicas": 4}, "env": [{"name": "A"}]},
        "rollout": {
            "policy": {
                "steps": [{"setWeight": 10}, {"pause": {}}],
                "analysis": {"checks": {"predictionDrift": {}, "dataDrift": {"maxPSI": 0.3}}},
            }
        },
        "traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
    },
]


@pytest.mark.parametrize("spec", SPEC_SAMPLES)
def test_defaults_match_api_server(spec: dict[str, Any]) -> None:
    obj = {"apiVersion": "canarium.dev/v1alpha1", "kind": "ModelDeployment", "spec": spec}
    stored, errors = api_server(obj)
    assert errors == []
    parsed = ModelDeployment.model_validate(obj).spec.to_dict()
    assert prune_empty(parsed) == prune_empty(stored["spec"])


def test_policy_example_defaults_match_api_server() -> None:
    obj = yaml.safe_load((EXAMPLES / "rolloutpolicy.yaml").read_text())
    stored, errors = api_server(obj)
    assert errors == []
    parsed = RolloutPolicy.model_validate(obj).spec.to_dict()
    assert prune_empty(parsed) == prune_empty(stored["spec"])


def test_schema_defaults_validate() -> None:
    for kind in ("ModelDeployment", "RolloutPolicy"):
        for path, node in walk(root_schema(kind)):
            if "default" in node:
                stripped = {k: v for k, v in node.items() if k != "default"}
                assert validate(node["default"], stripped, path) == [], path


def test_rules_hold_for_object_defaults() -> None:
    """The API server checks an object default against the node's CEL rules before nested
    defaults are applied (kube-apiserver 1.36 rejected `traffic: {default: {}}` with "no such key:
    router"): every field a rule reads that the default lacks must be guarded by has()."""
    for kind in ("ModelDeployment", "RolloutPolicy"):
        for path, node in walk(root_schema(kind)):
            default = node.get("default")
            if not isinstance(default, dict):
                continue
            for rule in node.get("x-kubernetes-validations", []):
                for name in re.findall(r"self\.([A-Za-z_]\w*)", rule["rule"]):
                    if name not in default:
                        assert f"has(self.{name})" in rule["rule"], (path, rule["rule"])
