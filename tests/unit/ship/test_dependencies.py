"""Runtime dependencies are what the operator imports; test-only libraries stay in the dev extra."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "operator" / "vram_operator"
TEST_ONLY = ("safetensors", "numpy")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for req in requirements}


def _imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("name", TEST_ONLY)
def test_test_only_libraries_are_dev_dependencies(name: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert name not in _requirement_names(project["dependencies"])
    assert name in _requirement_names(project["optional-dependencies"]["dev"])
    assert name not in _imported_top_level_modules(), f"operator/ imports {name}: it must be a runtime dependency"
