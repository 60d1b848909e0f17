"""Dockerfile lint (no Docker engine here): pinned base, multi-stage, non-root, exec entrypoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ship_helpers import REPO
from vram_operator.cli import build_parser

IMAGES = {"operator": "run", "agent": "agent"}  # image -> the vram-operator subcommand it runs


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_base_image_is_pinned_python_311_slim(image: str) -> None:
    steps = instructions(REPO / "images" / f"{image}.Dockerfile")
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    bases = [rest.split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert len(bases) >= 2, "multi-stage: a build stage and a run stage"
    for base in bases:
        resolved = args.get(base.strip("${}"), base) if base.startswith("$") else base
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", resolved), resolved


def test_runs_as_numeric_non_root_user(image: str) -> None:
    final = final_stage(instructions(REPO / "images" / f"{image}.Dockerfile"))
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the run stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_no_remote_add_and_no_build_tools_in_the_run_stage(image: str) -> None:
    steps = instructions(REPO / "images" / f"{image}.Dockerfile")
    assert not any(keyword == "ADD" for keyword, _ in steps), "COPY, never ADD (no URLs, no tar magic)"
    final = final_stage(steps)
    assert not any(keyword == "RUN" for keyword, _ in final), "the run stage only copies the virtualenv"
    assert any(keyword == "COPY" and rest.startswith("--from=build") for keyword, rest in final)


def test_read_only_root_filesystem_ready(image: str) -> None:
    final = final_stage(instructions(REPO / "images" / f"{image}.Dockerfile"))
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    for key in (
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.source",
    ):
        assert key in labels


def test_entrypoint_is_the_console_script_in_exec_form(image: str) -> None:
    final = final_stage(instructions(REPO / "images" / f"{image}.Dockerfile"))
    (entrypoint,) = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    argv = json.loads(entrypoint)  # exec form: a JSON array, no shell
    assert argv == ["/opt/venv/bin/vram-operator", IMAGES[image]]
    try:
        parsed, _ = build_parser().parse_known_args([IMAGES[image]])
    except SystemExit:
        pytest.fail(f"`vram-operator {IMAGES[image]}` is not a subcommand of the CLI", pytrace=False)
    assert parsed.command == IMAGES[image]


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for path in (REPO / "images").glob("*.Dockerfile"):
        for keyword, rest in instructions(path):
            if keyword == "COPY" and not rest.startswith("--from"):
                copied |= {Path(source).as_posix().rstrip("/") for source in rest.split()[:-1]}
    assert copied <= included
