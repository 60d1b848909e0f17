"""Reading InferenceServer / GpuNode / GpuAssignment objects from YAML files and directories."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vram_operator.api import GpuAssignment, GpuNode, InferenceServer
from vram_operator.api.base import API_VERSION, Resource
from vram_operator.errors import InputError

KINDS: dict[str, type[Resource]] = {model.kind_name: model for model in (InferenceServer, GpuNode, GpuAssignment)}
# Plain Kubernetes objects that may sit beside ours in an examples folder (a ConfigMap holding a
# config.json, a Namespace); they are read, not rejected.
PASSIVE_KINDS = {"ConfigMap", "Namespace"}
YAML_SUFFIXES = {".yaml", ".yml", ".json"}


@dataclass
class Manifests:
    """Everything read from the inputs, by kind."""

    servers: list[InferenceServer] = field(default_factory=list)
    nodes: list[GpuNode] = field(default_factory=list)
    assignments: list[GpuAssignment] = field(default_factory=list)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # Where each object was read ("file" or "file#document"), by kind and key, for error messages.
    sources: dict[tuple[str, str], str] = field(default_factory=dict)

    def source_of(self, kind: str, key: str) -> str | None:
        return self.sources.get((kind, key))


def _files(paths: Iterable[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise InputError("no such file or directory", source=raw)


def describe_validation_error(error: ValidationError) -> str:
    """The first problem of a pydantic error as 'field.path: message'."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def parse_object(document: dict[str, Any], source: str) -> Resource:
    """Validate one of our objects against its model."""
    kind = document.get("kind")
    model = KINDS.get(str(kind))
    if model is None:
        raise InputError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})", source=source, field="kind")
    if document.get("apiVersion", API_VERSION) != API_VERSION:
        raise InputError(f"apiVersion must be {API_VERSION}", source=source, field="apiVersion")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise InputError(describe_validation_error(error), source=source) from None


def load(paths: Iterable[str]) -> Manifests:
    """Read every YAML document under the given files/directories."""
    result = Manifests()
    for path in _files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise InputError(f"{where}malformed YAML: {problem}", source=str(path)) from None
        except UnicodeDecodeError:
            raise InputError("not a UTF-8 text file", source=str(path)) from None
        for number, document in enumerate(documents):
            if document is None:
                continue
            source = str(path) if len(documents) == 1 else f"{path}#{number + 1}"
            if not isinstance(document, dict):
                raise InputError("expected a Kubernetes object (a mapping)", source=source)
            _add(result, document, source)
    return result


def _add(result: Manifests, document: dict[str, Any], source: str) -> None:
    kind = document.get("kind")
    if kind in PASSIVE_KINDS:
        if kind == "ConfigMap":
            meta = document.get("metadata") or {}
            where = (str(meta.get("namespace", "default")), str(meta.get("name", "")))
            result.config_maps[where] = {str(k): str(v) for k, v in (document.get("data") or {}).items()}
        return
    obj = parse_object(document, source)
    key = obj.key if isinstance(obj, InferenceServer) else obj.metadata.name
    if (obj.kind, key) in result.sources:
        raise InputError(
            f"{obj.kind} {key} is defined twice (also in {result.sources[(obj.kind, key)]})", source=source
        )
    result.sources[(obj.kind, key)] = source
    if isinstance(obj, InferenceServer):
        result.servers.append(obj)
    elif isinstance(obj, GpuNode):
        result.nodes.append(obj)
    elif isinstance(obj, GpuAssignment):
        result.assignments.append(obj)
