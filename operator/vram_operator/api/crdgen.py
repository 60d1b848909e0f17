"""Generate CustomResourceDefinitions from the pydantic models (crds/ is this module's output)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel

from vram_operator.api.base import GROUP, VERSION, Resource
from vram_operator.api.gpu_assignment import GpuAssignment
from vram_operator.api.gpu_node import GpuNode
from vram_operator.api.inference_server import InferenceServer

CATEGORY = "vram"

PRINTER_COLUMNS: dict[str, list[dict[str, str]]] = {
    "InferenceServer": [
        {"name": "Engine", "type": "string", "jsonPath": ".spec.engine"},
        {"name": "Node", "type": "string", "jsonPath": ".status.placement.node"},
        {"name": "GPU", "type": "string", "jsonPath": ".status.placement.gpuSummary"},
        {"name": "Util", "type": "number", "jsonPath": ".status.gpuMemoryUtilization"},
        {"name": "Memory", "type": "string", "jsonPath": ".status.memory.summary"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        # The first condition that is False, in the conditions' fixed order (Estimated, Placed,
        # MemoryFits, Ready): why the server is not ready. The API server shows the first match.
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.status=="False")].reason'},
    ],
    "GpuNode": [
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpuCount"},
        {"name": "Total", "type": "string", "jsonPath": ".status.memoryTotalMiB", "description": "MiB"},
        {"name": "Free", "type": "string", "jsonPath": ".status.memoryFreeMiB", "description": "MiB"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Heartbeat",
            "type": "date",
            "jsonPath": ".status.lastHeartbeat",
            "description": "Time since the agent's last report",
        },
    ],
    "GpuAssignment": [
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.strategy"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Revision", "type": "integer", "jsonPath": ".status.appliedRevision"},
    ],
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

# Keys of pydantic's JSON schema that have no place in a structural OpenAPI v3 schema.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}


class _Structural:
    """Turns one pydantic JSON schema into a Kubernetes structural schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._defs: dict[str, Any] = schema.get("$defs", {})
        self.root = self.convert(schema)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref is None:
            return node
        target = dict(self._defs[ref.rsplit("/", 1)[-1]])
        # Field-level keys (description, extensions) beside a $ref win over the model's own.
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return target

    def convert(self, node: dict[str, Any]) -> dict[str, Any]:
        node = self._resolve(node)
        variants = node.get("anyOf")
        if variants is not None:
            node = self._merge_any_of(node, variants)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or key == "anyOf":
                continue
            if key == "default":
                if value is None or value in ([], {}):
                    continue
                out[key] = value
            elif key == "properties":
                out[key] = {name: self.convert(prop) for name, prop in value.items()}
            elif key == "items":
                out[key] = self.convert(value)
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                # JSON Schema 2020 gives the bound; OpenAPI v3.0 (Kubernetes) wants a flag beside it.
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            else:
                out[key] = value
        if node.get("additionalProperties") not in (None, False) and "properties" not in node:
            extra = node["additionalProperties"]
            if extra is True or extra == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = self.convert(extra)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    def _merge_any_of(self, node: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, Any]:
        real = [self._resolve(v) for v in variants if v.get("type") != "null"]
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        if node.get("x-kubernetes-int-or-string"):
            # int | str: the extension alone describes the type; string bounds don't apply to ints.
            merged.pop("type", None)
            return merged
        if len(real) == 1:
            base = dict(real[0])
            base.update(merged)
            return base
        if merged.get("x-kubernetes-preserve-unknown-fields"):
            return merged
        types = sorted({v.get("type", "object") for v in real})
        raise ValueError(f"cannot express a union of {types} in a structural schema")


def _schema_for(resource: type[Resource]) -> dict[str, Any]:
    fields = resource.model_fields
    properties: dict[str, Any] = {}
    for name in ("spec", "status"):
        annotation = fields[name].annotation
        model: type[BaseModel] = next(
            arg
            for arg in getattr(annotation, "__args__", (annotation,))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        )
        schema = _Structural(model.model_json_schema(by_alias=True, mode="validation")).root
        schema["description"] = (model.__doc__ or "").strip()
        properties[name] = schema
    root: dict[str, Any] = {
        "type": "object",
        "description": (resource.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            # The API server allows nothing but the type here (it owns metadata's schema).
            "metadata": {"type": "object"},
            **properties,
        },
        "required": ["spec"] if "spec" in resource.model_json_schema(by_alias=True).get("required", []) else [],
    }
    if resource.root_rules:
        root["x-kubernetes-validations"] = list(resource.root_rules)
    return root


def crd_for(resource: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource model."""
    schema = _schema_for(resource)
    if resource.model_fields["spec"].is_required():
        schema["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if resource.namespaced else "Cluster",
            "names": {
                "kind": resource.kind_name,
                "listKind": f"{resource.kind_name}List",
                "plural": resource.plural,
                "singular": resource.kind_name.lower(),
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*PRINTER_COLUMNS[resource.kind_name], AGE_COLUMN],
                }
            ],
        },
    }


def crd_files() -> dict[str, str]:
    """File name -> YAML text of every CRD, as written to crds/."""
    header = "# Generated by `vram-operator crds` from operator/vram_operator/api; do not edit.\n"
    return {
        f"{GROUP}_{resource.plural}.yaml": header + yaml.safe_dump(crd_for(resource), sort_keys=False, width=120)
        for resource in (InferenceServer, GpuAssignment, GpuNode)
    }


def _reference_rows(node: dict[str, Any], path: str) -> Iterator[str]:
    for name, prop in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        kind = prop.get("type", "int-or-string" if prop.get("x-kubernetes-int-or-string") else "object")
        if kind == "array":
            kind = f"[]{prop.get('items', {}).get('type', 'object')}"
        detail = prop.get("description", "").replace("|", "\\|")
        if "enum" in prop:
            detail += f" One of: {', '.join(f'`{v}`' for v in prop['enum'])}."
        yield f"| `{here}` | {kind} | {detail} |"
        target = prop.get("items", prop) if kind.startswith("[]") else prop
        yield from _reference_rows(target, here)


def crd_reference_markdown() -> str:
    """Markdown tables of every field of every CRD (the README's reference section)."""
    parts: list[str] = []
    for resource in (InferenceServer, GpuAssignment, GpuNode):
        schema = _schema_for(resource)
        scope = "namespaced" if resource.namespaced else "cluster-scoped"
        short = ", ".join(f"`{s}`" for s in resource.short_names)
        parts.append(f"### {resource.kind_name} ({scope}, short name {short})\n\n{schema['description']}\n")
        for section in ("spec", "status"):
            parts.append(f"| {section} field | type | description |\n|---|---|---|")
            parts.append("\n".join(_reference_rows(schema["properties"][section], "")) + "\n")
    return "\n".join(parts)
