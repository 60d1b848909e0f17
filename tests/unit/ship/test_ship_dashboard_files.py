"""Grafana dashboards: schema basics, layout, variables, and queries over metrics that exist."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from test_ship_alerts import known_metric_names

from ship_helpers import CHART

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


@pytest.fixture(params=DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(request.param.read_text())
    return loaded


def test_there_are_fleet_and_server_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} == {"fleet-vram", "inference-servers"}


def test_schema_and_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"].startswith("vram-operator / ")
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns it on import


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, panel["title"]
        cells |= covered


def test_every_query_uses_the_datasource_variable_and_known_metrics(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    known = known_metric_names()
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            used = set(re.findall(r"\bvram_[a-z_]+", target["expr"]))
            assert used and used <= known, f"{panel['title']}: {used - known}"
            referenced = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert referenced <= variables, f"{panel['title']}: undefined {referenced - variables}"


def test_multi_value_variables_match_with_regex(dashboard: dict[str, Any]) -> None:
    for variable in dashboard["templating"]["list"]:
        if variable.get("multi"):
            for panel in panels(dashboard):
                for target in panel["targets"]:
                    assert f'="${variable["name"]}"' not in target["expr"], "use =~ for a multi-value variable"
