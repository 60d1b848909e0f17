"""Alert rules: every alert has promtool unit tests and uses metrics that exist (promtool runs in tests/tools)."""

from __future__ import annotations

import re

import yaml

from ship_helpers import CHART, REPO
from vram_operator.agent.exporter import AgentMetrics
from vram_operator.api.gpu_node import GpuDeviceStatus, GpuNodeStatus
from vram_operator.controller.metrics import Metrics

ALERTS = CHART / "files" / "alerts.yaml"
TESTS = sorted((REPO / "tests" / "promtool").glob("*.test.yaml"))


def known_metric_names() -> set[str]:
    """Every sample name the operator and the agent can expose (counters with _total, histograms
    with _bucket/_sum/_count), from their real registries."""
    agent = AgentMetrics("n")
    # the poll gauges appear after the first poll
    gpu = GpuDeviceStatus(index=0, uuid="GPU-0", memory_total_mib=1, memory_used_mib=0, memory_free_mib=1)
    agent.observe_poll(GpuNodeStatus(gpus=[gpu]), read_ok=True, duration_s=0.1, now=1.0)
    names: set[str] = set()
    for registry in (Metrics().registry, agent.registry):
        for family in registry.collect():
            names.add(family.name)
            names.update({f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")})
    return names


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == firing == silent


def test_alerts_use_only_metrics_that_exist() -> None:
    known = known_metric_names()
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\bvram_[a-z_]+", rule["expr"]))
            assert used, rule["alert"]
            assert used <= known, f"{rule['alert']}: unknown {used - known}"


RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/vram-operator/vram-operator/blob/main/docs/runbooks.md#"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_links_its_runbook_section() -> None:
    """kubernetes-mixin convention: annotations.runbook_url, here to a section of docs/runbooks.md."""
    sections = anchors(RUNBOOKS.read_text())
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url == RUNBOOK_BASE + rule["alert"].lower(), rule["alert"]
            assert url.removeprefix(RUNBOOK_BASE) in sections, f"{rule['alert']}: no section in docs/runbooks.md"


def test_no_alert_fires_on_a_gpu_merely_being_full() -> None:
    """The planner packs GPUs full on purpose: no alert on used / total."""
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert not re.search(r"memory_used_bytes\s*/", rule["expr"]), rule["alert"]
    names = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert "VramGpuMemoryNearlyFull" not in names
    assert {"VramServerAboveReservation", "VramForeignMemoryInReservations", "VramPlacementFailed"} <= names
