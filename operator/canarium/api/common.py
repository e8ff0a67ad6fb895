"""Building blocks shared by the Canarium API models.

The pydantic models in this package are the one source of truth for the CRDs: `canarium.crdgen`
turns them into OpenAPI v3 schemas. Kubernetes-only schema keywords (CEL rules, list types,
int-or-string, formats) are attached to models and fields through `json_schema_extra`, built with
the helpers below, so that the generator stays generic.

Every CEL rule is mirrored by a pydantic validator that raises the same message, so a manifest
that the API server rejects is also rejected by `model_validate`, and the other way round.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "canarium.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go-style duration made of one or more `<number><unit>` parts, units ms, s, m and h."""

_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Return the number of seconds in a duration string such as ``"30s"``, ``"1m30s"``,
    ``"1.5h"`` or ``"250ms"``.

    The accepted syntax is exactly the CRD pattern `DURATION_PATTERN` (a subset of Go's
    `time.ParseDuration`: no sign, no ``us``/``ns``). Raises `ValueError` for anything else.
    """
    if not isinstance(value, str) or not _DURATION_RE.fullmatch(value):
        raise ValueError(
            f"invalid duration {value!r}: expected e.g. '30s', '5m', '1h30m' or '250ms'"
        )
    return sum(
        float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART_RE.findall(value)
    )


def format_duration(seconds: float) -> str:
    """Format seconds as a duration string that `parse_duration` reads back (e.g. ``"1m30s"``)."""
    if seconds < 0:
        raise ValueError(f"negative duration: {seconds}")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs:
        parts.append(f"{secs}s")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, min_length=2, max_length=32)]
"""A duration string (see `parse_duration`), e.g. ``30s``, ``5m``, ``1h30m``."""

# ---------------------------------------------------------------------------------------------
# Common string formats (RE2- and Rust-regex compatible: no look-around)
# ---------------------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
C_IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
HTTP_HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
DnsSubdomain = Annotated[
    str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)
]
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
"""A Kubernetes resource quantity: an integer or a string such as ``500m`` or ``1Gi``."""

# ---------------------------------------------------------------------------------------------
# Kubernetes schema extensions
# ---------------------------------------------------------------------------------------------

Reason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"]


class Rule:
    """One CEL validation rule (`x-kubernetes-validations` entry).

    Models call `fail()` from their pydantic validators, so pydantic and the API server reject
    the same input with the same message.
    """

    __slots__ = ("field_path", "message", "reason", "rule")

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        field_path: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        self.rule = rule
        self.message = message
        self.field_path = field_path
        self.reason = reason

    def to_schema(self) -> dict[str, str]:
        """The rule as it appears in the CRD."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def fail(self) -> ValueError:
        """The pydantic-side error for this rule (raise it)."""
        return ValueError(self.message)


def validations(*rules: Rule) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for a model's config or a field."""
    return {"x-kubernetes-validations": [r.to_schema() for r in rules]}


def list_map(*keys: str) -> dict[str, Any]:
    """`json_schema_extra` for a list that is a map keyed by `keys` (unique keys, merge-able)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}
"""`json_schema_extra` for a list of unique scalars."""

INT64: dict[str, Any] = {"format": "int64"}
"""`json_schema_extra` for an integer that Kubernetes stores as int64."""


def ensure_unique(items: list[Any], key: str, what: str) -> None:
    """Pydantic-side twin of a list-type map/set: raise if two items share `key`."""
    seen: set[Any] = set()
    for index, item in enumerate(items):
        value = getattr(item, key) if key else item
        if value in seen:
            raise ValueError(f"{what}[{index}]: Duplicate value: {value!r}")
        seen.add(value)


# ---------------------------------------------------------------------------------------------
# Base models
# ---------------------------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of user-written objects: camelCase on the wire, unknown fields rejected (as the API
    server does with strict field validation), immutable once parsed."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        protected_namespaces=(),
        use_attribute_docstrings=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as the API server would store it (camelCase, unset optionals omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApiObject(SpecModel):
    """Base of a whole API object as the API server returns it: unknown top-level keys are
    ignored, and a null or absent status is the status' defaults."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _tolerate_null_status(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("status") is None:
            data = {k: v for k, v in data.items() if k != "status"}
        return data


class StatusModel(BaseModel):
    """Base of operator-written status objects: camelCase on the wire, mutable, and lenient
    about unknown fields (an older operator reading a newer status must not crash)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        validate_assignment=True,
        protected_namespaces=(),
    )

    def to_dict(self) -> dict[str, Any]:
        """The status as a JSON-ready dict for a status patch (unset optionals omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the operator reads; everything else is ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )

    name: str = Field("", description="Name of the object.")
    namespace: str = Field("", description="Namespace of the object.")
    uid: str = Field("", description="UID of the object.")
    generation: int = Field(0, description="Generation of the spec.")
    resource_version: str = Field("", description="Resource version of the object.")
    creation_timestamp: datetime | None = Field(None, description="Creation time.")
    deletion_timestamp: datetime | None = Field(None, description="Deletion time, if deleting.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


# ---------------------------------------------------------------------------------------------
# metav1.Condition
# ---------------------------------------------------------------------------------------------

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """Condition contains details for one aspect of the current state of this API resource
    (the metav1.Condition form, readable by kubectl wait, kstatus and Argo CD)."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready, Progressing, Degraded.",
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
    )
    status: ConditionStatus = Field(
        description="Status of the condition, one of True, False, Unknown."
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description=(
            "The .metadata.generation that the condition was set based upon. If it is older "
            "than .metadata.generation, the condition is out of date."
        ),
        json_schema_extra=INT64,
    )
    last_transition_time: datetime = Field(
        description="Last time the condition transitioned from one status to another."
    )
    reason: str = Field(
        description="Programmatic identifier (CamelCase) of the reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
    )
    message: str = Field(
        description="Human readable message with details about the transition.",
        max_length=32768,
    )
