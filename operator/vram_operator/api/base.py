"""Shared building blocks of the API models: camelCase wire names, object metadata, conditions."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP = "vram.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds shared by every model so that the API server rejects absurd objects early.
NAME_MAX = 253
TEXT_MAX = 1024
MESSAGE_MAX = 32768
LIST_MAX = 256

INT_OR_STRING: dict[str, Any] = {"x-kubernetes-int-or-string": True}
PASS_THROUGH: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
IntOrString = Annotated[int | str, Field(json_schema_extra=INT_OR_STRING)]
BoundedText = Annotated[str, Field(max_length=TEXT_MAX)]
Name = Annotated[str, Field(max_length=NAME_MAX)]
ServerKey = Annotated[str, Field(max_length=2 * NAME_MAX + 1)]
LabelValue = Annotated[str, Field(max_length=63)]
Message = Annotated[str, Field(max_length=MESSAGE_MAX)]
PassThrough = dict[str, Any]


def _wire_name(name: str) -> str:
    # Kubernetes spells MiB suffixes and acronyms its own way; to_camel handles the rest.
    return to_camel(name).replace("Mib", "MiB").replace("Uid", "UID").replace("Kv", "KV")


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=_wire_name),
        populate_by_name=True,
        extra="forbid",
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict the API server stores (aliases, no unset/None fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel_rule(rule: str, message: str) -> dict[str, JsonValue]:
    """One x-kubernetes-validations entry."""
    return {"rule": rule, "message": message}


def config_with_cel(*rules: dict[str, JsonValue]) -> ConfigDict:
    """ApiModel's config plus CEL rules that the API server enforces across fields."""
    return ConfigDict(**ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": list(rules)})


class ObjectMeta(BaseModel):
    """The parts of Kubernetes ObjectMeta the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(max_length=NAME_MAX)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")


class Condition(ApiModel):
    """A KEP-1623 condition."""

    type: str = Field(max_length=316, description="Condition type, CamelCase (e.g. Placed).")
    status: str = Field(pattern="^(True|False|Unknown)$", max_length=7, description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern="^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=MESSAGE_MAX, description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set for."
    )


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector."""

    key: str = Field(max_length=NAME_MAX, description="Label key.")
    operator: str = Field(
        pattern="^(In|NotIn|Exists|DoesNotExist)$",
        max_length=12,
        description="In, NotIn, Exists or DoesNotExist.",
    )
    values: list[LabelValue] = Field(default_factory=list, max_length=LIST_MAX, description="Values for In and NotIn.")


class LabelSelector(ApiModel):
    """A Kubernetes label selector."""

    match_labels: dict[str, LabelValue] = Field(default_factory=dict, description="Labels that must all match exactly.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Set-based requirements, all must match."
    )


class Resource(BaseModel):
    """Base of the top-level resources; each subclass names its kind and CRD facts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    namespaced: ClassVar[bool]
    # CEL rules on the whole object (the only place metadata.name can be checked).
    root_rules: ClassVar[tuple[dict[str, JsonValue], ...]] = ()

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str
    metadata: ObjectMeta

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
