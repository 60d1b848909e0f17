"""Strict validation of rendered objects against the Kubernetes OpenAPI schemas in tests/fixtures.

The upstream schemas allow unknown fields (the API server prunes them); a test wants the
opposite, so every object schema that lists its properties is closed here: a misspelled or
misplaced field fails validation. The documents carry no enums (the allowed values are only
prose in the API reference), so the ones of the fields we render are added from that prose.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "k8s-schemas"
SCHEMA_FILES = {
    ("apps/v1", "Deployment"): "apps-v1-deployment.json",
    ("v1", "Service"): "core-v1-service.json",
    ("resource.k8s.io/v1", "ResourceClaim"): "resource-v1-resourceclaim.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networking-v1-networkpolicy.json",
}


ENUMS: dict[str, dict[str, list[str]]] = {
    "io.k8s.api.apps.v1.DeploymentStrategy": {"type": ["Recreate", "RollingUpdate"]},
    "io.k8s.api.core.v1.Container": {"imagePullPolicy": ["Always", "IfNotPresent", "Never"]},
    "io.k8s.api.core.v1.ContainerPort": {"protocol": ["TCP", "UDP", "SCTP"]},
    "io.k8s.api.core.v1.ServicePort": {"protocol": ["TCP", "UDP", "SCTP"]},
    "io.k8s.api.core.v1.ServiceSpec": {"type": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    "io.k8s.api.core.v1.NodeSelectorRequirement": {"operator": ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
    "io.k8s.api.core.v1.Toleration": {
        "operator": ["Exists", "Equal"],
        "effect": ["NoSchedule", "PreferNoSchedule", "NoExecute"],
    },
    "io.k8s.api.resource.v1.ExactDeviceRequest": {"allocationMode": ["ExactCount", "All"]},
    "io.k8s.api.networking.v1.NetworkPolicyPort": {"protocol": ["TCP", "UDP", "SCTP"]},
}


def _with_enums(schemas: dict[str, Any]) -> None:
    for name, fields in ENUMS.items():
        if name in schemas:
            for field, values in fields.items():
                schemas[name]["properties"][field]["enum"] = values


def _closed(node: Any) -> Any:
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _closed(value) for key, value in node.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


@cache
def _validator(api_version: str, kind: str) -> Draft202012Validator:
    document = json.loads((SCHEMA_DIR / SCHEMA_FILES[(api_version, kind)]).read_text())
    _with_enums(document["components"]["schemas"])
    uri = f"urn:k8s:{kind}"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(_closed(document), default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{uri}#/components/schemas/{document['root']}"}, registry=registry)


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of the object, as "path: message"; empty when it is valid."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMA_FILES:
        return [f"no schema for apiVersion/kind {key}"]
    errors: list[ValidationError] = list(_validator(str(key[0]), str(key[1])).iter_errors(obj))
    return [f"{'.'.join(str(part) for part in error.absolute_path)}: {error.message}" for error in errors]


def assert_valid(obj: dict[str, Any]) -> None:
    errors = validation_errors(obj)
    assert not errors, "\n".join(errors)
