"""Every dashboard query returns data from a real Prometheus scraping a real agent and the real
operator metrics registry.

The agent runs as `vram-operator agent --backend simulated --no-report`; the operator's metrics
come from controller.metrics.Metrics served by a small in-test HTTP server and fed the way the
handlers feed it (the operator entry point needs the control plane and servers to reconcile).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server

from localcluster import binary_path
from localcluster.waiting import eventually
from vram_operator.controller.metrics import Metrics

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "charts" / "vram-operator" / "dashboards").glob("*.json"))
NODE = "workstation"
GPU_0 = "GPU-0b5e6d3c-1a2b-4c5d-8e9f-a5500a5500a5"
GPU_1 = "GPU-0b5e6d3c-1a2b-4c5d-8e9f-a400a400a400"
PROFILE = {
    "driverVersion": "580.95.05",
    "gpus": [
        {
            "name": "NVIDIA RTX A5500",
            "uuid": GPU_0,
            "memoryTotalMiB": 24564,
            "processes": [
                {"pid": 4242, "usedMiB": 6134, "pod": "ai/chat-7d9f-x2x", "podUID": "u-chat", "container": "vllm"},
                {"pid": 1800, "usedMiB": 350, "name": "Xorg"},
            ],
        },
        {
            "name": "NVIDIA RTX A400",
            "uuid": GPU_1,
            "memoryTotalMiB": 4094,
            "processes": [{"pid": 5000, "usedMiB": 640, "pod": "vision/yolo-5c-abc", "podUID": "u-yolo"}],
        },
    ],
}
# Grafana's values for the variables when "All" is selected, and for its interval macros.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$node": ".*", "$namespace": ".*", "$server": ".*"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def feed(metrics: Metrics) -> None:
    """What the handlers record for two placed servers, one unplaced, one correction."""
    for outcome, times in (("placed", 2), ("unplaced", 1), ("failed", 1)):
        metrics.placements.labels("VRAMBased", outcome).inc(times)
        metrics.reconciles.labels("InferenceServer", outcome).inc(times)
    for seconds in (0.02, 0.04, 0.3):
        metrics.reconcile_seconds.labels("InferenceServer").observe(seconds)
    for namespace, server, gpu, budget, measured in (
        ("ai", "chat", GPU_0, 8000.0, 6134.0),
        ("vision", "yolo", GPU_1, 650.0, 640.0),
    ):
        metrics.server_reserved.labels(namespace, server).set(budget)
        metrics.server_measured.labels(namespace, server).set(measured)
        metrics.estimate_ratio.labels(namespace, server).set(measured / budget)
        metrics.gpu_reserved.labels(NODE, gpu).set(budget)
        metrics.gpu_measured.labels(NODE, gpu).set(measured)
    metrics.corrections.labels("KVCacheTooSmall", "raiseUtilization").inc()
    metrics.replacements.labels("GpuLost").inc()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    profile = work / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    agent_port, operator_port, prom_port = free_port(), free_port(), free_port()
    agent_cli = shutil.which("vram-operator") or f"{Path(sys.executable).parent}/vram-operator"
    agent_argv = [agent_cli, "agent", "--backend", "simulated", "--profile", str(profile), "--node-name", NODE]
    agent_argv += ["--no-report", "--metrics-port", str(agent_port), "--metrics-address", "127.0.0.1"]
    agent = subprocess.Popen(
        [*agent_argv, "--interval", "1"],
        stdout=(work / "agent.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    metrics = Metrics()
    feed(metrics)
    server, _thread = start_http_server(operator_port, addr="127.0.0.1", registry=metrics.registry)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "vram-agent", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]},
            {"job_name": "vram-operator", "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(
        [
            str(binary_path("prometheus")),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=(work / "prometheus.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:

        def both_up() -> bool:
            try:
                targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        eventually(both_up, "Prometheus to scrape the agent and the operator", 60.0)
        time.sleep(2)
        feed(metrics)  # counters and the histogram move between scrapes, so rate() and quantiles are real
        time.sleep(4)
        yield url
    finally:
        for process in (prom, agent):
            process.terminate()
            process.wait(timeout=20)
        server.shutdown()


def queries() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found.append((path.stem, f"{panel['title']} [{target['refId']}]", target["expr"]))
    return found


def substitute(expr: str) -> str:
    for variable, value in sorted(SUBSTITUTIONS.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.mark.parametrize(("dashboard", "panel", "expr"), queries(), ids=lambda value: str(value)[:60])
def test_panel_query_returns_data(prometheus: str, dashboard: str, panel: str, expr: str) -> None:
    query = urllib.parse.urlencode({"query": substitute(expr)})
    answer = get_json(f"{prometheus}/api/v1/query?{query}")
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    assert result, f"{dashboard} / {panel}: no data for {expr}"
    values = [float(series["value"][1]) for series in result]
    assert all(math.isfinite(value) for value in values), f"{dashboard} / {panel}: {values}"
    print(f"{dashboard} / {panel}: {len(result)} series, values {[round(v, 3) for v in values[:4]]}")


def test_variable_queries_list_values(prometheus: str) -> None:
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            selector, label = substitute(match.group(1)), match.group(2)
            params = urllib.parse.urlencode({"match[]": selector})
            values = get_json(f"{prometheus}/api/v1/label/{label}/values?{params}")["data"]
            assert values, f"{path.stem}: variable {variable['name']} has no values"


def test_headroom_is_total_minus_reserved_minus_foreign(prometheus: str) -> None:
    """The fleet headroom panel's arithmetic, on the numbers fed in (A5500: 24564 - 8000 - 350)."""
    (panel,) = [
        p for p in json.loads(DASHBOARDS[0].read_text())["panels"] if p["title"] == "Headroom after reservations"
    ]
    query = urllib.parse.urlencode({"query": substitute(panel["targets"][0]["expr"])})
    result = get_json(f"{prometheus}/api/v1/query?{query}")["data"]["result"]
    headroom = {series["metric"]["gpu"]: float(series["value"][1]) for series in result}
    assert headroom == {GPU_0: 24564 - 8000 - 350, GPU_1: 4094 - 650 - 0}
