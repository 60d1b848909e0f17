"""Every dashboard query returns data from a real Prometheus scraping a real agent and the real
operator metrics registry, through the shipped ServiceMonitors.

The agent runs as `vram-operator agent --backend simulated --no-report`; the operator's metrics
come from controller.metrics.Metrics served by a small in-test HTTP server and fed the way the
handlers feed it (the operator entry point needs the control plane and servers to reconcile).
Prometheus discovers both through Services and Endpoints on the local control plane with the job
prometheus-operator generates from manifests/monitoring/servicemonitor.yaml (servicemonitor_scrape),
so the labels are those a kube-prometheus-stack cluster shows (namespace, pod, service, job, honorLabels).
"""

from __future__ import annotations

import contextlib
import copy
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import start_http_server
from servicemonitor_scrape import scrape_configs

from localcluster import binary_path
from localcluster.waiting import eventually
from vram_operator.controller.metrics import Metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "charts" / "vram-operator" / "dashboards").glob("*.json"))
SERVICE_MONITORS = REPO / "manifests" / "monitoring" / "servicemonitor.yaml"
ALERTS = REPO / "charts" / "vram-operator" / "files" / "alerts.yaml"
MIB = 1024 * 1024
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
# (namespace, server, reserved MiB per GPU, measured MiB on each of its GPUs)
SERVERS = (
    ("ai", "chat", 8000.0, [6134.0]),
    ("vision", "yolo", 650.0, [640.0]),
    ("ai", "big", 20000.0, [19000.0, 19500.0]),  # tensor parallel 2: 38500 summed, 19500 on its fullest GPU
    ("ai", "leaky", 1000.0, [1200.0]),  # above its reservation
)
# Grafana's values for the variables when "All" is selected, and for its interval macros.
SUBSTITUTIONS = {"$__rate_interval": "1m", "$node": ".*", "$namespace": ".*", "$server": ".*"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def host_address() -> str:
    """This machine's address on its default route: Endpoints may not point at loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("198.51.100.1", 9))  # TEST-NET-2: picks the route, sends nothing
        address: str = sock.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("no non-loopback IPv4 address for the Endpoints Prometheus discovers", pytrace=False)
    return address


def feed(metrics: Metrics) -> None:
    """What the handlers record for placed servers (one tensor parallel), one unplaced, one correction."""
    for outcome, times in (("placed", 2), ("unplaced", 1), ("failed", 1)):
        metrics.placements.labels("VRAMBased", outcome).inc(times)
        metrics.reconciles.labels("InferenceServer", outcome).inc(times)
    for seconds in (0.02, 0.04, 0.3):
        metrics.reconcile_seconds.labels("InferenceServer").observe(seconds)
    for namespace, server, budget, measured in SERVERS:
        metrics.record_server_reserved(namespace, server, budget)
        metrics.record_server_measured(namespace, server, measured)
        metrics.estimate_ratio.labels(namespace, server).set(sum(measured) / len(measured) / budget)
    for index, gpu, budget, measured in ((0, GPU_0, 8000.0, 6134.0), (1, GPU_1, 650.0, 640.0)):
        metrics.record_gpu(NODE, index, gpu, reserved_mib=budget, measured_mib=measured)
    metrics.corrections.labels("KVCacheTooSmall", "raiseUtilization").inc()
    metrics.replacements.labels("GpuLost").inc()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@dataclass(frozen=True)
class Scrape:
    """A Prometheus scraping the agent and the operator through ServiceMonitor-shaped jobs."""

    url: str
    namespace: str  # where the operator, the agent and their ServiceMonitors live
    monitors: list[dict[str, Any]]
    kubeconfig: Path


def shipped_monitors(namespace: str) -> list[dict[str, Any]]:
    """The ServiceMonitors of manifests/monitoring, installed in `namespace` (helm --namespace does that)."""
    monitors = [doc for doc in yaml.safe_load_all(SERVICE_MONITORS.read_text()) if doc]
    for monitor in monitors:
        monitor["metadata"]["namespace"] = namespace
        monitor["spec"]["namespaceSelector"] = {"matchNames": [namespace]}
    return monitors


def expose(core_v1: client.CoreV1Api, monitor: dict[str, Any], address: str, port: int) -> None:
    """The Service a ServiceMonitor selects, with Endpoints at a process of this machine (a pod's place)."""
    namespace, labels = monitor["metadata"]["namespace"], monitor["spec"]["selector"]["matchLabels"]
    name = monitor["metadata"]["name"]
    port_name = monitor["spec"]["endpoints"][0]["port"]
    service: Any = {
        "metadata": {"name": name, "labels": labels},
        "spec": {"clusterIP": "None", "ports": [{"name": port_name, "port": port}]},
    }
    core_v1.create_namespaced_service(namespace, service)
    endpoints: Any = {
        "metadata": {"name": name, "labels": labels},
        "subsets": [
            {
                "addresses": [
                    {"ip": address, "targetRef": {"kind": "Pod", "name": f"{name}-0", "namespace": namespace}}
                ],
                "ports": [{"name": port_name, "port": port}],
            }
        ],
    }
    core_v1.create_namespaced_endpoints(namespace, endpoints)


@contextlib.contextmanager
def running_prometheus(work: Path, jobs: list[dict[str, Any]], rule_files: list[Path]) -> Iterator[str]:
    """Prometheus with these scrape jobs, scraping every second; yields its URL once every target is up."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": jobs,
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(
        [
            str(binary_path("prometheus")),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=(work / "prometheus.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def all_up() -> bool:
            try:
                targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(targets) == len(jobs) and all(t["health"] == "up" for t in targets)

        eventually(all_up, "Prometheus to discover and scrape the agent and the operator", 60.0)
        yield url
    finally:
        prom.terminate()
        prom.wait(timeout=20)


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory, core_v1: client.CoreV1Api, kubeconfig: Path) -> Iterator[Scrape]:
    work = tmp_path_factory.mktemp("prometheus")
    address = host_address()
    profile = work / "profile.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    agent_port, operator_port = free_port(), free_port()
    agent_cli = shutil.which("vram-operator") or f"{Path(sys.executable).parent}/vram-operator"
    agent_argv = [agent_cli, "agent", "--backend", "simulated", "--profile", str(profile), "--node-name", NODE]
    agent_argv += ["--no-report", "--metrics-port", str(agent_port), "--metrics-address", address]
    agent = subprocess.Popen(
        [*agent_argv, "--interval", "1"],
        stdout=(work / "agent.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    metrics = Metrics()
    feed(metrics)
    server, _thread = start_http_server(operator_port, addr=address, registry=metrics.registry)
    namespace = f"vram-mon-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace({"metadata": {"name": namespace}})  # type: ignore[arg-type]
    monitors = shipped_monitors(namespace)
    ports = {"operator": operator_port, "agent": agent_port}
    for monitor in monitors:
        expose(
            core_v1, monitor, address, ports[monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]]
        )
    jobs = [job for monitor in monitors for job in scrape_configs(monitor, kubeconfig)]
    try:
        with running_prometheus(work / "honoring", jobs, [ALERTS]) as url:
            time.sleep(2)
            feed(metrics)  # counters and the histogram move between scrapes, so rate() and quantiles are real
            time.sleep(4)
            yield Scrape(url, namespace, monitors, kubeconfig)
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        server.shutdown()
        core_v1.delete_namespace(namespace)


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
def test_panel_query_returns_data(scrape: Scrape, dashboard: str, panel: str, expr: str) -> None:
    result = query(scrape.url, substitute(expr))
    assert result, f"{dashboard} / {panel}: no data for {expr}"
    values = [float(series["value"][1]) for series in result]
    assert all(math.isfinite(value) for value in values), f"{dashboard} / {panel}: {values}"
    print(f"{dashboard} / {panel}: {len(result)} series, values {[round(v, 3) for v in values[:4]]}")


def test_variable_queries_list_values(scrape: Scrape) -> None:
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            selector, label = substitute(match.group(1)), match.group(2)
            params = urllib.parse.urlencode({"match[]": selector})
            values = get_json(f"{scrape.url}/api/v1/label/{label}/values?{params}")["data"]
            assert values, f"{path.stem}: variable {variable['name']} has no values"


def panel_expr(dashboard: Path, title: str, ref: str = "A") -> str:
    (panel,) = [p for p in json.loads(dashboard.read_text())["panels"] if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return substitute(target["expr"])


def by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1]) for series in result}


def test_headroom_is_total_minus_reserved_minus_foreign(scrape: Scrape) -> None:
    """The fleet headroom panel's arithmetic, on the numbers fed in (A5500: 24564 - 8000 - 350), per GPU
    with dcgm-exporter's labels (gpu = index, UUID)."""
    fleet = REPO / "charts" / "vram-operator" / "dashboards" / "fleet-vram.json"
    headroom = by(query(scrape.url, panel_expr(fleet, "Headroom after reservations")), "Hostname", "gpu", "UUID")
    assert headroom == {
        (NODE, "0", GPU_0): (24564 - 8000 - 350) * MIB,
        (NODE, "1", GPU_1): (4094 - 650 - 0) * MIB,
    }


def test_namespace_is_the_servers_not_the_operators(scrape: Scrape) -> None:
    """honorLabels on the operator's ServiceMonitor: per-server series keep the server's namespace, so the
    dashboards' namespace variable lists the servers' namespaces; nothing is renamed exported_namespace."""
    values = get_json(
        f"{scrape.url}/api/v1/label/namespace/values?"
        + urllib.parse.urlencode({"match[]": "vram_operator_server_reserved_bytes"})
    )["data"]
    assert sorted(values) == ["ai", "vision"]
    assert not query(scrape.url, '{__name__=~"vram_.+", exported_namespace!=""}')
    # the agent's per-pod series keep the pods' namespaces too
    pods = by(query(scrape.url, "vram_agent_pod_memory_used_bytes"), "namespace", "pod", "gpu", "UUID")
    assert pods == {("ai", "chat-7d9f-x2x", "0", GPU_0): 6134 * MIB, ("vision", "yolo-5c-abc", "1", GPU_1): 640 * MIB}
    # series without a namespace of their own get the target's: the operator's namespace
    (gpu_series,) = query(scrape.url, f'vram_operator_gpu_reserved_bytes{{UUID="{GPU_0}"}}')
    assert gpu_series["metric"]["namespace"] == scrape.namespace
    assert gpu_series["metric"]["job"] == "vram-operator-operator"


def test_without_honor_labels_the_operators_namespace_replaces_the_servers(scrape: Scrape, tmp_path: Path) -> None:
    """The same ServiceMonitors with honorLabels removed: what the namespace test guards against."""
    monitors = copy.deepcopy(scrape.monitors)
    for monitor in monitors:
        for endpoint in monitor["spec"]["endpoints"]:
            endpoint.pop("honorLabels", None)
    jobs = [job for monitor in monitors for job in scrape_configs(monitor, scrape.kubeconfig)]
    with running_prometheus(tmp_path, jobs, []) as url:
        reserved = by(query(url, "vram_operator_server_reserved_bytes"), "namespace", "exported_namespace", "server")
    assert set(reserved) == {
        (scrape.namespace, "ai", "chat"),
        (scrape.namespace, "vision", "yolo"),
        (scrape.namespace, "ai", "big"),
        (scrape.namespace, "ai", "leaky"),
    }


def test_server_panels_compare_per_gpu_for_tensor_parallel(scrape: Scrape) -> None:
    """A TP=2 server reserving 20000 MiB on each GPU and using 19000 + 19500 MiB has 500 MiB headroom
    on its fullest GPU; comparing the 38500 MiB sum with one GPU's reservation would show -18500."""
    servers = REPO / "charts" / "vram-operator" / "dashboards" / "inference-servers.json"
    headroom = by(query(scrape.url, panel_expr(servers, "Headroom per server, per GPU")), "namespace", "server")
    assert headroom == {
        ("ai", "chat"): (8000 - 6134) * MIB,
        ("vision", "yolo"): (650 - 640) * MIB,
        ("ai", "big"): (20000 - 19500) * MIB,
        ("ai", "leaky"): (1000 - 1200) * MIB,
    }


def test_above_reservation_alert_names_the_servers_namespace(scrape: Scrape) -> None:
    """The alert's expression on the scraped series: only the server above its reservation per GPU (not the
    tensor-parallel one), in its own namespace."""
    (rule,) = [
        rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if rule["alert"] == "VramServerAboveReservation"
    ]
    above = by(query(scrape.url, rule["expr"]), "namespace", "server")
    assert above == {("ai", "leaky"): 1200 * MIB}


def test_alert_rules_evaluate_on_the_scraped_series(scrape: Scrape) -> None:
    """Every rule evaluates without error on series labelled as a ServiceMonitor labels them (the UUID
    joins between the agent's and the operator's series match one to one), and the foreign-memory rule
    sees both GPUs with room left: reservations + memory not the servers' stay below the GPU's size."""

    def evaluated() -> list[dict[str, Any]] | None:
        groups = get_json(f"{scrape.url}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) else None

    eventually(lambda: evaluated() is not None, "Prometheus to evaluate the alert rules", 30.0)
    rules = evaluated() or []
    assert {rule["name"]: rule["health"] for rule in rules} == {rule["name"]: "ok" for rule in rules}
    assert len(rules) == 6
    (foreign,) = [rule for rule in rules if rule["name"] == "VramForeignMemoryInReservations"]
    overflow = by(query(scrape.url, foreign["query"].rsplit(">", 1)[0]), "Hostname", "gpu", "UUID")
    assert set(overflow) == {(NODE, "0", GPU_0), (NODE, "1", GPU_1)}
    assert all(value < 0 for value in overflow.values()), overflow
    firing = {alert["labels"]["alertname"] for alert in get_json(f"{scrape.url}/api/v1/alerts")["data"]["alerts"]}
    assert "VramForeignMemoryInReservations" not in firing
