"""checkov and kube-score over manifests/ and over `vram-operator render` output of examples/.

Every finding left must be justified in charts/vram-operator/README.md ("Scanner findings left");
a new finding fails the test, and so does a justification whose finding no longer occurs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tool_helpers import run, tool

from ship_helpers import CHART, REPO

MANIFESTS = REPO / "manifests"
SKIP_LIST = CHART / "README.md"
# The examples the render target covers, with the flags they need (reference-fleet mounts host models).
EXAMPLES = {"h100-rack": (), "reference-fleet": ("--allow-host-access",)}
KUBERNETES_VERSION = "v1.34"  # kube-score's API knowledge; the oldest version the project supports
ROW = re.compile(r"^\| (checkov|kube-score) \| (\S+) \| ([a-z, ]+) \| (.+) \|$")


def justified() -> dict[tuple[str, str], set[str]]:
    """(scanner, target) -> the checks the chart README justifies there, each with a reason."""
    table: dict[tuple[str, str], set[str]] = {}
    for line in SKIP_LIST.read_text().splitlines():
        row = ROW.match(line)
        if row is None:
            continue
        scanner, check, where, reason = row.groups()
        assert reason.strip(" -"), f"{check}: give a reason"
        for target in where.split(", "):
            table.setdefault((scanner, target), set()).add(check)
    return table


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("render")
    for example, flags in EXAMPLES.items():
        done = subprocess.run(
            [sys.executable, "-m", "vram_operator.cli", "render", "-f", str(REPO / "examples" / example), *flags],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        (directory / f"{example}.yaml").write_text(done.stdout)
    return directory


def targets(rendered: Path) -> dict[str, list[Path]]:
    shipped = sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")
    return {"manifests": shipped, "render": sorted(rendered.glob("*.yaml"))}


def checkov_findings(files: list[Path]) -> dict[str, int]:
    args = ["--framework", "kubernetes", "-o", "json", "--quiet", "--compact", "--skip-download"]
    for file in files:
        args += ["-f", str(file)]
    done = run(tool("checkov"), *args)
    assert done.returncode in (0, 1), done.stderr
    reports = json.loads(done.stdout)
    found: dict[str, int] = {}
    for report in reports if isinstance(reports, list) else [reports]:
        assert report.get("summary", {}).get("parsing_errors", 0) == 0, report["summary"]
        for failed in report.get("results", {}).get("failed_checks", []):
            found[failed["check_id"]] = found.get(failed["check_id"], 0) + 1
    return found


def kube_score_findings(files: list[Path]) -> dict[str, int]:
    done = run(tool("kube-score"), "score", "-o", "json", "--kubernetes-version", KUBERNETES_VERSION, *map(str, files))
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, int] = {}
    for scored in json.loads(done.stdout):
        for check in scored["checks"]:
            if not check["skipped"] and check["grade"] < 10:  # 1 critical, 5 warning, 10 ok
                found[check["check"]["id"]] = found.get(check["check"]["id"], 0) + 1
    return found


SCANNERS = {"checkov": checkov_findings, "kube-score": kube_score_findings}


@pytest.mark.parametrize("target", ["manifests", "render"])
@pytest.mark.parametrize("scanner", sorted(SCANNERS))
def test_every_finding_left_is_justified(scanner: str, target: str, rendered: Path) -> None:
    files = targets(rendered)[target]
    assert files
    found = SCANNERS[scanner](files)
    print(f"{scanner} over {target}: {sum(found.values())} findings {dict(sorted(found.items()))}")
    allowed = justified().get((scanner, target), set())
    assert not set(found) - allowed, f"unjustified {scanner} findings in {target}: see {SKIP_LIST.name}"
    assert not allowed - set(found), f"justified but no longer found (remove from {SKIP_LIST.name})"


def test_the_hardening_the_issue_asked_for_is_not_among_the_findings(rendered: Path) -> None:
    found = checkov_findings(targets(rendered)["render"])
    # seccomp, privilege escalation, capabilities, SA token, CPU/memory requests, NetworkPolicy
    for fixed in ("CKV_K8S_31", "CKV_K8S_20", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_10", "CKV_K8S_12"):
        assert fixed not in found
    assert "CKV2_K8S_6" not in found
