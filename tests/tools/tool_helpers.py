"""Running the binaries hack/build-tools.sh builds (helm, promtool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ship_helpers import REPO

sys.path.insert(0, str(REPO / "hack"))

from localcluster.tools import MissingBinaryError, binary_path


def tool(name: str) -> Path:
    """A binary built by hack/build-tools.sh; a missing one fails the test, it never skips."""
    try:
        return binary_path(name)
    except MissingBinaryError as error:
        pytest.fail(str(error), pytrace=False)


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)
